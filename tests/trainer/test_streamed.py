"""Streamed and distributed training: datasets of files read in chunks, the tall-skinny QR,
streamed SGD, real ``--nproc`` process groups (gloo on this CPU), a rank that fails or is
killed, and memory that stays flat. Distributed runs are subprocesses of the installed
``linreg-train``, as a user starts them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import BIN, run_script, write_csv
from tests.trainer.commands import train
from tests.trainer.test_tutorial import TUTORIAL_LINES
from trainer.dataset import Dataset, validation_mask

pytestmark = pytest.mark.slow


def make_shards(folder: Path, n: int = 4000, *, parts: int = 4, seed: int = 0,
                row_group: int = 300, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``parts`` Parquet files (several row groups each) of a noisy linear relation."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * scale
    y = X @ np.array([1.5, -2.0, 0.5]) + 3.0 + rng.normal(size=n) * 0.1
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        s = slice(i * n // parts, (i + 1) * n // parts)
        pq.write_table(pa.table({"a": X[s, 0], "b": X[s, 1], "c": X[s, 2], "y": y[s]}),
                       folder / f"part-{i}.parquet", row_group_size=row_group)
    return X, y


def manifest(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def params(folder: Path) -> np.ndarray:
    m = manifest(folder)["model"]
    return np.concatenate([np.ravel(m["coef_"]), m["intercept_"]])


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("shards") / "data"
    X, y = make_shards(folder)
    exact = np.linalg.lstsq(np.hstack([X, np.ones((len(X), 1))]), y, rcond=None)[0]
    return folder, exact


# ------------------------------------------------------------------ exact least squares

def test_four_shards_two_processes_lstsq_equals_numpy(shards, tmp_path):
    folder, exact = shards
    res = run_script("linreg-train", folder, "--nproc", "2", "--solver", "lstsq", "--dtype",
                     "float64", "--out", tmp_path / "m")
    assert res.returncode == 0, res.stderr.decode()
    np.testing.assert_allclose(params(tmp_path / "m"), exact, rtol=1e-10)
    streamed = manifest(tmp_path / "m")["training"]["streamed"]
    assert streamed["world_size"] == 2 and streamed["backend"] == "gloo"
    assert sum(streamed["rows_per_rank"]) == 4000 and min(streamed["rows_per_rank"]) > 0
    assert "Trained 3 feature(s) -> 1 target(s) on cpu: exact least squares" in res.stdout.decode()


@pytest.mark.parametrize("batch_rows", [1000, 7])
def test_one_process_in_small_chunks_equals_numpy(shards, tmp_path, batch_rows):
    folder, exact = shards
    train(folder, "--solver", "lstsq", "--dtype", "float64", "--batch-rows", batch_rows,
          "--out", tmp_path / "m", "-q")
    np.testing.assert_allclose(params(tmp_path / "m"), exact, rtol=1e-10)
    m = manifest(tmp_path / "m")
    assert m["data"]["rows"] == 4000 and len(m["data"]["files"]) == 4
    assert m["training"]["streamed"]["batch_rows"] == batch_rows


def _in_memory_twin(folder: Path, tmp_path: Path) -> Path:
    """The shards as one Parquet file, small enough to train in memory."""
    table = pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("*.parquet"))])
    pq.write_table(table, tmp_path / "all.parquet")
    return tmp_path / "all.parquet"


STAT_KEYS = ("std_err", "t", "p_value", "conf_int", "coef", "sigma", "r2", "adj_r2", "f_stat",
             "f_p_value", "log_likelihood", "aic", "bic", "condition_number", "df_resid",
             "df_model", "n_obs")


@pytest.mark.parametrize("cov", ["nonrobust", "HC0", "HC1", "HC2", "HC3"])
@pytest.mark.parametrize("how", [["--batch-rows", "333"], ["--nproc", "2"]])
def test_streamed_statistics_equal_the_in_memory_ones(shards, tmp_path, cov, how):
    """The statistics of a streamed fit (the design's R from the QR pass, the residual sums
    from the metrics pass, one more pass for a robust covariance) equal the in-memory ones."""
    folder, _ = shards
    common = ["--solver", "lstsq", "--dtype", "float64", "--cov", cov, "-q"]
    train(_in_memory_twin(folder, tmp_path), *common, "--out", tmp_path / "mem")
    if how[0] == "--nproc":
        res = run_script("linreg-train", folder, *how, *common, "--out", tmp_path / "str")
        assert res.returncode == 0, res.stderr.decode()
    else:
        train(folder, *how, *common, "--out", tmp_path / "str")
    mem = manifest(tmp_path / "mem")["statistics"][0]
    streamed = manifest(tmp_path / "str")["statistics"][0]
    assert streamed["not_defined"] == mem["not_defined"] == {}
    for key in STAT_KEYS:
        np.testing.assert_allclose(streamed[key], mem[key], rtol=1e-8, atol=1e-12, err_msg=key)
    with np.load(tmp_path / "str" / "inference.npz") as a, \
            np.load(tmp_path / "mem" / "inference.npz") as b:
        np.testing.assert_allclose(a["cov"], b["cov"], rtol=1e-8, atol=1e-15)


@pytest.mark.parametrize("penalty", [["--penalty", "l2", "--alpha", "0.3"],
                                     ["--penalty", "l1", "--alpha", "0.05"],
                                     ["--penalty", "elasticnet", "--alpha", "0.1",
                                      "--l1-ratio", "0.3"]])
@pytest.mark.parametrize("extra", [[], ["--standardize"], ["--no-bias"]])
@pytest.mark.parametrize("how", [["--batch-rows", "333"], ["--nproc", "2"]])
def test_streamed_penalised_fits_equal_the_in_memory_ones(shards, tmp_path, penalty, extra, how):
    """The exact penalised objective from the TSQR factor (l2: R over √(nα)·I; l1, elastic
    net: coordinate descent on its Gram matrix) equals the in-memory solver."""
    if how[0] == "--nproc" and extra:
        pytest.skip("the 2-process path is the same code after the R factors merge")
    folder, _ = shards
    common = ["--solver", "lstsq", "--dtype", "float64", *penalty, *extra, "-q"]
    train(_in_memory_twin(folder, tmp_path), *common, "--out", tmp_path / "mem")
    if how[0] == "--nproc":
        res = run_script("linreg-train", folder, *how, *common, "--out", tmp_path / "str")
        assert res.returncode == 0, res.stderr.decode()
    else:
        train(folder, *how, *common, "--out", tmp_path / "str")
    np.testing.assert_allclose(params(tmp_path / "str"), params(tmp_path / "mem"), rtol=1e-9,
                               atol=1e-12)
    stats = manifest(tmp_path / "str")["statistics"][0]
    assert stats["not_defined"]["std_err"].startswith("the estimates are penalized")


def _weighted_shards(folder: Path) -> Path:
    """The shards with a weight column (zeros included), one Parquet file per shard."""
    out = folder.parent / "weighted"
    out.mkdir(exist_ok=True)
    for i, f in enumerate(sorted(folder.glob("*.parquet"))):
        t = pq.read_table(f)
        w = (np.arange(t.num_rows) % 5) * 0.5 + (i % 2)  # 0, 0.5, ... 2 (+1 on odd shards)
        pq.write_table(t.append_column("w", pa.array(w)), out / f.name, row_group_size=300)
    return out


@pytest.mark.parametrize("extra", [["--cov", "HC1"], ["--penalty", "l2", "--alpha", "0.2"],
                                   ["--penalty", "elasticnet", "--alpha", "0.05",
                                    "--standardize"]])
@pytest.mark.parametrize("how", [["--batch-rows", "333"], ["--nproc", "2"]])
def test_streamed_sample_weights_equal_the_in_memory_fit(shards, tmp_path, extra, how):
    """--sample-weight streams with the exact solver: rows scaled by √w in the QR pass, the
    penalised objective with weights summing to n, WLS statistics from the weighted sums."""
    folder = _weighted_shards(shards[0])
    common = ["--solver", "lstsq", "--dtype", "float64", "--sample-weight", "w", "--target", "y",
              *extra, "-q"]
    train(_in_memory_twin(folder, tmp_path), *common, "--out", tmp_path / "mem")
    if how[0] == "--nproc":
        res = run_script("linreg-train", folder, *how, *common, "--out", tmp_path / "str")
        assert res.returncode == 0, res.stderr.decode()
    else:
        train(folder, *how, *common, "--out", tmp_path / "str")
    np.testing.assert_allclose(params(tmp_path / "str"), params(tmp_path / "mem"), rtol=1e-9,
                               atol=1e-12)
    mem, streamed = (manifest(tmp_path / m)["statistics"][0] for m in ("mem", "str"))
    assert streamed["not_defined"] == mem["not_defined"]
    for key in STAT_KEYS:
        if mem.get(key) is None:  # (the log-likelihood of WLS with zero weights: NaN, null)
            assert streamed.get(key) is None, key
        else:
            np.testing.assert_allclose(streamed[key], mem[key], rtol=1e-8, atol=1e-12,
                                       err_msg=key)
    assert manifest(tmp_path / "str")["data"]["sample_weight"] == "w"


def test_streamed_weights_refuse_what_in_memory_refuses(shards, tmp_path):
    folder = _weighted_shards(shards[0])
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in sorted(folder.glob("*.parquet")):
        t = pq.read_table(f)
        if f.name == "part-2.parquet":
            w = t.column("w").to_numpy().copy()
            w[7] = -1.0
            t = t.set_column(t.schema.get_field_index("w"), "w", pa.array(w))
        pq.write_table(t, bad / f.name, row_group_size=300)
    res = train(bad, "--solver", "lstsq", "--sample-weight", "w", "--target", "y", "--out",
                tmp_path / "m",
                code=1)
    assert res.stderr == (f"linreg-train: error: {bad}/part-2.parquet: row 8, column 'w': the "
                          "sample weight -1 is negative; weights must be >= 0\n")


@pytest.mark.parametrize("how", [["--batch-rows", "700"], ["--nproc", "2"]])
def test_streamed_weighted_minibatches_reach_weighted_least_squares(shards, tmp_path, how):
    """Each step's loss is its rows' weighted mean (the step's total weight summed over the
    ranks), so mini-batch SGD lands on the WLS answer."""
    rng = np.random.default_rng(5)  # two relations; the weights favour the first
    x = rng.normal(size=4000)
    first = np.arange(4000) % 2 == 0
    y = np.where(first, 2 * x + 1, -x + 5) + rng.normal(size=4000) * 0.1
    w = np.where(first, 1.0, 0.05)
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(4):
        s = slice(i * 1000, (i + 1) * 1000)
        pq.write_table(pa.table({"x": x[s], "w": w[s], "y": y[s]}), folder / f"p{i}.parquet",
                       row_group_size=250)
    common = ["--sample-weight", "w", "--target", "y", "--dtype", "float64", "-q"]
    train(folder, "--solver", "lstsq", *common, "--out", tmp_path / "wls")
    res = run_script("linreg-train", folder, *how, "--epochs", "30", "--lr", "0.01",
                     "--batch-size", "64", "--standardize", *common, "--out", tmp_path / "m")
    assert res.returncode == 0, res.stderr.decode()
    wls = params(tmp_path / "wls")
    ols = np.linalg.lstsq(np.column_stack([x, np.ones(4000)]), y, rcond=None)[0]
    assert np.abs(wls - ols).max() > 1  # the weights matter here
    np.testing.assert_allclose(params(tmp_path / "m"), wls, atol=0.05)


def test_a_streamed_model_has_a_summary_and_intervals(shards, tmp_path):
    from click.testing import CliRunner

    from serve import Predictor
    from tests.trainer.commands import export
    from trainer.cli import summary_main

    folder, exact = shards
    res = train(folder, "--solver", "lstsq", "--dtype", "float64", "--out", tmp_path / "m",
                "--batch-rows", "500", "--summary")
    assert "Intercept" in res.output and "std err" in res.output
    train(_in_memory_twin(folder, tmp_path), "--solver", "lstsq", "--dtype", "float64", "--out",
          tmp_path / "mem", "-q")
    for model in ("m", "mem"):
        export(tmp_path / model, "--intervals", "0.9", "-q")
    X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    streamed = Predictor.load(tmp_path / "m").predict_intervals(X)
    in_memory = Predictor.load(tmp_path / "mem").predict_intervals(X)
    for name, values in streamed.items():
        np.testing.assert_allclose(values, in_memory[name], rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(streamed["prediction"][0, 0], X[0] @ exact[:3] + exact[3],
                               rtol=1e-10)
    res = CliRunner().invoke(summary_main, [str(tmp_path / "m")])
    assert res.exit_code == 0 and "std err" in res.output, res.stderr


def test_streamed_statistics_equal_statsmodels(shards, tmp_path):
    sm = pytest.importorskip("statsmodels.api")
    folder, _ = shards
    X, y = make_shards(tmp_path / "again")  # the same rows, in the same order, as the shards
    train(folder, "--solver", "lstsq", "--dtype", "float64", "--batch-rows", "700", "--cov",
          "HC3", "--out", tmp_path / "m", "-q")
    got = manifest(tmp_path / "m")["statistics"][0]
    ols = sm.OLS(y, sm.add_constant(X)).fit(cov_type="HC3")
    np.testing.assert_allclose(got["coef"], ols.params, rtol=1e-9)
    np.testing.assert_allclose(got["std_err"], ols.bse, rtol=1e-8)
    np.testing.assert_allclose(got["p_value"], ols.pvalues, rtol=1e-6, atol=1e-300)
    np.testing.assert_allclose(got["log_likelihood"], ols.llf, rtol=1e-10)
    np.testing.assert_allclose(got["r2"], ols.rsquared, rtol=1e-10)


def test_tsqr_keeps_the_digits_the_normal_equations_lose(tmp_path):
    """Longley-like: nearly collinear columns (condition ~1e7). The QR keeps ~9 digits; XᵀX
    would square the condition number and keep about 2."""
    rng = np.random.default_rng(3)
    t = np.arange(200.0)
    X = np.column_stack([t, t + rng.normal(size=200) * 1e-4, rng.normal(size=200)])
    y = X @ [1.0, 2.0, 3.0] + 1.0 + rng.normal(size=200) * 1e-3
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "y"], np.column_stack([X, y]).tolist())
    train(tmp_path / "d.csv", "--solver", "lstsq", "--dtype", "float64", "--batch-rows", 16,
          "--out", tmp_path / "m", "-q")
    exact = np.linalg.lstsq(np.hstack([X, np.ones((200, 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(params(tmp_path / "m"), exact, rtol=1e-7)


# ------------------------------------------------------------------ SGD

# float32: a few ulps (the ranks' sums are added in another order; one ulp at a cost of 0.15
# is 1e-6 of it)
@pytest.mark.parametrize("dtype, rtol", [("float32", 4e-6), ("float64", 1e-12)])
def test_full_batch_sgd_two_processes_equals_one(shards, tmp_path, dtype, rtol):
    folder, _ = shards
    runs = {}
    for nproc in ("1", "2"):
        out = tmp_path / f"m{nproc}"
        res = run_script("linreg-train", folder, "--nproc", nproc, "--epochs", "50", "--lr",
                         "0.1", "--standardize", "--dtype", dtype, "--batch-rows", "500",
                         "--out", out, "-q")
        assert res.returncode == 0, res.stderr.decode()
        runs[nproc] = params(out)
    np.testing.assert_allclose(runs["2"], runs["1"], rtol=rtol)
    cost_1 = np.loadtxt(tmp_path / "m1" / "history.csv", delimiter=",", skiprows=1)[:, 1]
    cost_2 = np.loadtxt(tmp_path / "m2" / "history.csv", delimiter=",", skiprows=1)[:, 1]
    np.testing.assert_allclose(cost_2, cost_1, rtol=rtol)


def test_streamed_full_batch_equals_the_in_memory_fit(shards, tmp_path):
    """The same rows in one file: in memory (F.mse_loss on everything) and streamed in 7
    chunks agree to float64 rounding."""
    folder, _ = shards
    table = pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("*.parquet"))])
    pq.write_table(table, tmp_path / "all.parquet")
    args = ["--epochs", "50", "--lr", "0.1", "--standardize", "--dtype", "float64", "-q"]
    train(tmp_path / "all.parquet", *args, "--out", tmp_path / "mem")
    train(tmp_path / "all.parquet", *args, "--batch-rows", 600, "--out", tmp_path / "stream")
    assert "streamed" not in manifest(tmp_path / "mem")["training"]
    np.testing.assert_allclose(params(tmp_path / "stream"), params(tmp_path / "mem"),
                               rtol=1e-12)


def test_the_tutorial_numbers_from_a_one_file_dataset(tutorial_csv, tmp_path):
    res = run_script("linreg-train", tutorial_csv, "--epochs", "2000", "--lr", "0.01",
                     "--init", "zeros", "--batch-rows", "2", "--out", tmp_path / "m")
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode().splitlines()
    for line in TUTORIAL_LINES:
        assert line in out
    assert [ln for ln in out if ln.startswith("Epoch")][-1] == \
        "Epoch 2000/2000 W: 1.997, b: 0.006 Cost: 0.000005"
    assert manifest(tmp_path / "m")["training"]["streamed"]["batch_rows"] == 2


def test_minibatch_sgd_two_processes_reaches_least_squares(shards, tmp_path):
    folder, exact = shards
    res = run_script("linreg-train", folder, "--nproc", "2", "--epochs", "20", "--lr", "0.05",
                     "--batch-size", "64", "--standardize", "--dtype", "float64", "--out",
                     tmp_path / "m", "-q")
    assert res.returncode == 0, res.stderr.decode()
    np.testing.assert_allclose(params(tmp_path / "m"), exact, atol=0.02)
    m = manifest(tmp_path / "m")
    assert not m["metrics"]["exact_least_squares"]["sgd_short_of_it"]


# ------------------------------------------------------------------ validation rows

def test_validation_rows_are_a_hash_of_their_place(shards, tmp_path):
    """The same rows are held out whatever the chunking and the number of processes."""
    folder, _ = shards
    for name, extra in (("a", ["--batch-rows", "100"]), ("b", ["--batch-rows", "999"])):
        train(folder, "--solver", "lstsq", "--val-fraction", "0.25", "--out", tmp_path / name,
              "-q", *extra)
    res = run_script("linreg-train", folder, "--nproc", "2", "--solver", "lstsq",
                     "--val-fraction", "0.25", "--out", tmp_path / "c", "-q")
    assert res.returncode == 0, res.stderr.decode()
    data = [manifest(tmp_path / n)["data"] for n in "abc"]
    assert data[0]["validation_rows"] == data[1]["validation_rows"] == data[2]["validation_rows"]
    assert 900 < data[0]["validation_rows"] < 1100
    metrics = [manifest(tmp_path / n)["metrics"]["validation"]["mse"][0] for n in "abc"]
    assert metrics[0] == pytest.approx(metrics[1], rel=1e-9)
    assert metrics[0] == pytest.approx(metrics[2], rel=1e-6)  # float32 model, other sums
    mask = validation_mask(1, 0.25, 0, 0, 1000)
    assert mask.sum() == sum(validation_mask(1, 0.25, 0, s, 100).sum() for s in
                             range(0, 1000, 100))


def test_val_data_is_a_separate_dataset(shards, tmp_path):
    folder, _ = shards
    make_shards(tmp_path / "val", n=400, parts=1, seed=9)
    train(folder, "--solver", "lstsq", "--val-data", tmp_path / "val", "--out", tmp_path / "m",
          "-q")
    m = manifest(tmp_path / "m")
    assert m["data"]["validation_rows"] == 400 and m["data"]["train_rows"] == 4000
    assert m["metrics"]["validation"]["r2"][0] > 0.99


# ------------------------------------------------------------------ datasets and refusals

def test_a_glob_and_csv_files(tmp_path):
    X, y = make_shards(tmp_path / "pq", n=600, parts=3)
    for i, f in enumerate(sorted((tmp_path / "pq").glob("*.parquet"))):
        pq.read_table(f).to_pandas().to_csv(tmp_path / f"p{i}.csv", index=False)
    train(str(tmp_path / "p*.csv"), "--solver", "lstsq", "--dtype", "float64", "--out",
          tmp_path / "m", "-q")
    exact = np.linalg.lstsq(np.hstack([X, np.ones((600, 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(params(tmp_path / "m"), exact, rtol=1e-10)


@pytest.mark.parametrize("case, message", [
    ("schema", "{d}/p1.csv: its columns differ from {d}/p0.csv's (lacks y); every file of a "
               "dataset needs the same columns"),
    ("mixed", "{d}: mixes Parquet and CSV files; a dataset has one format"),
    ("cell", "{d}/p1.csv: row 2, column 'y': 'oops' is not a number; 'y' is the target: the "
             "last column, by default (choose the target with --target NAME)"),
    ("empty", "{d}: no .parquet or .csv files in this folder"),
])
def test_bad_datasets_are_one_line(tmp_path, case, message):
    d = tmp_path / "d"
    d.mkdir()
    if case != "empty":
        write_csv(d / "p0.csv", ["a", "y"], [[1, 2], [2, 4]])
    if case == "schema":
        write_csv(d / "p1.csv", ["a"], [[1]])
    elif case == "mixed":
        pq.write_table(pa.table({"a": [1.0], "y": [2.0]}), d / "p1.parquet")
    elif case == "cell":  # (a text cell in a feature makes it categorical, as in memory)
        write_csv(d / "p1.csv", ["a", "y"], [[1, 2], [3, "oops"]])
    res = train(d, "--out", tmp_path / "m", code=1)
    assert res.stderr == f"linreg-train: error: {message.format(d=d)}\n"
    assert not (tmp_path / "m").exists()


def test_val_fraction_and_val_data_together_are_refused(shards, tmp_path):
    folder, _ = shards
    res = train(folder, "--val-fraction", "0.2", "--val-data", folder, "--out", tmp_path / "m",
                code=1)
    assert res.stderr == ("linreg-train: error: --val-fraction and --val-data both pick "
                          "validation rows; give one\n")


def test_dataset_parts_are_row_groups_and_files(shards):
    folder, _ = shards
    ds = Dataset.open(folder)
    parts = ds.parts()
    assert len(ds.files) == 4 and len(parts) == 16  # 1,000 rows a file in groups of 300
    assert [p.rows for p in parts[:4]] == [300, 300, 300, 100]
    shares = [ds.shard(r, 3) for r in range(3)]
    assert {p for s in shares for p in s} == set(parts) and sum(map(len, shares)) == len(parts)


# ------------------------------------------------------------------ failures

def test_a_bad_cell_in_one_rank_ends_the_run_in_one_line(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(2):
        rows = [[r, 2 * r, 3 * r] for r in range(100)]
        if i == 1:
            rows[57] = [1, 2, "x"]
        write_csv(d / f"p{i}.csv", ["a", "b", "y"], rows)
    res = run_script("linreg-train", d, "--nproc", "2", "--epochs", "5", "--out", tmp_path / "m")
    assert res.returncode == 1
    assert res.stderr.decode() == (f"linreg-train: error: rank 1 of 2 failed: {d}/p1.csv: row "
                                   "58, column 'y': 'x' is not a number\n")
    assert not (tmp_path / "m").exists()


def test_killing_one_rank_ends_every_process(shards, tmp_path):
    folder, _ = shards
    proc = subprocess.Popen([str(BIN / "linreg-train"), str(folder), "--nproc", "2",
                             "--epochs", "1000000", "--log-every", "0", "-q", "--out",
                             str(tmp_path / "m")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            workers = _workers(proc.pid)
        assert len(workers) == 2, proc.poll() is not None and proc.communicate()
        time.sleep(3)  # well into the epochs
        os.kill(workers[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1
    assert re.fullmatch(r"linreg-train: error: rank [01] of 2 failed: killed by SIGKILL\n",
                        err.decode()), err.decode()
    assert not (tmp_path / "m").exists()
    assert all(not _alive(pid) for pid in workers)


def _workers(parent: int) -> list[int]:
    """The --nproc processes: the launcher's children that run multiprocessing's spawn."""
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(parent)], capture_output=True,
                         text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


# ------------------------------------------------------------------ memory stays flat

def _peak_rss_kib(*args) -> int:
    proc = subprocess.Popen([str(BIN / "linreg-train"), *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read().decode()
    return usage.ru_maxrss


def test_streamed_minibatch_memory_is_flat_in_the_rows(tmp_path):
    """Peak RSS with 10x the rows stays within 1.3x (the data re-read each epoch in 8,192-row
    chunks, not kept: --max-memory 1M), and the fit reaches least squares."""
    peaks = {}
    for scale in (1, 10):
        X, y = make_shards(tmp_path / f"d{scale}", n=100_000 * scale, parts=4,
                           row_group=8192, seed=scale)
        out = tmp_path / f"m{scale}"
        peaks[scale] = _peak_rss_kib(tmp_path / f"d{scale}", "--batch-size", "1024",
                                     "--epochs", "2", "--lr", "0.05", "--standardize",
                                     "--batch-rows", "8192", "--max-memory", "1M", "--out", out,
                                     "-q")
        m = manifest(out)
        assert m["training"]["streamed"]["kept_in_memory"] is False
        exact = np.linalg.lstsq(np.hstack([X, np.ones((len(X), 1))]), y, rcond=None)[0]
        np.testing.assert_allclose(params(out), exact, atol=0.02)
    assert peaks[10] <= 1.3 * peaks[1], peaks


# ------------------------------------------------------------------ CUDA

@pytest.mark.parametrize("batch", ["0", "256"], ids=["full-batch", "mini-batch"])
def test_streamed_sgd_on_cuda_matches_cpu(shards, tmp_path, batch):
    """Pinned chunks copied without blocking, read ahead by a thread: the same fit as the CPU."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    folder, _ = shards
    for device in ("cpu", "cuda"):
        train(folder, "--device", device, "--epochs", "20", "--lr", "0.05", "--standardize",
              "--dtype", "float64", "--batch-size", batch, "--batch-rows", "500", "--out",
              tmp_path / device, "-q")
    np.testing.assert_allclose(params(tmp_path / "cuda"), params(tmp_path / "cpu"), rtol=1e-9)
    assert manifest(tmp_path / "cuda")["training"]["device"].startswith("cuda")


# ------------------------------------------------------------------ encoding at every size

def _tabular_parts(folder: Path, *, parts: int = 3, rows: int = 400, blanks: float = 0.05,
                   seed: int = 11) -> tuple[Path, Path]:
    """CSV parts with a text column and blanks, and the same rows as one file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines_all = ["city,x1,x2,y"]
    for i in range(parts):
        city = rng.choice(["Paris", "Lyon", "Rome", "Oslo"], rows)
        x1, x2 = rng.normal(10, 3, rows), rng.normal(size=rows)
        y = 2 * x1 - x2 + np.select([city == "Paris", city == "Lyon"], [5.0, -2.0], 0.0) \
            + rng.normal(size=rows)
        blank = rng.random(rows) < blanks
        lines = [f"{c},{'' if b else round(a, 4)},{round(e, 4)},{round(t, 4)}"
                 for c, a, e, t, b in zip(city, x1, x2, y, blank)]
        (folder / f"p{i}.csv").write_text("\n".join(["city,x1,x2,y", *lines]) + "\n")
        lines_all += lines
    one = folder.parent / f"{folder.name}.csv"
    one.write_text("\n".join(lines_all) + "\n")
    return folder, one


@pytest.mark.parametrize("flags", [[], ["--impute", "median", "--missing-indicator"],
                                   ["--impute", "mean", "--categorical", "x2",
                                    "--max-levels", "5000"],
                                   ["--impute", "most-frequent", "--no-bias",
                                    "--val-fraction", "0.2", "--unknown", "reference"]])
@pytest.mark.parametrize("how", [["--batch-rows", "97"], ["--max-memory", "1K"],
                                 ["--nproc", "2"]])
def test_categorical_columns_and_blanks_train_the_same_at_every_size(tmp_path, flags, how):
    """A file with a text column (and blanks) trains streamed, in chunks or processes, into the
    same columns specs, the same coefficients and the same model.onnx as in memory."""
    from serve import Predictor
    from tests.trainer.commands import export

    blanks = 0.05 if flags else 0.0
    folder, one = _tabular_parts(tmp_path / "parts", blanks=blanks)
    common = ["--solver", "lstsq", "--dtype", "float64", *flags, "-q"]
    if "--val-fraction" in flags and how[0] != "--nproc":
        pytest.skip("hash-picked validation rows differ from the in-memory permutation")
    train(one, *common, "--out", tmp_path / "mem")
    source = folder if how[0] == "--nproc" else one
    res = run_script("linreg-train", source, *how, *common, "--out", tmp_path / "str")
    assert res.returncode == 0, res.stderr.decode()
    mem, streamed = manifest(tmp_path / "mem"), manifest(tmp_path / "str")
    if "--val-fraction" not in flags:
        assert streamed["columns"] == mem["columns"]
        assert streamed["features"] == mem["features"]
        np.testing.assert_allclose(params(tmp_path / "str"), params(tmp_path / "mem"),
                                   rtol=1e-9, atol=1e-10)
    assert streamed["columns"] is not None and streamed["encoding"] is not None
    export(tmp_path / "str", "-q", "--format", "onnx")
    first = [line.split(",") for line in one.read_text().splitlines()[1:3]]  # known levels
    rows = {"city": [r[0] for r in first], "x1": [float(r[1] or "nan") for r in first],
            "x2": [float(r[2]) for r in first]}
    got = Predictor.load(tmp_path / "str").predict(rows)
    if "--val-fraction" not in flags:
        export(tmp_path / "mem", "-q", "--format", "onnx")
        np.testing.assert_allclose(got, Predictor.load(tmp_path / "mem").predict(rows),
                                   rtol=1e-9)


def test_a_streamed_tabular_fit_matches_statsmodels_by_coefficient_name(tmp_path):
    """Categorical + --impute median on a dataset folder, two processes: the coefficients and
    standard errors of statsmodels' formula on the filled data, matched by name."""
    smf = pytest.importorskip("statsmodels.formula.api")
    import pandas as pd

    folder, one = _tabular_parts(tmp_path / "parts")
    res = run_script("linreg-train", folder, "--nproc", "2", "--impute", "median", "--solver",
                     "lstsq", "--dtype", "float64", "--out", tmp_path / "m", "-q")
    assert res.returncode == 0, res.stderr.decode()
    df = pd.read_csv(one)
    df["x1"] = df["x1"].fillna(df["x1"].median())
    ols = smf.ols("y ~ C(city) + x1 + x2", df).fit()
    got = manifest(tmp_path / "m")
    stats = got["statistics"][0]
    by_name = dict(zip(stats["names"], zip(stats["coef"], stats["std_err"])))
    for name, value in ols.params.items():
        ours = name.replace("C(city)", "city")
        np.testing.assert_allclose(by_name[ours][0], value, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(by_name[ours][1], ols.bse[name], rtol=1e-8, err_msg=name)


def test_streamed_encoding_refuses_as_in_memory(tmp_path):
    folder, one = _tabular_parts(tmp_path / "parts")
    res = train(folder, "--batch-rows", "50", "--out", tmp_path / "m", code=1)  # blanks
    assert res.stderr.startswith(f"linreg-train: error: {folder}/p0.csv: row ")
    assert "column 'x1': missing value (blank or NaN); pass --impute mean" in res.stderr
    in_memory = train(one, "--out", tmp_path / "m", code=1)  # the same words, in memory
    assert in_memory.stderr.split(": row ")[1].split(",", 1)[1] == \
        res.stderr.split(": row ")[1].split(",", 1)[1]
    res = train(folder, "--batch-rows", "50", "--impute", "mean", "--categorical", "x2",
                "--out", tmp_path / "m", code=1)
    assert res.stderr.startswith("linreg-train: error: ") and \
        "column 'x2' has more than 1,000 levels (--max-levels 1,000)" in res.stderr
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ L-BFGS, its own defaults

@pytest.fixture(scope="module")
def conditioned(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """500 rows, 6 standardised features (issue #27's well-conditioned case): one file and the
    same rows as 3 Parquet parts, and the exact answer."""
    folder = tmp_path_factory.mktemp("conditioned")
    rng = np.random.default_rng(27)
    X = rng.normal(size=(500, 6))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.0]) + 4.0 + rng.normal(size=500)
    table = pa.table({**{f"x{j}": X[:, j] for j in range(6)}, "y": y})
    pq.write_table(table, folder / "one.parquet")
    (folder / "parts").mkdir()
    for i in range(3):
        pq.write_table(table.slice(i * 167, 167), folder / "parts" / f"p{i}.parquet")
    exact = np.linalg.lstsq(np.hstack([X, np.ones((500, 1))]), y, rcond=None)[0]
    return folder / "one.parquet", folder / "parts", exact


@pytest.mark.parametrize("how", [[], ["--batch-rows", "100"], ["--nproc", "2"]])
def test_lbfgs_with_its_defaults_lands_on_least_squares(conditioned, tmp_path, how):
    """--optimizer lbfgs without --lr takes torch's lr=1 and lands within 1e-6 of the exact
    answer, in memory, streamed and over 2 processes (each line-search evaluation a pass)."""
    one, parts, exact = conditioned
    source = parts if how[:1] == ["--nproc"] else one
    res = run_script("linreg-train", source, *how, "--optimizer", "lbfgs", "--dtype", "float64",
                     "--epochs", "50", "--out", tmp_path / "m", "-q")
    assert res.returncode == 0, res.stderr.decode()
    np.testing.assert_allclose(params(tmp_path / "m"), exact, rtol=1e-6, atol=1e-8)
    assert manifest(tmp_path / "m")["training"]["lr"] == 1.0


def test_each_optimiser_has_its_own_default_lr_and_help_says_so(conditioned, tmp_path):
    one, _, _ = conditioned
    for optimizer, lr in (("sgd", 0.01), ("adam", 0.001), ("lbfgs", 1.0)):
        train(one, "--optimizer", optimizer, "--epochs", "2", "--out", tmp_path / optimizer, "-q")
        assert manifest(tmp_path / optimizer)["training"]["lr"] == lr
    train(one, "--optimizer", "lbfgs", "--lr", "0.5", "--epochs", "2", "--out",
          tmp_path / "given", "-q")
    assert manifest(tmp_path / "given")["training"]["lr"] == 0.5  # an explicit --lr is kept
    res = run_script("linreg-train", "--help")
    assert "Default: the optimiser's own, 0.01 for sgd, 0.001 for adam (torch's), 1 for lbfgs" \
        in " ".join(res.stdout.decode().split())


# ------------------------------------------------------------------ schedules, early stopping

@pytest.mark.parametrize("control", [["--lr-schedule", "step", "--lr-step-size", "7"],
                                     ["--lr-schedule", "cosine"],
                                     ["--lr-schedule", "plateau", "--lr-patience", "2"],
                                     ["--tol", "1e-6"]])
def test_streamed_schedules_equal_the_in_memory_ones(shards, tmp_path, control):
    """Full-batch SGD under a schedule (or --tol): the same lr per epoch and the same model as
    in memory, to summation order."""
    folder, _ = shards
    common = ["--dtype", "float64", "--epochs", "40", "--lr", "0.1", "--standardize", "-q",
              *control]
    train(_in_memory_twin(folder, tmp_path), *common, "--out", tmp_path / "mem")
    train(folder, "--batch-rows", "500", *common, "--out", tmp_path / "str")
    np.testing.assert_allclose(params(tmp_path / "str"), params(tmp_path / "mem"), rtol=1e-9)
    import pyarrow.csv as pacsv

    mem, got = (pacsv.read_csv(tmp_path / m / "history.csv") for m in ("mem", "str"))
    assert got.column_names == mem.column_names and got.num_rows == mem.num_rows
    for name in mem.column_names:
        np.testing.assert_allclose(got.column(name).to_numpy(), mem.column(name).to_numpy(),
                                   rtol=1e-8, atol=1e-12, err_msg=name)
    m = manifest(tmp_path / "str")["training"]
    assert m["stopped"] == manifest(tmp_path / "mem")["training"]["stopped"]


def test_streamed_early_stopping_keeps_the_best_epoch_on_every_rank(shards, tmp_path):
    folder, _ = shards
    common = ["--epochs", "500", "--lr", "0.5", "--standardize", "--early-stopping",
              "--patience", "3", "--val-fraction", "0.2", "--dtype", "float64", "-q"]
    train(folder, "--batch-rows", "500", *common, "--out", tmp_path / "one")
    res = run_script("linreg-train", folder, "--nproc", "2", *common, "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr.decode()
    for m in ("one", "two"):
        t = manifest(tmp_path / m)["training"]
        assert t["stopped"] == "early" and t["epochs_run"] < 500
        assert t["best_epoch"] == t["epochs_run"] - 1 - 3
    np.testing.assert_allclose(params(tmp_path / "two"), params(tmp_path / "one"), rtol=1e-9)
    res = train(folder, "--early-stopping", "--out", tmp_path / "x", code=1)
    assert "--early-stopping watches the validation cost: add --val-fraction" in res.stderr


@pytest.mark.parametrize("objective", [["--loss", "huber", "--huber-delta", "0.5"],
                                       ["--penalty", "l2", "--alpha", "0.1"],
                                       ["--penalty", "l1", "--alpha", "0.05"],
                                       ["--penalty", "elasticnet", "--alpha", "0.05",
                                        "--l1-ratio", "0.5", "--weight-decay", "0.01"]])
def test_streamed_sgd_objectives_equal_the_in_memory_ones(shards, tmp_path, objective):
    """Full-batch SGD on Huber or a penalised objective (the L2 part in the cost, the L1 part
    as a proximal step): the same history and model as in memory, to summation order; the
    2-process run the same again."""
    folder, _ = shards
    common = ["--dtype", "float64", "--epochs", "60", "--lr", "0.1", "--standardize", "-q",
              *objective]
    train(_in_memory_twin(folder, tmp_path), *common, "--out", tmp_path / "mem")
    train(folder, "--batch-rows", "700", *common, "--out", tmp_path / "str")
    res = run_script("linreg-train", folder, "--nproc", "2", *common, "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr.decode()
    for m in ("str", "two"):
        np.testing.assert_allclose(params(tmp_path / m), params(tmp_path / "mem"), rtol=1e-9,
                                   atol=1e-12, err_msg=m)
    import pyarrow.csv as pacsv

    mem, got = (pacsv.read_csv(tmp_path / m / "history.csv") for m in ("mem", "str"))
    np.testing.assert_allclose(got.column("cost").to_numpy(), mem.column("cost").to_numpy(),
                               rtol=1e-9)
    assert manifest(tmp_path / "str")["metrics"].keys() == manifest(tmp_path / "mem")[
        "metrics"].keys()


def test_streamed_warm_start_and_plots(shards, tmp_path):
    """--init-from starts a streamed fit where a model left off (the same as in memory); --plot
    draws the history and a sample of the rows."""
    folder, _ = shards
    common = ["--dtype", "float64", "--lr", "0.05", "--standardize", "-q"]
    train(folder, "--batch-rows", "900", *common, "--epochs", "30", "--out", tmp_path / "first")
    twin = _in_memory_twin(folder, tmp_path)
    train(twin, *common, "--epochs", "20", "--init-from", tmp_path / "first", "--out",
          tmp_path / "mem")
    train(folder, "--batch-rows", "900", *common, "--epochs", "20", "--init-from",
          tmp_path / "first", "--plot", "--out", tmp_path / "str")
    np.testing.assert_allclose(params(tmp_path / "str"), params(tmp_path / "mem"), rtol=1e-9)
    artifacts = manifest(tmp_path / "str")["artifacts"]
    assert {"loss.png", "theta.png"} <= set(artifacts)
    assert all((tmp_path / "str" / name).stat().st_size > 1000 for name in artifacts
               if name.endswith(".png"))
    res = train(folder, "--init-from", tmp_path / "first", "--no-bias", "--out", tmp_path / "x",
                code=1)
    assert "--init-from" in res.stderr and "bias" in res.stderr


# ------------------------------------------------------------------ certified answers, streamed

@pytest.mark.parametrize("how", [["--batch-rows", "3"], ["--nproc", "2"]])
def test_longley_to_nist_certified_digits_streamed(tmp_path, how):
    """NIST StRD Longley (condition number ~5e9) through the streamed QR in chunks of 3 rows,
    and over 2 processes (two files, their R factors merged): the certified estimates and
    standard errors to 7 digits, as in memory."""
    longley = pytest.importorskip("statsmodels.datasets.longley")
    data = longley.load_pandas().data
    folder = tmp_path / "longley"
    folder.mkdir()
    data.iloc[:8].to_csv(folder / "a.csv", index=False)
    data.iloc[8:].to_csv(folder / "b.csv", index=False)
    res = run_script("linreg-train", folder, *how, "--target", "TOTEMP", "--solver", "lstsq",
                     "--dtype", "float64", "--out", tmp_path / "m", "-q")
    assert res.returncode == 0, res.stderr.decode()
    s = manifest(tmp_path / "m")["statistics"][0]
    certified_sd = [890420.383607373, 84.9149257747669, 0.334910077722432e-01,
                    0.488399681651699, 0.214274163161675, 0.226073200069370,
                    455.478499142212]
    certified = [-3482258.63459582, 15.0618722713733, -0.358191792925910e-01,
                 -2.02022980381683, -1.03322686717359, -0.511041056535807e-01,
                 1829.15146461355]
    assert s["names"] == ["Intercept", "GNPDEFL", "GNP", "UNEMP", "ARMED", "POP", "YEAR"]
    np.testing.assert_allclose(s["std_err"], certified_sd, rtol=1e-7)
    np.testing.assert_allclose(s["coef"], certified, rtol=1e-7)
    assert s["sigma"] == pytest.approx(304.854073561965, rel=1e-7)
    assert s["r2"] == pytest.approx(0.995479004577296, rel=1e-9)


@pytest.mark.parametrize("cov", ["nonrobust", "HC1"])
def test_streamed_intervals_equal_statsmodels_summary_frame(shards, tmp_path, cov):
    """A streamed (2-process) model exported with --intervals predicts statsmodels'
    get_prediction().summary_frame() on new rows."""
    sm = pytest.importorskip("statsmodels.api")
    from serve import Predictor
    from tests.trainer.commands import export

    folder, _ = shards
    X, y = make_shards(tmp_path / "again")  # the shards' rows, in order
    res = run_script("linreg-train", folder, "--nproc", "2", "--solver", "lstsq", "--dtype",
                     "float64", "--cov", cov, "--out", tmp_path / "m", "-q")
    assert res.returncode == 0, res.stderr.decode()
    export(tmp_path / "m", "--intervals", "0.9", "-q")
    fit = sm.OLS(y, sm.add_constant(X)).fit(cov_type=cov)
    new = np.random.default_rng(2).normal(size=(40, 3)) * 2
    frame = fit.get_prediction(sm.add_constant(new)).summary_frame(alpha=0.1)
    got = Predictor.load(tmp_path / "m").predict_intervals(new)
    for name, col in [("prediction", "mean"), ("prediction_lower", "obs_ci_lower"),
                      ("prediction_upper", "obs_ci_upper"), ("mean_lower", "mean_ci_lower"),
                      ("mean_upper", "mean_ci_upper")]:
        np.testing.assert_allclose(got[name][:, 0], frame[col], rtol=1e-8, err_msg=name)


@pytest.mark.parametrize("objective", [[], ["--loss", "huber"], ["--penalty", "l2", "--alpha",
                                                                 "0.1"]])
def test_streamed_weighted_full_batch_sgd_equals_in_memory(shards, tmp_path, objective):
    """--sample-weight with full-batch SGD (and L-BFGS) streams: each row's loss weighted, over
    the total weight, as in memory; WLS statistics at the saved parameters."""
    folder = _weighted_shards(shards[0])
    common = ["--dtype", "float64", "--epochs", "40", "--lr", "0.1", "--standardize",
              "--sample-weight", "w", "--target", "y", "-q", *objective]
    train(_in_memory_twin(folder, tmp_path), *common, "--out", tmp_path / "mem")
    train(folder, "--batch-rows", "700", *common, "--out", tmp_path / "str")
    res = run_script("linreg-train", folder, "--nproc", "2", *common, "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr.decode()
    for m in ("str", "two"):
        np.testing.assert_allclose(params(tmp_path / m), params(tmp_path / "mem"), rtol=1e-9,
                                   atol=1e-12, err_msg=m)
    mem, got = (manifest(tmp_path / m) for m in ("mem", "str"))
    np.testing.assert_allclose(got["metrics"]["train"]["mse"], mem["metrics"]["train"]["mse"],
                               rtol=1e-9)
    if not objective:
        np.testing.assert_allclose(got["statistics"][0]["std_err"],
                                   mem["statistics"][0]["std_err"], rtol=1e-8)


def _epoch_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Epoch")]


@pytest.mark.parametrize("objective", [[], ["--loss", "huber"], ["--penalty", "l2", "--alpha",
                                                                 "0.1"]])
def test_a_streamed_weighted_fit_logs_the_in_memory_lines(shards, tmp_path, objective):
    """Every log line, the last (the saved parameters and their cost, from R or one pass for
    Huber) included, reads as in memory: the weighted cost, plus the L2 part."""
    folder = _weighted_shards(shards[0])
    common = ["--dtype", "float64", "--epochs", "20", "--lr", "0.1", "--standardize",
              "--sample-weight", "w", "--target", "y", "--log-every", "5",
              *objective]
    mem = train(_in_memory_twin(folder, tmp_path), *common, "--out", tmp_path / "mem").output
    got = train(folder, "--batch-rows", "700", *common, "--out", tmp_path / "str").output
    assert len(_epoch_lines(got)) == 5 and _epoch_lines(got) == _epoch_lines(mem)


@pytest.mark.parametrize("extra, passes", [
    ([], 2), (["--val-fraction", "0.2"], 2), (["--sample-weight", "w"], 2),
    (["--cov", "HC3"], 2), (["--impute", "mean"], 3)])
def test_a_streamed_exact_fit_reads_the_data_once(shards, tmp_path, extra, passes):
    """The scan gives the fit, its metrics (train and validation) and its statistics from R;
    one more pass reads the residuals at the fit for the diagnostics (and a robust
    covariance's meat, in the same pass); an encoding reads once before."""
    folder = _weighted_shards(shards[0])
    weights = extra if "--sample-weight" in extra else ["--exclude", "w", *extra]
    train(folder, "--solver", "lstsq", "--target", "y", "--batch-rows", "500", "--max-memory",
          "1K", *weights, "--out", tmp_path / "m", "-q")
    m = manifest(tmp_path / "m")
    assert m["training"]["streamed"]["passes"] == passes
    assert not m["training"]["streamed"]["kept_in_memory"]
    if "--val-fraction" in extra:
        assert m["metrics"]["validation"]["rows"] == m["data"]["validation_rows"] > 0


# ------------------------------------------------------------------ checkpoints and --resume

class _Stop(KeyboardInterrupt):
    """Ctrl-C, raised from inside the loop (the progress callback runs every epoch)."""


@pytest.mark.parametrize("batch, extra", [(0, {}), (64, {"momentum": 0.9}),
                                          (64, {"optimizer": "adam", "early_stopping": True,
                                                "patience": 100})])
def test_a_resumed_streamed_run_ends_byte_identical(shards, tmp_path, batch, extra):
    """The seeded chunk order is part of the state: a run stopped after a checkpoint and
    resumed ends with the very bytes of the run that was never stopped."""
    from click.testing import CliRunner

    from trainer.cli import train_main
    from trainer.fit import TrainConfig
    from trainer.train_streamed import train_streamed

    folder, _ = shards
    config = TrainConfig(epochs=30, lr=0.02, batch_size=batch, lr_schedule="step",
                         lr_step_size=7, standardize=True, log_every=0, **extra)
    kw = dict(config=config, val_fraction=0.2, batch_rows=500, max_memory=1024)
    train_streamed(folder, out=tmp_path / "whole", **kw)

    def stop_after_epoch_20(done: float) -> None:
        if done >= 21:
            raise _Stop()
    with pytest.raises(_Stop):
        train_streamed(folder, out=tmp_path / "cut", checkpoint_every=10,
                       progress=stop_after_epoch_20, **kw)
    checkpoint = tmp_path / "cut.checkpoint"
    assert not (tmp_path / "cut").exists() and (checkpoint / "checkpoint.pt").is_file()
    run = json.loads((checkpoint / "run.json").read_text())
    assert (run["batch_rows"], run["max_memory"], run["nproc"]) == (500, 1024, 1)
    res = CliRunner().invoke(train_main, ["--resume", str(checkpoint), "-q"])
    assert res.exit_code == 0, res.stderr
    for name in ("model.pt", "history.csv"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert manifest(tmp_path / "cut")["training"]["streamed"]["kept_in_memory"] is False
    assert not checkpoint.exists()  # a finished run leaves no checkpoint behind


def test_ctrl_c_on_two_processes_keeps_the_checkpoint_and_resumes_the_same(shards, tmp_path):
    folder, _ = shards
    common = ["--nproc", "2", "--batch-rows", "500", "--epochs", "150", "--batch-size", "512",
              "--lr", "0.01", "--standardize", "-q"]
    res = run_script("linreg-train", folder, *common, "--out", tmp_path / "whole")
    assert res.returncode == 0, res.stderr.decode()
    out = tmp_path / "cut"
    proc = subprocess.Popen([str(BIN / "linreg-train"), str(folder), *common,
                             "--checkpoint-every", "10", "--out", str(out)],
                            stderr=subprocess.PIPE)
    checkpoint = tmp_path / "cut.checkpoint"
    deadline = time.monotonic() + 120
    while not (checkpoint / "checkpoint.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == (
        f"linreg-train: error: interrupted; the last checkpoint is in {checkpoint}: continue "
        f"with linreg-train --resume {checkpoint}")
    assert (checkpoint / "checkpoint.pt").is_file() and not out.exists()
    res = run_script("linreg-train", "--resume", checkpoint, "-q")
    assert res.returncode == 0, res.stderr.decode()
    assert manifest(out)["training"]["streamed"]["world_size"] == 2
    assert (out / "model.pt").read_bytes() == (tmp_path / "whole" / "model.pt").read_bytes()
    assert not checkpoint.exists()
