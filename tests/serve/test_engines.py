"""Batch prediction on a cluster: a real Dask LocalCluster and a real local Spark give the same
predictions as the local engine, row for row (joined on ``id``), for a numeric and a tabular
model; every worker process opens the model once; a bad row on a worker is one line naming the
part and the row, and leaves no output folder. ``linreg-predict`` runs as a subprocess; the
library entry points (``serve.batch.dask.predict``, ``serve.batch.spark.predict``,
``serve.batch.spark.register``) run here, on one Spark session for the whole test session."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serve import Predictor
from tests.conftest import run_script
from tests.serve.conftest import MODELS

pytestmark = pytest.mark.slow
MULTI, TAB = MODELS / "multi", MODELS / "tabular"
ENGINES = {"dask": ["--engine", "dask", "--workers", "2"],
           "spark": ["--engine", "spark", "--master", "local[2]"]}


def _needs(engine: str) -> None:
    pytest.importorskip("distributed" if engine == "dask" else "pyspark")
    if engine == "spark" and not any(Path(p, "java").exists()
                                     for p in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("Spark needs a Java runtime (make java)")


def _numeric_parts(folder: Path, parts: int = 8, rows: int = 250) -> pa.Table:
    rng = np.random.default_rng(5)
    folder.mkdir()
    tables = []
    for i in range(parts):
        X = rng.normal(size=(rows, 4)) * 3
        t = pa.table({"id": [f"p{i}-{r}" for r in range(rows)],
                      **{f"x{j}": X[:, j] for j in range(4)}})
        pq.write_table(t, folder / f"part-{i}.parquet")
        tables.append(t)
    return pa.concat_tables(tables)


def _tabular_parts(folder: Path, parts: int = 8, rows: int = 50) -> pa.Table:
    rng = np.random.default_rng(6)
    folder.mkdir()
    tables = []
    for i in range(parts):
        x1 = rng.normal(10, 3, size=rows)
        t = pa.table({"id": [f"p{i}-{r}" for r in range(rows)],
                      "city": rng.choice(["Lyon", "Paris", "Rome"], size=rows).tolist(),
                      "x1": pa.array([None if r % 7 == 0 else v for r, v in enumerate(x1)],
                                     pa.float64()),
                      "x2": rng.normal(size=rows)})
        pq.write_table(t, folder / f"part-{i}.parquet")
        tables.append(t)
    return pa.concat_tables(tables)


def _predict(model: Path, source: Path, out: Path, *args: str, env: dict | None = None):
    return run_script("linreg-predict", model, source, "-o", out, "--keep", "id", "-q", *args,
                      **({"env": env} if env else {}))


def _by_id(folder: Path, target: str) -> dict[str, float]:
    table = pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("*.parquet"))])
    ids, values = table.column("id").to_pylist(), table.column(target).to_pylist()
    assert len(set(ids)) == len(ids), "a row was predicted twice"
    return dict(zip(ids, values))


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("kind", ["numeric", "tabular"])
def test_engines_equal_local_row_for_row_and_load_once(tmp_path, engine, kind):
    _needs(engine)
    model, target = (MULTI, "y0") if kind == "numeric" else (TAB, "y")
    table = (_numeric_parts if kind == "numeric" else _tabular_parts)(tmp_path / "in")
    assert _predict(model, tmp_path / "in", tmp_path / "local").returncode == 0
    loads = tmp_path / "loads"
    loads.mkdir()
    with contextlib.ExitStack() as held:  # Dask's usual port taken: still not a word
        with contextlib.suppress(OSError):
            held.enter_context(socket.create_server(("0.0.0.0", 8787)))
        res = _predict(model, tmp_path / "in", tmp_path / "out", *ENGINES[engine],
                       env={**os.environ, "LINREG_WORKER_LOG": str(loads)})
    assert res.returncode == 0, res.stderr.decode()
    assert res.stderr == b""
    local, remote = _by_id(tmp_path / "local", target), _by_id(tmp_path / "out", target)
    assert set(remote) == set(local) == set(table.column("id").to_pylist())  # none lost
    assert all(remote[k] == local[k] for k in local)  # the same numbers, bit for bit
    for part in range(8):  # the same order within each part
        got = pq.read_table(tmp_path / "out" / f"part-{part}.parquet").column("id").to_pylist()
        assert got == pq.read_table(tmp_path / "in" / f"part-{part}.parquet").column(
            "id").to_pylist()
    per_process = [f.read_text().splitlines() for f in loads.iterdir()]
    assert per_process and all(len(lines) == 1 for lines in per_process)  # once per worker
    assert len(per_process) <= 2  # two worker processes, or Spark's two slots
    marker = json.loads((tmp_path / "out" / "_linreg_predictions.json").read_text())
    assert marker["rows"] == table.num_rows


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_bad_row_on_a_worker_is_one_line_and_no_output(tmp_path, engine):
    _needs(engine)
    _numeric_parts(tmp_path / "in")
    bad = pq.read_table(tmp_path / "in" / "part-5.parquet").to_pandas()
    bad.loc[17, "x2"] = np.nan
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False),
                   tmp_path / "in" / "part-5.parquet")
    res = _predict(MULTI, tmp_path / "in", tmp_path / "out", *ENGINES[engine])
    assert res.returncode == 1
    assert res.stderr.decode() == (f"linreg-predict: error: {tmp_path}/in/part-5.parquet: row "
                                   "18, column 'x2': missing value\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_the_spark_engine_runs_under_spark_submit(tmp_path):
    """spark-submit starts the JVM and the master; linreg-predict uses that session."""
    import subprocess

    from tests.conftest import BIN

    _needs("spark")
    table = _numeric_parts(tmp_path / "in", parts=2)
    script = tmp_path / "job.py"
    script.write_text("from serve.cli import predict_main\npredict_main()\n")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PYSPARK_PYTHON": str(BIN / "python")}
    res = subprocess.run([str(BIN / "spark-submit"), "--master", "local[2]", str(script),
                          str(MULTI), str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                          "--engine", "spark", "--keep", "id", "-q"], capture_output=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert len(_by_id(tmp_path / "out", "y0")) == table.num_rows


def test_engine_flags_go_with_a_folder(tmp_path):
    res = run_script("linreg-predict", MULTI, tmp_path / "x.csv", "-o", tmp_path / "o.csv",
                     "--engine", "dask")
    assert res.returncode == 2
    assert res.stderr.decode().splitlines()[-1] == (
        "linreg-predict: error: --engine dask runs a folder or glob of parts; INPUT is one file "
        "(use --engine local)")


# ------------------------------------------------------------------ library entry points

def test_serve_dask_predict(tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    from serve.batch import dask as linreg_dask

    table = _tabular_parts(tmp_path / "in")
    ddf = dd.read_parquet(tmp_path / "in")
    out = linreg_dask.predict(ddf, TAB, suffix="_pred").compute()
    want = Predictor.load(TAB).predict(table)
    got = dict(zip(out["id"], out["y_pred"]))
    assert [got[i] for i in table.column("id").to_pylist()] == want[:, 0].tolist()


def test_serve_spark_predict_and_sql_function(spark, tmp_path):
    from serve.batch import spark as linreg_spark

    table = _numeric_parts(tmp_path / "in", parts=2)
    df = spark.read.parquet(str(tmp_path / "in"))
    out = linreg_spark.predict(df, MULTI).toArrow()
    assert out.schema.names == ["id", "x0", "x1", "x2", "x3", "y0", "y1"]
    p = Predictor.load(MULTI)
    got = {i: (a, b) for i, a, b in zip(out.column("id").to_pylist(), out.column("y0").to_pylist(),
                                        out.column("y1").to_pylist())}
    want = p.predict(table.drop_columns(["id"]).to_pandas())
    assert [got[i] for i in table.column("id").to_pylist()] == [tuple(r) for r in want.tolist()]
    linreg_spark.register(spark, "predict_homes", TAB)
    tab = _tabular_parts(tmp_path / "tab", parts=1)
    spark.read.parquet(str(tmp_path / "tab")).createOrReplaceTempView("homes")
    rows = spark.sql("SELECT id, predict_homes(city, x1, x2) AS price FROM homes").toArrow()
    by_id = dict(zip(rows.column("id").to_pylist(), rows.column("price").to_pylist()))
    assert [by_id[i] for i in tab.column("id").to_pylist()] == \
        Predictor.load(TAB).predict(tab)[:, 0].tolist()


# ------------------------------------------------------------------ --on-unknown on a cluster

def _with_unseen(folder: Path) -> int:
    """Put a level the tabular model never saw in some rows of two parts; how many."""
    n = 0
    for part in (2, 6):
        path = folder / f"part-{part}.parquet"
        t = pq.read_table(path)
        city = t.column("city").to_pylist()
        for r in (3, 11, 40):
            city[r], n = "Nice", n + 1
        pq.write_table(t.set_column(t.schema.get_field_index("city"), "city", pa.array(city)),
                       path)
    return n


@pytest.mark.parametrize("engine", list(ENGINES))
def test_engines_take_on_unknown_nan_and_count_the_rows(tmp_path, engine):
    _needs(engine)
    _tabular_parts(tmp_path / "in")
    n = _with_unseen(tmp_path / "in")
    local = _predict(TAB, tmp_path / "in", tmp_path / "local", "--on-unknown", "nan")
    res = _predict(TAB, tmp_path / "in", tmp_path / "out", "--on-unknown", "nan",
                   *ENGINES[engine])
    assert res.returncode == local.returncode == 0, res.stderr.decode()
    warning = (f"linreg-predict: warning: {n} of 400 row(s) could not be predicted (a level not "
               "seen in training, or a blank with no fill): their predictions are NaN "
               "(--on-unknown nan)\n")
    assert res.stderr.decode() == local.stderr.decode() == warning
    want, got = _by_id(tmp_path / "local", "y"), _by_id(tmp_path / "out", "y")
    assert sum(np.isnan(v) for v in got.values()) == n
    assert all(got[k] == want[k] or (np.isnan(got[k]) and np.isnan(want[k])) for k in want)
    marker = json.loads((tmp_path / "out" / "_linreg_predictions.json").read_text())
    assert marker["unpredictable"] == n
    assert [p.get("unpredictable", 0) for p in marker["parts"]] == [0, 0, 3, 0, 0, 0, 3, 0]


def test_serve_dask_and_spark_take_on_unknown(spark, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    from serve.batch import dask as linreg_dask
    from serve.batch import spark as linreg_spark

    table = _tabular_parts(tmp_path / "in", parts=2)
    rows = pq.read_table(tmp_path / "in" / "part-1.parquet")
    city = rows.column("city").to_pylist()
    city[4] = "Nice"
    pq.write_table(rows.set_column(1, "city", pa.array(city)), tmp_path / "in" / "part-1.parquet")
    want = Predictor.load(TAB).predict(pq.read_table(tmp_path / "in"), on_unknown="nan")
    assert np.isnan(want).sum() == 1 and table.num_rows == 100
    out = linreg_dask.predict(dd.read_parquet(tmp_path / "in"), TAB, on_unknown="nan").compute()
    np.testing.assert_array_equal(out["y"].to_numpy(), want[:, 0])
    got = linreg_spark.predict(spark.read.parquet(str(tmp_path / "in")), TAB,
                               on_unknown="reference").toArrow()
    by_id = dict(zip(got.column("id").to_pylist(), got.column("y").to_pylist()))
    ref = Predictor.load(TAB).predict(pq.read_table(tmp_path / "in"), on_unknown="reference")
    ids = pq.read_table(tmp_path / "in").column("id").to_pylist()
    assert [by_id[i] for i in ids] == ref[:, 0].tolist()


@pytest.mark.parametrize("engine", list(ENGINES))
def test_engines_write_the_contributions(tmp_path, engine):
    """--contributions over a folder on a cluster: the baseline and each term's column, equal
    to the local engine's row for row, and to Predictor.explain's (float32: to its rounding)."""
    _needs(engine)
    explain = MODELS / "explain"
    table = _tabular_parts(tmp_path / "in")
    local = _predict(explain, tmp_path / "in", tmp_path / "local", "--contributions")
    res = _predict(explain, tmp_path / "in", tmp_path / "out", "--contributions",
                   *ENGINES[engine])
    assert res.returncode == local.returncode == 0, res.stderr.decode()
    e = Predictor.load(explain).explain(table)
    ids = table.column("id").to_pylist()
    for j, name in enumerate(["baseline", *(f"contrib_{t}" for t in e.terms)]):
        want, got = _by_id(tmp_path / "local", f"y_{name}"), _by_id(tmp_path / "out", f"y_{name}")
        assert got == want, name
        reference = np.full(len(ids), e.baseline[0]) if j == 0 else e.contributions[:, 0, j - 1]
        np.testing.assert_allclose([got[i] for i in ids], reference, rtol=0, atol=1e-5)


def test_serve_dask_and_spark_add_the_contributions(spark, tmp_path):
    """contributions=True on a DataFrame: linreg-predict's baseline and term columns, equal to
    Predictor.explain's (to float32's rounding: other batch sizes); refused without them."""
    dd = pytest.importorskip("dask.dataframe")
    from serve.batch import dask as linreg_dask
    from serve.batch import spark as linreg_spark

    explain = MODELS / "explain"
    table = _tabular_parts(tmp_path / "in", parts=2)
    e = Predictor.load(explain).explain(table)
    names = ["y_baseline", *(f"y_contrib_{t}" for t in e.terms)]
    want = np.column_stack([np.full(len(e), e.baseline[0]), e.contributions[:, 0, :]])
    out = linreg_dask.predict(dd.read_parquet(tmp_path / "in"), explain,
                              contributions=True).compute()
    assert list(out.columns[-len(names) - 1:]) == ["y", *names]
    np.testing.assert_allclose(out[names].to_numpy(), want, rtol=0, atol=1e-5)
    got = linreg_spark.predict(spark.read.parquet(str(tmp_path / "in")), explain,
                               contributions=True).toArrow()
    by_id = {i: [got.column(n)[k].as_py() for n in names]
             for k, i in enumerate(got.column("id").to_pylist())}
    ids = table.column("id").to_pylist()
    np.testing.assert_allclose([by_id[i] for i in ids], want, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="this model has no contributions; export it with "
                                         "linreg-export --contributions"):
        linreg_dask.predict(dd.read_parquet(tmp_path / "in"), TAB, contributions=True)
