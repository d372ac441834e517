"""linreg-predict: every input and output format, streaming in chunks, and bad rows."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from serve.cli import predict_main
from tests.conftest import run_script
from tests.serve.conftest import expected


@pytest.fixture
def rows(rng):
    return rng.normal(0, 5, size=(1000, 4))


def _table(rows):
    cols = {"id": [f"r{i}" for i in range(len(rows))]}
    cols.update({f"x{j}": rows[:, j] for j in (3, 1, 0, 2)})  # not in model order on purpose
    return pa.table(cols)


def _invoke(*args):
    return CliRunner().invoke(predict_main, [str(a) for a in args])


@pytest.mark.parametrize("out_ext", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("in_ext", ["csv", "parquet", "jsonl"])
def test_formats_round_trip_with_kept_ids(tmp_path, multi, rows, in_ext, out_ext):
    src, out = tmp_path / f"in.{in_ext}", tmp_path / f"out.{out_ext}"
    table = _table(rows)
    if in_ext == "csv":
        pacsv.write_csv(table, src)
    elif in_ext == "parquet":
        pq.write_table(table, src)
    else:
        src.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    res = _invoke(multi, src, "-o", out, "--keep", "id", "--batch-rows", "128", "-q")
    assert res.exit_code == 0, res.stderr
    if out_ext == "csv":
        got = pacsv.read_csv(out)
    elif out_ext == "parquet":
        got = pq.read_table(out)
    else:
        got = pa.Table.from_pylist([json.loads(line) for line in out.read_text().splitlines()])
    assert got.column_names == ["id", "y0", "y1"]
    assert got["id"].to_pylist() == table["id"].to_pylist()
    pred = np.column_stack([got["y0"].to_numpy(), got["y1"].to_numpy()])
    np.testing.assert_allclose(pred, expected(multi, rows), rtol=1e-5, atol=1e-4)


def test_npy_in_and_out_and_chunking_changes_nothing(tmp_path, multi, rows):
    np.save(tmp_path / "in.npy", rows)
    for batch in ("7", "65536"):
        res = _invoke(multi / "model.onnx", tmp_path / "in.npy", "-o", tmp_path / f"o{batch}.npy",
                      "--batch-rows", batch)
        assert res.exit_code == 0, res.stderr
    a, b = np.load(tmp_path / "o7.npy"), np.load(tmp_path / "o65536.npy")
    assert a.shape == (1000, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, expected(multi, rows), rtol=1e-5, atol=1e-4)


def test_stdin_to_stdout_through_the_real_script(tmp_path, multi, rows):
    buf = pa.BufferOutputStream()
    pacsv.write_csv(_table(rows[:5]), buf)
    res = run_script("linreg-predict", multi, "-", "--output-format", "jsonl",
                     input=buf.getvalue().to_pybytes())
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.decode().splitlines()]
    assert [list(x) for x in lines] == [["y0", "y1"]] * 5
    np.testing.assert_allclose([[x["y0"], x["y1"]] for x in lines], expected(multi, rows[:5]),
                               rtol=1e-5)


def _csv(path, header, lines):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in lines))
    return path


def _good_lines(n):
    return [[i, i + 1, i + 2, i + 3] for i in range(n)]


@pytest.mark.parametrize(("lines", "message"), [
    (_good_lines(3000) + [[1, 2, "x", 4]] + _good_lines(5),
     "{p}: row 3001, column 'x2': 'x' is not a number"),
    (_good_lines(10) + [[1, 2, "", 4]], "{p}: row 11, column 'x2': missing value"),
    (_good_lines(10) + [[1, "nan", 3, 4]],
     "{p}: row 11, column 'x1': NaN is not allowed (clean or drop the row)"),
    (_good_lines(10) + [[1, 2, 3]], "{p}: row 11 has 3 fields but the header has 4"),
])
def test_a_bad_row_is_named_and_nothing_is_written(tmp_path, multi, lines, message):
    src = _csv(tmp_path / "in.csv", ["x0", "x1", "x2", "x3"], lines)
    out = tmp_path / "out.csv"
    res = _invoke(multi, src, "-o", out, "--batch-rows", "100")
    assert res.exit_code == 1
    assert res.stderr == f"linreg-predict: error: {message.format(p=src)}\n"
    assert list(tmp_path.iterdir()) == [src]  # no output, no temporary left


@pytest.mark.parametrize(("args", "message"), [
    (["{src}", "--keep", "nope"], "{src}: --keep nope: no such column; the columns are x0, x1, "
     "x2, x3"),
    (["{part}"], "{part}: missing feature column(s) x2; the model needs x0, x1, x2, x3"),
    (["{tmp}/none.csv"], "{tmp}/none.csv: no such file"),
    (["{tmp}/in.xlsx"], "{tmp}/in.xlsx: unknown file type '.xlsx'; use one of .csv, .jsonl, "
     ".ndjson, .npy, .parquet, .pq"),
    (["{src}", "-o", "{tmp}/part.csv"], "{tmp}/part.csv: already exists; pass --force to "
     "overwrite it"),
    (["{src}", "-o", "{src}", "--force"], "{src}: is the input file; write the predictions "
     "elsewhere"),
    (["{src}", "-o", "{tmp}/no/such/out.csv"], "{tmp}/no/such/out.csv: the folder {tmp}/no/such "
     "does not exist"),
    (["{header}", "-o", "{tmp}/o.csv"], "{header}: has a header but no data rows"),
])
def test_usage_errors(tmp_path, multi, args, message):
    src = _csv(tmp_path / "in.csv", ["x0", "x1", "x2", "x3"], [[1, 2, 3, 4]])
    part = _csv(tmp_path / "part.csv", ["x0", "x1", "x3"], [[1, 2, 3]])
    header = _csv(tmp_path / "header.csv", ["x0", "x1", "x2", "x3"], [])
    names = {"src": src, "part": part, "tmp": tmp_path, "header": header}
    res = _invoke(multi, *[a.format(**names) for a in args])
    assert res.exit_code == 1
    assert res.stderr == f"linreg-predict: error: {message.format(**names)}\n"
    assert not (tmp_path / "o.csv").exists()


def test_jsonl_errors_name_the_line(tmp_path, multi):
    src = tmp_path / "in.jsonl"
    src.write_text('{"x0": 1, "x1": 2, "x2": 3, "x3": 4}\n[1, 2, 3, "a"]\n')
    res = _invoke(multi, src, "-o", tmp_path / "o.csv")
    assert res.stderr == f"linreg-predict: error: {src}: line 2: 'a' is not a number\n"
    assert not (tmp_path / "o.csv").exists()


def test_missing_model_is_one_line(tmp_path):
    res = run_script("linreg-predict", tmp_path / "nomodel", tmp_path / "x.csv")
    assert res.returncode == 1
    assert res.stderr.decode() == f"linreg-predict: error: {tmp_path}/nomodel: no such model " \
                                  "file or folder\n"


def test_non_finite_values_in_npy_and_jsonl_are_named(tmp_path, multi):
    a = np.zeros((10, 4))
    a[7, 2] = np.nan
    np.save(tmp_path / "a.npy", a)
    res = _invoke(multi, tmp_path / "a.npy", "-o", tmp_path / "o.npy", "--batch-rows", "3")
    assert res.stderr == f"linreg-predict: error: {tmp_path}/a.npy: row 8, column 'x2': NaN is " \
                         "not allowed (clean or drop the row)\n"
    (tmp_path / "a.jsonl").write_text("[1, 2, 3, 4]\n[1, 2, 1e39, 4]\n")
    res = _invoke(multi, tmp_path / "a.jsonl", "-o", tmp_path / "o.csv")
    assert res.stderr == f"linreg-predict: error: {tmp_path}/a.jsonl: row 2, column 'x2': inf " \
                         "is not allowed (or a value beyond float32's ±3.4e38; clean or drop " \
                         "the row)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.npy"]


# ------------------------------------------------------------------ folders of parts

def _parts(folder, rows, n_parts=3, ext="parquet"):
    folder.mkdir()
    table = _table(rows)
    bounds = np.linspace(0, len(rows), n_parts + 1).astype(int)
    for i in range(n_parts):
        part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        path = folder / f"part-{i}.{ext}"
        pq.write_table(part, path) if ext == "parquet" else pacsv.write_csv(part, path)
    return bounds


def test_a_folder_of_parts_gives_a_folder_of_predictions(tmp_path, multi, rows):
    bounds = _parts(tmp_path / "in", rows)
    (tmp_path / "in" / "_SUCCESS").write_text("")  # a Spark-style marker is not a part
    res = _invoke(multi, tmp_path / "in", "-o", tmp_path / "out", "--keep", "id", "-q")
    assert res.exit_code == 0, res.output
    marker = json.loads((tmp_path / "out" / "_linreg_predictions.json").read_text())
    assert marker["rows"] == 1000 and [p["output"] for p in marker["parts"]] == [
        "part-0.parquet", "part-1.parquet", "part-2.parquet"]
    for i in range(3):
        got = pq.read_table(tmp_path / "out" / f"part-{i}.parquet")
        lo, hi = bounds[i], bounds[i + 1]
        assert got.column("id").to_pylist() == [f"r{r}" for r in range(lo, hi)]  # order kept
        np.testing.assert_allclose(np.column_stack([got.column("y0"), got.column("y1")]),
                                   expected(multi, rows[lo:hi]), rtol=1e-5, atol=1e-4)


def test_a_glob_of_csv_parts_into_parquet(tmp_path, multi, rows):
    _parts(tmp_path / "in", rows, ext="csv")
    res = _invoke(multi, str(tmp_path / "in" / "part-*.csv"), "-o", tmp_path / "out",
                  "--output-format", "parquet", "-q")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_linreg_predictions.json", "part-0.parquet", "part-1.parquet", "part-2.parquet"]


def test_a_bad_row_in_one_part_leaves_no_output_folder(tmp_path, multi, rows):
    _parts(tmp_path / "in", rows, ext="csv")
    bad = tmp_path / "in" / "part-1.csv"
    lines = bad.read_text().splitlines()
    lines[5] = lines[5].replace(lines[5].split(",")[1], "oops", 1)
    bad.write_text("\n".join(lines) + "\n")
    res = _invoke(multi, tmp_path / "in", "-o", tmp_path / "out", "-q")
    assert res.exit_code == 1
    assert res.stderr.startswith(f"linreg-predict: error: {bad}: row 5, column ")
    assert "'oops' is not a number" in res.stderr and res.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no temporary


def test_force_replaces_only_a_predictions_folder(tmp_path, multi, rows):
    _parts(tmp_path / "in", rows)
    assert _invoke(multi, tmp_path / "in", "-o", tmp_path / "out", "-q").exit_code == 0
    res = _invoke(multi, tmp_path / "in", "-o", tmp_path / "out", "-q")
    assert res.exit_code == 1 and "already exists; pass --force" in res.stderr
    assert _invoke(multi, tmp_path / "in", "-o", tmp_path / "out", "--force", "-q").exit_code == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    res = _invoke(multi, tmp_path / "in", "-o", tmp_path / "mine", "--force", "-q")
    assert res.exit_code == 1
    assert res.stderr == (f"linreg-predict: error: {tmp_path}/mine: not a folder of "
                          "linreg-predict's predictions; --force replaces only those: choose "
                          "another -o\n")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_folder_needs_an_output_folder(tmp_path, multi, rows):
    _parts(tmp_path / "in", rows)
    res = _invoke(multi, tmp_path / "in")
    assert res.exit_code == 2 and "give -o an output folder" in res.stderr
