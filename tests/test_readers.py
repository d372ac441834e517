"""One reader, one answer: linreg-train and linreg-predict read every cell and every file the
same way, and every bad file ends in one line naming the file (and row/column), never a
traceback."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from serve.cli import predict_main
from tests.conftest import run_script
from tests.serve.conftest import MODELS

ONE = MODELS / "one"  # x -> y
MULTI = MODELS / "multi"  # x0..x3 -> y0, y1
torch = pytest.importorskip("torch", reason="the training side needs torch")
from trainer.cli import synth_main, train_main  # noqa: E402


def _train(*args) -> tuple[int, str]:
    res = CliRunner().invoke(train_main, [*map(str, args), "-q"])
    return res.exit_code, res.stderr


def _predict(*args, input: bytes | None = None) -> tuple[int, str]:
    res = CliRunner().invoke(predict_main, [*map(str, args), "-q"], input=input)
    return res.exit_code, res.stderr


def _one_line(code_err: tuple[int, str], code: int = 1) -> str:
    code_got, err = code_err
    assert code_got == code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n").split(": error: ", 1)[1]


# ------------------------------------------------------------------ the same cell, the same way

@pytest.mark.parametrize("cell", ["1_000", "0x1F", "true", '"1,5"', "１２", "1d5", "--1"])
def test_a_cell_that_is_not_a_number_is_refused_by_both(tmp_path, cell):
    train_csv = tmp_path / "t.csv"
    train_csv.write_text(f"x,y\n1,2\n{cell},4\n3,6\n")
    predict_csv = tmp_path / "p.csv"
    predict_csv.write_text(f"x\n1\n{cell}\n3\n")
    shown = cell.strip('"')
    # Training: the column becomes categorical (tabular data), with a warning naming the cell.
    res = CliRunner().invoke(train_main, [str(train_csv), "--out", str(tmp_path / "m"),
                                          "--solver", "lstsq", "--no-bias"])
    assert res.exit_code == 0, res.stderr
    assert f"linreg-train: warning: {train_csv}: column 'x' is categorical because of text " \
        f"cells, though 2 of its 3 values are numbers (row 2 holds {shown!r}); if it is " \
        "numeric, clean those cells; to keep it categorical, say --categorical x\n" \
        in res.stderr
    assert _one_line(_predict(ONE, predict_csv, "-o", tmp_path / "o.csv")) == \
        f"{predict_csv}: row 2, column 'x': {shown!r} is not a number"
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("cell", [" 12 ", "+3", ".5", "5.", "1e2", "-0"])
def test_a_number_is_read_by_both(tmp_path, cell):
    train_csv = tmp_path / "t.csv"
    train_csv.write_text(f"x,y\n1,2\n{cell},4\n3,6\n4,8\n")
    predict_csv = tmp_path / "p.csv"
    predict_csv.write_text(f"x\n{cell}\n")
    assert _train(train_csv, "--out", tmp_path / "m", "--solver", "lstsq")[0] == 0
    assert _predict(ONE, predict_csv, "-o", tmp_path / "o.csv")[0] == 0


def test_a_bad_cell_on_stdin_names_its_row():
    lines = "x0,x1,x2,x3\n" + "1,2,3,4\n" * 70_000 + "1,2,oops,4\n" + "1,2,3,4\n" * 10
    assert _one_line(_predict(MULTI, "-", input=lines.encode())) == \
        "<stdin>: row 70001, column 'x2': 'oops' is not a number"


# ------------------------------------------------------------------ duplicate column names

def test_duplicate_columns_are_refused_everywhere(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("x0,x1,x2,x3,x3\n1,2,3,4,5\n")
    msg = "column 'x3' appears twice; column names must be unique"
    assert _one_line(_predict(MULTI, csv)) == f"{csv}: {msg}"
    assert _one_line(_train(csv, "--out", tmp_path / "m")) == f"{csv}: {msg}"
    pqf = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1.0])] * 5, ["x0", "x1", "x2", "x3", "x3"]),
                   pqf)
    assert _one_line(_predict(MULTI, pqf)) == f"{pqf}: {msg}"
    assert _one_line(_train(pqf, "--out", tmp_path / "m")) == f"{pqf}: {msg}"


@pytest.mark.parametrize(("names", "dup"), [(["a", "a"], "a"), (["a", "y"], "y")])
def test_npz_names_that_repeat_or_name_the_target_are_refused(tmp_path, names, dup):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.normal(size=(10, 2)), y=rng.normal(size=10),
             feature_names=np.array(names), target_names=np.array(["y"]))
    assert _one_line(_train(path, "--out", tmp_path / "m")) == \
        f"{path}: name (in feature_names and target_names) {dup!r} appears twice; column names " \
        "must be unique"


# ------------------------------------------------------------------ files that used to crash

def _npy_with_header(path: Path, shape: tuple, data: bytes = b"", pad: int = 0) -> Path:
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1") + b" " * pad
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data
                     if len(text) < 65536 else b"\x93NUMPY\x02\x00" +
                     len(text).to_bytes(4, "little") + text + data)
    return path


BAD_FILES = {
    "header-only-no-newline.csv": (lambda p: p.write_text("x0,x1,x2,x3"),
                                   "{p}: has a header but no data rows"),
    "latin1.csv": (lambda p: p.write_bytes("x0,x1,x2,x3\n1,2,3,\xe9\n".encode("latin-1")),
                   "{p}: line 2 is not UTF-8 text (byte 0xe9); save the file as UTF-8"),
    "latin1-header.csv": (lambda p: p.write_bytes("x\xe9,y\n1,2\n".encode("latin-1")),
                          "{p}: line 1 is not UTF-8 text (byte 0xe9); save the file as UTF-8"),
    "utf16.csv": (lambda p: p.write_bytes("x0,x1,x2,x3\n1,2,3,4\n".encode("utf-16")),
                  "{p}: is UTF-16 text; save it as UTF-8"),
    "gzipped.csv": (lambda p: p.write_bytes(gzip.compress(b"x0,x1,x2,x3\n1,2,3,4\n")),
                    "{p}: is gzip-compressed; decompress it first (gunzip)"),
    "long-line.csv": (lambda p: p.write_bytes(b"x0,x1,x2,x3\n1,2,3," + b"4" * (5 << 20) + b"\n"),
                      "{p}: a line after row 0 is longer than 1,048,576 bytes; lines that long "
                      "are not supported"),
    "complex.npy": (lambda p: np.save(p, np.ones((3, 4), dtype=complex)),
                    "{p}: holds complex numbers; only real numbers are accepted"),
    "truncated.npy": (lambda p: p.write_bytes(_npy_bytes(np.ones((100, 4)))[:500]),
                      "{p}: the header says shape (100, 4) (3,200 bytes of data) but the file "
                      "holds 372; the file is truncated or damaged"),
    "claims-1e11-rows.npy": (lambda p: _npy_with_header(p, (10**11, 4), b"\0" * 64),
                             "{p}: the header says shape (100000000000, 4) (3,200,000,000,000 "
                             "bytes of data) but the file holds 64; the file is truncated or "
                             "damaged"),
    "huge-header.npy": (lambda p: _npy_with_header(p, (1, 4), b"\0" * 32, pad=200_000),
                        "{p}: not a readable .npy array (Header info length"),
    "objects.npy": (lambda p: np.save(p, np.array([[1, "a"]], dtype=object), allow_pickle=True),
                    "{p}: holds Python objects; only numeric arrays are accepted"),
}


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files_are_one_line_in_predict(tmp_path, name):
    make, message = BAD_FILES[name]
    path = tmp_path / name
    make(path)
    got = _one_line(_predict(MULTI, path, "-o", tmp_path / "out.csv"))
    assert got.startswith(message.format(p=path)), got
    assert not (tmp_path / "out.csv").exists()


TRAIN_BAD_FILES = {
    "header-only-no-newline.csv": "{p}: has a header but no data rows",
    "latin1-header.csv": "{p}: line 1 is not UTF-8 text (byte 0xe9); save the file as UTF-8",
    "utf16.csv": "{p}: is UTF-16 text; save it as UTF-8",
    "gzipped.csv": "{p}: is gzip-compressed; decompress it first (gunzip)",
    "complex.npy": "{p}: holds complex numbers; only real numbers are accepted",
    "claims-1e11-rows.npy": "{p}: the header says shape (100000000000, 4)",
    "objects.npy": "{p}: holds Python objects; only numeric arrays are accepted",
}


@pytest.mark.parametrize("name", TRAIN_BAD_FILES)
def test_bad_files_are_one_line_in_train(tmp_path, name):
    path = tmp_path / name
    BAD_FILES[name][0](path)
    got = _one_line(_train(path, "--out", tmp_path / "m"))
    assert got.startswith(TRAIN_BAD_FILES[name].format(p=path)), got
    assert not (tmp_path / "m").exists()


def test_a_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, X=np.array([[1, "a"]], dtype=object), y=np.ones(1))
    assert _one_line(_train(path, "--out", tmp_path / "m")) == \
        f"{path}[X]: holds Python objects; only numeric arrays are accepted"


def test_an_npz_with_a_3d_x_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, X=np.ones((4, 2, 2)), y=np.ones(4))
    assert _one_line(_train(path, "--out", tmp_path / "m")) == \
        f"{path}: X has shape (4, 2, 2); expected 2-D (rows x columns)"


def test_an_npz_member_that_lies_about_its_size_is_refused(tmp_path):
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X.npy", _npy_with_header(tmp_path / "x.npy", (10**11, 2)).read_bytes())
        z.writestr("y.npy", _npy_bytes(np.ones(3)))
    assert _one_line(_train(path, "--out", tmp_path / "m")).startswith(
        f"{path}[X]: the header says shape (100000000000, 2)")


@pytest.mark.parametrize(("line", "message"), [
    (b'{"x0": ' + b"1" * 5000 + b', "x1": 1, "x2": 1, "x3": 1}',
     "row 1, column 'x0': inf is not allowed"),
    (b"[" * 100_000 + b"]" * 100_000, "line 1: JSON nested too deeply"),
    (b'{"x0": "\xff"}', "line 1: not UTF-8 text (byte 0xff at offset 8)"),
    (b'{"x0": 1, "x1": 1, "x2": 1, "x3": "1"}', "line 1: '1' is not a number"),
    (b'[1, 2, 3, [4]]', "line 1: [4] is not a number"),
])
def test_json_lines_that_used_to_crash(tmp_path, line, message):
    path = tmp_path / "in.jsonl"
    path.write_bytes(line + b"\n")
    assert _one_line(_predict(MULTI, path)).startswith(f"{path}: {message}")


def test_a_csv_with_100000_columns_is_refused_quickly(tmp_path):
    path = tmp_path / "wide.csv"
    names = [f"c{i}" for i in range(100_000)]
    path.write_text(",".join(names + ["y"]) + "\n" + ",".join(["1"] * 100_000 + ["x"]) + "\n")
    res = run_script("linreg-train", path, "--out", tmp_path / "m", timeout=60)
    assert res.returncode == 1
    assert res.stderr.decode() == f"linreg-train: error: {path}: row 1, column 'y': 'x' is not a " \
        "number; 'y' is the target: the last column, by default (choose the target with " \
        "--target NAME)\n"


def test_synth_refuses_more_rows_than_memory_before_allocating(tmp_path):
    res = CliRunner().invoke(synth_main, [str(tmp_path / "d.csv"), "--samples", str(10**12)])
    assert res.exit_code == 1
    assert res.stderr.startswith("linreg-synth: error: --samples 1,000,000,000,000 x 2 columns "
                                 "needs about 44,703.5 GiB of memory; this machine has ")
    assert not (tmp_path / "d.csv").exists()


@pytest.mark.parametrize(("exporter", "says"), [
    ("linreg", "knows opsets up to "), ("torch", "wrote opset 18 instead; choose an opset it "
                                                "supports")])
def test_export_refuses_an_opset_it_cannot_write(tmp_path, exporter, says):
    data = tmp_path / "d.csv"
    data.write_text("x,y\n1,2\n2,4\n3,6\n")
    assert _train(data, "--out", tmp_path / "m")[0] == 0
    from trainer.cli import export_main
    res = CliRunner().invoke(export_main, [str(tmp_path / "m"), "--opset", "99",
                                           "--onnx-exporter", exporter])
    assert res.exit_code == 1
    assert res.stderr.startswith("linreg-export: error: --opset 99: ")
    assert says in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "m" / "model.onnx").exists()
    assert json.loads((tmp_path / "m" / "model.json").read_text())["exports"] == {}


def test_a_prediction_that_overflows_names_its_row_in_the_file(tmp_path):
    src = tmp_path / "big.csv"
    src.write_text("x0,x1,x2,x3\n1,2,3,4\n3e38,3e38,3e38,3e38\n")
    assert _one_line(_predict(MULTI, src, "-o", tmp_path / "o.csv", "--batch-rows", "1")) == \
        f"{src}: row 2: the prediction for 'y0' overflows float32 (inf); the inputs are too " \
        "large for this model"
    assert not (tmp_path / "o.csv").exists()


def test_a_bad_cell_early_in_a_big_csv_is_named(tmp_path):
    # The locator re-reads some megabytes after the failing block: they end inside a line,
    # which once read as a row with too few fields and hid the bad cell.
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write("x0,x1,x2,x3\n1.5,2,3,4\n1.5,2,oops,4\n")
        f.write("1.5,2,3,4\n" * 1_000_000)
    assert _one_line(_predict(MULTI, path, "-o", tmp_path / "o.csv")) == \
        f"{path}: row 2, column 'x2': 'oops' is not a number"
