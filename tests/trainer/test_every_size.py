"""One trainer at every size (issue #21), as one table: each training flag, trained in memory,
streamed in small chunks past ``--max-memory``, and over 2 processes, gives the same model —
exact solvers to 1e-10 in float64, full-batch SGD to summation order, statistics to 1e-8.

Flags that watch validation rows compare the streamed runs only: in memory ``--val-fraction``
draws row indices, streamed it hashes (file, row) — other rows, by design (see README); so do
``--cv``'s folds, which hash (file, row) at every size: one file and four files of the same rows
are other folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_script
from tests.trainer.commands import train

pytestmark = pytest.mark.slow

EXACT = ["--solver", "lstsq", "--dtype", "float64"]
SGD = ["--dtype", "float64", "--epochs", "25", "--lr", "0.1", "--standardize"]

# name: (flags, rtol of the parameters, compare statistics, in memory too)
MATRIX = {
    "lstsq": (EXACT, 1e-10, True, True),
    "lstsq --cov HC3": ([*EXACT, "--cov", "HC3"], 1e-10, True, True),
    "lstsq --sample-weight": ([*EXACT, "--sample-weight", "w"], 1e-10, True, True),
    "lstsq --penalty l2": ([*EXACT, "--penalty", "l2", "--alpha", "0.1"], 1e-9, False, True),
    "lstsq --penalty elasticnet --standardize": (
        [*EXACT, "--penalty", "elasticnet", "--alpha", "0.05", "--standardize"], 1e-8, False,
        True),
    "lstsq --no-bias": ([*EXACT, "--no-bias"], 1e-10, True, True),
    "lstsq --penalty l1 --cv 3": ([*EXACT, "--penalty", "l1", "--cv", "3", "--alpha",
                                   "0.001,0.01,0.1"], 1e-9, False, False),
    "categorical + --impute median": ([*EXACT, "--categorical", "city", "--impute", "median"],
                                      1e-10, True, True),
    "sgd full batch": ([*SGD, "--batch-size", "0"], 1e-9, False, True),
    "sgd --momentum --lr-schedule step": (
        [*SGD, "--momentum", "0.5", "--lr-schedule", "step", "--lr-step-size", "5"], 1e-9,
        False, True),
    "adam --lr-schedule cosine": (
        [*SGD, "--optimizer", "adam", "--lr", "0.05", "--lr-schedule", "cosine"], 1e-9, False,
        True),
    "lbfgs": (["--dtype", "float64", "--optimizer", "lbfgs", "--epochs", "3"], 1e-8, False,
              True),
    "sgd --loss huber": ([*SGD, "--loss", "huber", "--huber-delta", "0.5"], 1e-9, False, True),
    "sgd --penalty l1": ([*SGD, "--penalty", "l1", "--alpha", "0.01"], 1e-9, False, True),
    "sgd --sample-weight": ([*SGD, "--sample-weight", "w"], 1e-9, False, True),
    "sgd --early-stopping": ([*SGD, "--val-fraction", "0.2", "--early-stopping", "--patience",
                              "3"], 1e-9, False, False),
    "sgd --lr-schedule plateau": ([*SGD, "--val-fraction", "0.2", "--lr-schedule", "plateau"],
                                  1e-9, False, False),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """Four Parquet files (a text column with blanks, a weight column), and the same rows as
    one file (small enough to train in memory)."""
    root = tmp_path_factory.mktemp("every_size")
    rng = np.random.default_rng(21)
    n = 2000
    X = rng.normal(size=(n, 3))
    city = rng.choice(np.array(["Paris", "Lyon", "Nice"]), n)
    x1 = np.where(rng.random(n) < 0.05, np.nan, X[:, 1])
    y = X @ [1.5, -2.0, 0.5] + 3.0 + (city == "Nice") * 2.0 + rng.normal(size=n) * 0.3
    table = pa.table({"a": X[:, 0], "b": pa.array(x1, from_pandas=True), "c": X[:, 2],
                      "city": city, "w": (np.arange(n) % 4) * 0.5 + 0.25, "y": y})
    folder = root / "parts"
    folder.mkdir()
    for i in range(4):
        pq.write_table(table.slice(i * n // 4, n // 4), folder / f"p{i}.parquet",
                       row_group_size=200)
    pq.write_table(table, root / "all.parquet")
    return folder, root / "all.parquet"


def _model(folder: Path) -> tuple[np.ndarray, dict]:
    m = json.loads((folder / "model.json").read_text())
    return np.concatenate([np.ravel(m["model"]["coef_"]), m["model"]["intercept_"]]), m


@pytest.mark.parametrize("name", MATRIX)
def test_every_flag_gives_the_same_model_at_every_size(data, tmp_path, name):
    flags, rtol, statistics, in_memory = MATRIX[name]
    folder, whole = data
    columns = ["--target", "y"] + ([] if "--sample-weight" in flags else ["--exclude", "w"])
    if "--categorical" not in flags:
        columns += ["--exclude", "city", "--exclude", "b"]
    common = [*flags, *columns, "-q"]
    runs = {}
    if in_memory:
        train(whole, *common, "--out", tmp_path / "memory")
        runs["memory"] = _model(tmp_path / "memory")
    train(folder, *common, "--batch-rows", "150", "--max-memory", "1K", "--out",
          tmp_path / "streamed")
    runs["streamed"] = _model(tmp_path / "streamed")
    res = run_script("linreg-train", folder, *common, "--nproc", "2", "--batch-rows", "150",
                     "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr.decode()
    runs["2 processes"] = _model(tmp_path / "two")
    first, (want, wanted) = next(iter(runs)), next(iter(runs.values()))
    for how, (got, manifest) in runs.items():
        assert manifest["features"] == wanted["features"], how
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-2,
                                   err_msg=f"{how} against {first}")
        # the contributions' reference point: the training rows' design means
        np.testing.assert_allclose(manifest["model"]["feature_means"],
                                   wanted["model"]["feature_means"], rtol=1e-10, atol=1e-12,
                                   err_msg=f"means: {how} against {first}")
        if statistics:
            for key in ("std_err", "p_value", "log_likelihood", "r2", "rsquared_uncentered"):
                if key not in wanted["statistics"][0]:
                    continue
                np.testing.assert_allclose(
                    manifest["statistics"][0][key], wanted["statistics"][0][key], rtol=1e-8,
                    atol=1e-300, err_msg=f"{key}: {how} against {first}")
    assert runs["streamed"][1]["training"]["streamed"]["kept_in_memory"] is False


def test_blank_targets_are_left_out_alike_at_every_size(tmp_path):
    """--missing-target drop (the default): the rows whose target is blank are left out, and
    counted, the same way in memory (CSV or Parquet), streamed and over 2 processes; a level
    seen only in such a row is not learned (it would have no rows to fit it)."""
    rng = np.random.default_rng(22)
    n = 1200
    a, b = rng.normal(size=n), rng.normal(size=n)
    city = rng.choice(np.array(["Paris", "Lyon", "Nice"]), n)
    y = 1.5 * a - 2.0 * b + 3.0 + (city == "Nice") * 2.0 + rng.normal(size=n) * 0.3
    blank = rng.random(n) < 0.1
    blank[7] = True
    city[7] = "Rare"  # only ever in a row that is left out
    table = pa.table({"a": a, "b": b, "city": city,
                      "y": pa.array(np.where(blank, np.nan, y), from_pandas=True)})
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(3):
        pq.write_table(table.slice(i * n // 3, n // 3), folder / f"p{i}.parquet",
                       row_group_size=100)
    pq.write_table(table, tmp_path / "all.parquet")
    pa.csv.write_csv(table, tmp_path / "all.csv")
    common = [*EXACT, "--categorical", "city", "-q"]
    train(tmp_path / "all.parquet", *common, "--out", tmp_path / "memory")
    train(tmp_path / "all.csv", *common, "--out", tmp_path / "csv")
    train(folder, *common, "--batch-rows", "150", "--max-memory", "1K", "--out",
          tmp_path / "streamed")
    res = run_script("linreg-train", folder, *common, "--nproc", "2", "--batch-rows", "150",
                     "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr.decode()
    want, wanted = _model(tmp_path / "memory")
    for how in ("csv", "streamed", "two"):
        got, manifest = _model(tmp_path / how)
        np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=how)
        assert manifest["data"]["dropped_rows"] == int(blank.sum()), how
        assert manifest["warnings"] == wanted["warnings"] == [
            f"dropped {int(blank.sum())} row(s) with a blank target ('y'); --missing-target "
            "error refuses them instead"], how
    assert wanted["data"]["rows"] == n - int(blank.sum())
    assert [c["levels"] for c in wanted["columns"] if c["name"] == "city"] == [
        ["Lyon", "Nice", "Paris"]]
