"""A new user's first hour: no dead ends (issue #9)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from serve.cli import predict_main
from tests.conftest import run_script, write_csv
from tests.serve.conftest import MODELS, expected

ONE = MODELS / "one"  # x -> y


def test_keep_the_actual_target_beside_its_prediction(tmp_path):
    src = write_csv(tmp_path / "in.csv", ["id", "x", "y"], [["a", 1, 2.5], ["b", 2, 4.5]])
    res = CliRunner().invoke(predict_main, [str(ONE), str(src), "--keep", "id,y"])
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "id,y,y_pred"  # plain header, the prediction suffixed
    pred = expected(ONE, [[1], [2]])[:, 0]
    assert [float(ln.split(",")[2]) for ln in lines[1:]] == pytest.approx(pred, rel=1e-6)
    res = CliRunner().invoke(predict_main, [str(ONE), str(src), "--keep", "y",
                                            "--pred-suffix", "_hat"])
    assert res.stdout.splitlines()[0] == "y,y_hat"
    res = CliRunner().invoke(predict_main, [str(ONE), str(src), "--keep", "id", "--keep", "y",
                                            "--pred-suffix", ""])
    assert res.exit_code == 1
    assert res.stderr == ("linreg-predict: error: --keep y: the predictions have a column of that "
                          "name; pick another --pred-suffix\n")


@pytest.mark.parametrize(("stdin", "message"), [
    (b'{"x": 1}\n{"x": 2}\n', "<stdin>: the first line looks like JSON, not a CSV header; for "
     "one JSON object per line use --input-format jsonl (or a .jsonl file)"),
    (b"1.5\n2.5\n", "<stdin>: the first line holds numbers, not column names; add a header row "
     "naming the columns (e.g. x0...)"),
])
def test_stdin_that_is_not_csv_gets_a_hint(stdin, message):
    res = CliRunner().invoke(predict_main, [str(ONE), "-"], input=stdin)
    assert (res.exit_code, res.stderr) == (1, f"linreg-predict: error: {message}\n")
    res = CliRunner().invoke(predict_main, [str(ONE), "-", "--input-format", "jsonl"],
                             input=b'{"x": 1}\n{"x": 2}\n')
    assert res.exit_code == 0 and res.stdout.splitlines()[0] == "y"


def test_a_training_csv_without_a_header_gets_a_hint(tmp_path):
    pytest.importorskip("torch")
    data = tmp_path / "d.csv"
    data.write_text("1,2\n2,4\n3,6\n")
    res = run_script("linreg-train", data, "--out", tmp_path / "m")
    assert res.returncode == 1
    assert res.stderr.decode() == (f"linreg-train: error: {data}: the first line holds numbers, "
                                   "not column names; add a header row naming the columns (e.g. "
                                   "x0,x1...)\n")


def test_exclude_drops_columns_from_the_default_features(tmp_path):
    pytest.importorskip("torch")
    data = write_csv(tmp_path / "d.csv", ["id", "x", "note", "y"],
                     [[7, 1, "a", 2], [8, 2, "b", 4], [9, 3, "c", 6], [10, 4, "d", 8]])
    res = run_script("linreg-train", data, "--exclude", "id,note", "--solver", "lstsq",
                     "--out", tmp_path / "m", "-q")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "m" / "model.json").read_text())["features"] == ["x"]


def test_the_export_line_reads_as_the_check_that_passed(tmp_path):
    pytest.importorskip("torch")
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[1, 2], [2, 4], [3, 6]])
    assert run_script("linreg-train", data, "--out", tmp_path / "m", "-q").returncode == 0
    res = run_script("linreg-export", tmp_path / "m", "--format", "onnx")
    line = res.stdout.decode().strip()
    assert line.startswith(f"{tmp_path / 'm' / 'model.onnx'}: onnx agrees with the trained model: "
                           "relative error ")
    assert "<= tolerance 1e-05 over 100,257 rows (largest absolute difference " in line
