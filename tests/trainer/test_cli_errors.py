"""Bad input through linreg-train: one line on stderr, non-zero exit, no artifact folder left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import run_script, write_csv
from trainer.cli import train_main

ROWS = [[1, 2], [2, 4], [3, 6]]


def _make(tmp: Path, case: str) -> Path:
    """Write the bad input for ``case`` and return its path."""
    if case == "missing":
        return tmp / "nope.csv"
    if case == "extension":
        p = tmp / "data.txt"
        p.write_text("x,y\n1,2\n")
        return p
    if case == "empty":
        p = tmp / "empty.csv"
        p.write_text("")
        return p
    if case == "header-only":
        return write_csv(tmp / "h.csv", ["x", "y"], [])
    if case == "non-numeric":
        return write_csv(tmp / "n.csv", ["x", "y"], [[1, 2], [2, "abc"], [3, 6]])
    if case == "nan":
        return write_csv(tmp / "nan.csv", ["x", "y"], [[1, 2], ["nan", 4], [3, 6]])
    if case == "inf":
        return write_csv(tmp / "inf.csv", ["x", "y"], [[1, 2], [2, 4], [3, "-inf"]])
    if case == "blank-then-bad":
        return write_csv(tmp / "bb.csv", ["x", "y"], [[1, ""], [2, 4], [3, "abc"]])
    if case == "blank-targets":
        return write_csv(tmp / "b.csv", ["x", "y"], [[1, ""], [2, ""]])
    if case == "empty-cell":
        return write_csv(tmp / "e.csv", ["x", "y"], [[1, 2], [2, ""], [3, 6]])
    if case == "few-rows":
        return write_csv(tmp / "f.csv", ["a", "b", "y"], [[1, 2, 3], [4, 5, 6]])
    if case == "npy-object":
        p = tmp / "o.npy"
        np.save(p, np.array([[1, "a"]], dtype=object), allow_pickle=True)
        return p
    if case == "huge":
        return write_csv(tmp / "huge.csv", ["x", "y"], [[1, 2], [2, 4e39], [3, 6]])
    if case == "corrupt-parquet":
        p = tmp / "c.parquet"
        p.write_bytes(b"PAR1 not really")
        return p
    return write_csv(tmp / "ok.csv", ["x", "y"], ROWS)


DEFAULT_TARGET = "; 'y' is the target: the last column, by default (choose the target with " \
    "--target NAME)"
CASES = [
    ("missing", [], "{p}: no such file"),
    ("extension", [], "{p}: unknown file type '.txt'; use one of .csv, .npy, .npz, .parquet, .pq"),
    ("empty", [], "{p}: file is empty"),
    ("header-only", [], "{p}: has a header but no data rows"),
    ("non-numeric", [], "{p}: row 2, column 'y': 'abc' is not a number" + DEFAULT_TARGET),
    ("non-numeric", ["--target", "y"], "{p}: row 2, column 'y': 'abc' is not a number"),
    ("nan", [], "{p}: row 2, column 'x': missing value (blank or NaN); pass --impute mean (or "
     "median, most-frequent, constant:V) to fill blanks, or clean or drop the row"),
    ("inf", [], "{p}: row 3, column 'y': -inf is not allowed (clean or drop the row)"
     + DEFAULT_TARGET),
    ("empty-cell", ["--missing-target", "error"], "{p}: row 2, column 'y': missing value "
     "(--missing-target drop leaves out the rows whose target is blank)" + DEFAULT_TARGET),
    ("empty-cell", ["--missing-target", "error", "--target", "y"], "{p}: row 2, column 'y': "
     "missing value (--missing-target drop leaves out the rows whose target is blank)"),
    ("blank-targets", [], "{p}: every row's target is blank; nothing to learn from"),
    ("blank-then-bad", [], "{p}: row 3, column 'y': 'abc' is not a number" + DEFAULT_TARGET),
    ("ok", ["--target", "z"], "{p}: unknown target column 'z'; the columns are x, y"),
    ("ok", ["--features", "x,w"], "{p}: unknown feature column 'w'; the columns are x, y"),
    ("few-rows", [], "2 training rows but the model has 3 parameters per target; need at least "
                     "3 rows (or fewer features)"),
    ("ok", ["--lr", "10", "--epochs", "500"], "training diverged at epoch 10: the cost became "
     "inf with --lr 10; try a smaller --lr (e.g. 1) or --standardize"),
    ("npy-object", [], "{p}: holds Python objects; only numeric arrays are accepted"),
    ("huge", [], "the data holds values beyond float32's ±3.4e38; train with --dtype float64"),
    ("ok", ["--val-fraction", "0.9"], "--val-fraction 0.9 leaves 3 of 3 rows for validation; "
     "need at least one row on each side"),
]


FLAG_CASES = [
    (["--lr", "0"], "Invalid value for '--lr': 0 is not in the range (0, inf)"),
    (["--lr", "nan"], "Invalid value for '--lr': 'nan' is not a finite number"),
    (["--epochs", "0"], "Invalid value for '--epochs': 0 is not in the range x>=1."),
    (["--val-fraction", "nan"], "Invalid value for '--val-fraction': 'nan' is not a finite number"),
    (["--val-fraction", "1"], "Invalid value for '--val-fraction': 1 is not in the range (0, 1)"),
    (["--val-fraction", "0"], "Invalid value for '--val-fraction': 0 is not in the range (0, 1)"),
    (["--epochs", "abc"], "Invalid value for '--epochs': 'abc' is not a valid integer range."),
    (["--init", "abc"], "Invalid value for '--init': 'abc' is not a number"),
    (["--momentum", "-1"], "Invalid value for '--momentum': -1 is not in the range [0, inf)"),
    (["--tol", "inf"], "Invalid value for '--tol': 'inf' is not a finite number"),
    (["--batch-size", "-3"], "Invalid value for '--batch-size': -3 is not in the range x>=0."),
]


@pytest.mark.parametrize(("flags", "message"), FLAG_CASES)
def test_bad_flags_are_one_line_usage_errors(tmp_path, flags, message):
    path = _make(tmp_path, "ok")
    result = CliRunner().invoke(train_main, [str(path), "--out", str(tmp_path / "out"), *flags])
    assert result.exit_code == 2
    assert result.stderr == f"linreg-train: error: {message}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("case", "flags", "message"), CASES,
                         ids=[f"{c}{'-' + '-'.join(f) if f else ''}" for c, f, _ in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, case, flags, message):
    path = _make(tmp_path, case)
    out = tmp_path / "out"
    result = CliRunner().invoke(train_main, [str(path), "--out", str(out), "-q", *flags])
    assert result.exit_code == 1, result.output
    assert result.stderr == f"linreg-train: error: {message.format(p=path)}\n"
    assert not out.exists()
    assert sorted(q.name for q in tmp_path.iterdir() if q.name.startswith(".")) == []


def test_corrupt_parquet(tmp_path):
    path = _make(tmp_path, "corrupt-parquet")
    result = CliRunner().invoke(train_main, [str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"linreg-train: error: {path}: not a readable Parquet file")
    assert result.stderr.count("\n") == 1


def test_bad_flag_value_is_one_line_with_exit_2(tmp_path):
    path = _make(tmp_path, "ok")
    result = CliRunner().invoke(train_main, [str(path), "--lr", "abc"])
    assert result.exit_code == 2
    assert result.stderr == ("linreg-train: error: Invalid value for '--lr': 'abc' is not a "
                             "number\n")


def test_existing_output_needs_force(tmp_path):
    path = _make(tmp_path, "ok")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(train_main, [str(path), "--out", str(out), "-q"])
    assert result.exit_code == 1
    assert result.stderr == f"linreg-train: error: {out}: already exists; pass --force to overwrite it\n"
    assert (out / "keep.txt").read_text() == "mine"
    # --force replaces only what linreg wrote: a folder of notes is never deleted.
    result = CliRunner().invoke(train_main, [str(path), "--out", str(out), "-q", "--force"])
    assert result.exit_code == 1
    assert result.stderr == (f"linreg-train: error: {out}: not a linreg model folder (it holds "
                             "keep.txt); --force replaces only what linreg wrote: choose "
                             "another --out\n")
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()  # an empty folder may be replaced, and then its model folder
    for _ in range(2):
        result = CliRunner().invoke(train_main, [str(path), "--out", str(out), "-q", "--force"])
        assert result.exit_code == 0, result.stderr
        assert (out / "model.pt").exists()


@pytest.mark.parametrize("case", ["non-numeric", "missing"])
def test_real_subprocess_has_no_traceback(tmp_path, case):
    path = _make(tmp_path, case)
    res = run_script("linreg-train", path, "--out", tmp_path / "out")
    assert res.returncode == 1
    assert b"Traceback" not in res.stderr
    assert res.stderr.decode().count("\n") == 1
    assert res.stdout == b""
    assert not (tmp_path / "out").exists()
