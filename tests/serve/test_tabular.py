"""A tabular model (a categorical column, a numeric column with blanks) in every Python consumer:
``Predictor``, bare onnxruntime on raw values, ``linreg-predict`` and ``linreg-serve`` give
numpy's least squares on the treatment-coded, mean-filled matrix. Runs without torch: the
model is the committed fixture (``tests/fixtures/make_models.py``) trained on
``tests/fixtures/tabular.csv`` with ``--solver lstsq --impute mean --dtype float64``."""

from __future__ import annotations

import csv
import json
import math
import struct
import subprocess

import numpy as np
import pytest

from serve import Predictor
from serve.core.graph import check_graph
from tests.conftest import BIN
from tests.serve.conftest import MODELS

TAB = MODELS / "tabular"
CSV = MODELS.parent / "tabular.csv"
LEVELS = ["Lyon", "Paris", "Rome"]  # Lyon, first in sorted order, is the reference

# New raw rows: a blank as None, NaN and "" (all the same missing value), every level.
NEW = [{"city": "Paris", "x1": None, "x2": 0.5},
       {"city": "Rome", "x1": 12.0, "x2": -1.0},
       {"city": "Lyon", "x1": math.nan, "x2": 2.0},
       {"city": "Paris", "x1": "", "x2": 0.0},
       {"city": "Lyon", "x1": "7.5", "x2": "1"}]


def _number(v) -> float:
    return math.nan if v is None or v == "" else float(v)


def _design(rows: list[dict], fill: float) -> np.ndarray:
    """Treatment coding (reference Lyon) and the mean fill, written out by hand."""
    x1 = np.array([_number(r["x1"]) for r in rows])
    return np.column_stack([np.ones(len(rows)),
                            [r["city"] == "Paris" for r in rows],
                            [r["city"] == "Rome" for r in rows],
                            np.where(np.isnan(x1), fill, x1),
                            [_number(r["x2"]) for r in rows]]).astype(np.float64)


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, float]:
    """numpy's least squares on the training table: (beta, fill of x1)."""
    with open(CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    fill = float(np.nanmean([_number(r["x1"]) for r in rows]))
    beta = np.linalg.lstsq(_design(rows, fill), np.array([float(r["y"]) for r in rows]),
                           rcond=None)[0]
    return beta, fill


@pytest.fixture(scope="module")
def want(reference) -> np.ndarray:
    beta, fill = reference
    return (_design(NEW, fill) @ beta).reshape(-1, 1)


def close(got, want) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64).reshape(want.shape), want,
                               rtol=1e-6)


def test_the_manifest_records_each_column(reference):
    m = json.loads((TAB / "model.json").read_text())
    beta, fill = reference
    city, x1, x2 = m["columns"]
    assert city == {"name": "city", "kind": "categorical", "levels": LEVELS,
                    "reference": "Lyon", "unknown": "error", "blanks": 0}
    assert x1["kind"] == "numeric" and x1["fill"] == pytest.approx(fill, rel=1e-12)
    assert x1["indicator"] is False and x1["blanks"] > 0
    assert x2 == {"name": "x2", "kind": "numeric", "fill": pytest.approx(x2["fill"]),
                  "indicator": False, "blanks": 0}
    assert m["features"] == ["city[T.Paris]", "city[T.Rome]", "x1", "x2"]
    np.testing.assert_allclose([*m["model"]["intercept_"], *m["model"]["coef_"][0]], beta,
                               rtol=1e-9)


@pytest.mark.parametrize("shape", ["records", "columns", "rows", "dataframe", "nullable",
                                   "arrow"])
def test_predictor_takes_raw_values_in_every_shape(want, shape):
    p = Predictor.load(TAB)
    assert p.feature_names == ["city", "x1", "x2"] and p.columns is not None
    names = p.feature_names
    if shape == "records":
        X = NEW
    elif shape == "columns":
        X = {n: [r[n] for r in NEW] for n in names}
    elif shape == "rows":
        X = [[r[n] for n in names] for r in NEW]
    elif shape == "nullable":  # pandas' nullable dtypes: a blank is pd.NA
        pd = pytest.importorskip("pandas")
        X = pd.DataFrame({"city": pd.array([r["city"] for r in NEW], dtype="string"),
                          "x1": pd.array([None if math.isnan(_number(r["x1"])) else
                                          _number(r["x1"]) for r in NEW], dtype="Float64"),
                          "x2": pd.array([float(r["x2"]) for r in NEW], dtype="Float64")})
    elif shape == "dataframe":
        pd = pytest.importorskip("pandas")
        X = pd.DataFrame({"city": [r["city"] for r in NEW],
                          "x1": [_number(r["x1"]) for r in NEW],
                          "x2": [float(r["x2"]) for r in NEW]})
    else:
        pa = pytest.importorskip("pyarrow")
        X = pa.table({"city": pa.array([r["city"] for r in NEW]).dictionary_encode(),
                      "x1": pa.array([None if math.isnan(_number(r["x1"])) else
                                      _number(r["x1"]) for r in NEW]),
                      "x2": [float(r["x2"]) for r in NEW]})
    close(p.predict(X), want)


def test_bare_onnxruntime_on_raw_values(want):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(TAB / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in sess.get_inputs()] == [
        ("city", "tensor(string)", ["batch", 1]), ("x1", "tensor(double)", ["batch", 1]),
        ("x2", "tensor(double)", ["batch", 1])]
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["feature_names"]) == ["city", "x1", "x2"]
    assert json.loads(meta["linreg.columns"])[0]["levels"] == LEVELS
    feeds = {"city": np.array([[r["city"]] for r in NEW], dtype=object),
             "x1": np.array([[_number(r["x1"])] for r in NEW]),
             "x2": np.array([[float(r["x2"])] for r in NEW])}
    close(sess.run(["prediction"], feeds)[0], want)
    # An unseen level or a categorical blank comes out NaN: the graph never guesses.
    feeds["city"] = np.array([["Nice"]] + [["Lyon"]] * (len(NEW) - 1), dtype=object)
    out = sess.run(["prediction"], feeds)[0]
    assert np.isnan(out[0, 0]) and np.isfinite(out[1:]).all()


def test_the_graph_passes_the_runtime_check():
    facts = check_graph((TAB / "model.onnx").read_bytes(), "model.onnx")
    assert facts.opset == 19
    assert facts.ops <= {"Equal", "Cast", "IsNaN", "Where", "Concat", "Gemm", "MatMul", "Add"}


@pytest.mark.parametrize("bad, message", [
    ({"city": "Nice", "x1": 1, "x2": 2},
     "row 2, column 'city': level 'Nice' was not seen in training (known: 'Lyon', 'Paris', "
     "'Rome'); --on-unknown reference predicts it as the reference level, --on-unknown nan "
     "gives the row NaN"),
    ({"city": None, "x1": 1, "x2": 2},
     "row 2, column 'city': missing value; no blanks were seen here in training; --on-unknown "
     "reference predicts it as the reference level, --on-unknown nan gives the row NaN"),
    ({"city": "Rome", "x1": "abc", "x2": 2}, "row 2, column 'x1': 'abc' is not a number"),
    ({"city": "Rome", "x1": 1, "x2": math.inf},
     "row 2, column 'x2': inf is not allowed (clean or drop the row)"),
    ({"city": "Rome", "x1": 1, "x2": True}, "row 2, column 'x2': true is not a number"),
    ({"city": ["Rome"], "x1": 1, "x2": 2},
     "row 2, column 'city': [\"Rome\"] is not a level (send text or a number)"),
])
def test_a_bad_cell_is_named(bad, message):
    from serve.runtime.predictor import PredictionInputError

    with pytest.raises(PredictionInputError) as e:
        Predictor.load(TAB).predict([NEW[0], bad])
    assert str(e.value) == message


def _predict_cli(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "linreg-predict"), str(TAB), *args], input=input,
                          capture_output=True, timeout=60)


def test_linreg_predict_csv_parquet_and_jsonl(tmp_path, want):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    x1 = [None if math.isnan(_number(r["x1"])) else _number(r["x1"]) for r in NEW]
    lines = ["id,city,x1,x2"] + [f"{i},{r['city']},{'' if x1[i] is None else x1[i]},{r['x2']}"
                                 for i, r in enumerate(NEW)]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.table({"id": range(len(NEW)),
                             "city": pa.array([r["city"] for r in NEW]).dictionary_encode(),
                             "x1": pa.array(x1, pa.float64()),
                             "x2": [float(r["x2"]) for r in NEW]}), tmp_path / "in.parquet")
    (tmp_path / "in.jsonl").write_text("".join(
        json.dumps({"id": i, **r, "x1": x1[i]}) + "\n" for i, r in enumerate(NEW)))
    for name in ("in.csv", "in.parquet", "in.jsonl"):
        res = _predict_cli(str(tmp_path / name), "-o", str(tmp_path / "out.parquet"),
                           "--keep", "id", "--force")
        assert res.returncode == 0, res.stderr.decode()
        out = pq.read_table(tmp_path / "out.parquet")
        assert out.column_names == ["id", "y"] and out.column("id").to_pylist() == [0, 1, 2, 3, 4]
        close(out.column("y").to_numpy(), want)


def test_linreg_predict_names_an_unseen_level(tmp_path):
    (tmp_path / "in.csv").write_text("city,x1,x2\nParis,1,2\nRome,,3\nNice,2,1\n")
    res = _predict_cli(str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"))
    assert res.returncode == 1
    assert res.stderr.decode() == (
        f"linreg-predict: error: {tmp_path / 'in.csv'}: row 3, column 'city': level 'Nice' was "
        "not seen in training (known: 'Lyon', 'Paris', 'Rome'); --on-unknown reference predicts "
        "it as the reference level, --on-unknown nan gives the row NaN\n")
    assert not (tmp_path / "out.csv").exists()


def test_linreg_predict_names_a_bad_number_after_a_blank(tmp_path):
    (tmp_path / "in.csv").write_text("city,x1,x2\nParis,,2\nRome,abc,3\n")
    res = _predict_cli(str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"))
    assert res.returncode == 1
    assert res.stderr.decode() == (f"linreg-predict: error: {tmp_path / 'in.csv'}: row 2, "
                                   "column 'x1': 'abc' is not a number\n")


def test_linreg_predict_refuses_npy_for_raw_columns(tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((2, 3)))
    res = _predict_cli(str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.csv"))
    assert res.returncode == 1
    assert res.stderr.decode() == (
        f"linreg-predict: error: {tmp_path / 'in.npy'}: this model takes named raw columns "
        "(city, x1, x2); give it CSV, Parquet or JSON-lines\n")


# ------------------------------------------------------------------------------ over HTTP

@pytest.fixture(scope="module")
def server():
    pytest.importorskip("fastapi")
    from tests.serve.test_server import Server

    s = Server(TAB)
    yield s
    assert s.stop() == 0


def _v2_json(rows: list[dict]) -> dict:
    return {"inputs": [
        {"name": "city", "datatype": "BYTES", "shape": [len(rows), 1],
         "data": [r["city"] for r in rows]},
        {"name": "x1", "datatype": "FP64", "shape": [len(rows)],
         "data": [None if math.isnan(_number(r["x1"])) else _number(r["x1"]) for r in rows]},
        {"name": "x2", "datatype": "FP64", "shape": [len(rows), 1],
         "data": [float(r["x2"]) for r in rows]}]}


def test_http_v1_v2_and_mlflow(server, want):
    status, body = server.json("POST", "/predict", {"instances": NEW})
    assert status == 200, body
    close(body["predictions"], want)
    status, body = server.json("POST", "/v1/models/tabular:predict",
                               {"inputs": {n: [r[n] for r in NEW] for n in NEW[0]}})
    assert status == 200, body
    close(body["predictions"], want)
    status, body = server.json("POST", "/v2/models/tabular/infer", _v2_json(NEW))
    assert status == 200, body
    close(body["outputs"][0]["data"], want)
    status, body = server.json("POST", "/invocations", {"dataframe_split": {
        "columns": ["city", "x1", "x2"], "data": [[r["city"], r["x1"], r["x2"]] for r in NEW]}},
        headers={"Content-Type": "application/json"})
    assert status == 200, body
    close(body["predictions"], want)
    csv_body = "city,x1,x2\n" + "".join(
        f"{r['city']},{'' if math.isnan(_number(r['x1'])) else r['x1']},{r['x2']}\n" for r in NEW)
    status, body = server.json("POST", "/invocations", csv_body,
                               headers={"Content-Type": "text/csv"})
    assert status == 200, body
    close(body["predictions"], want)


def test_http_v2_binary_bytes_and_floats(server, want):
    header = _v2_json(NEW)
    blobs = []
    for tensor in header["inputs"]:
        data = tensor.pop("data")
        if tensor["datatype"] == "BYTES":
            blob = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in data)
        else:
            blob = np.array([math.nan if v is None else v for v in data], "<f8").tobytes()
        tensor["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    head = json.dumps(header).encode()
    status, _, body = server.request("POST", "/v2/models/tabular/infer", head + b"".join(blobs),
                                     {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, body
    close(json.loads(body)["outputs"][0]["data"], want)


def test_http_metadata_describes_the_columns(server):
    status, body = server.json("GET", "/v2/models/tabular")
    assert status == 200
    assert body["inputs"] == [{"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
                              {"name": "x1", "datatype": "FP64", "shape": [-1, 1]},
                              {"name": "x2", "datatype": "FP64", "shape": [-1, 1]}]
    assert body["parameters"]["columns"][0]["levels"] == LEVELS
    status, body = server.json("GET", "/")
    assert body["example"]["POST /predict"]["instances"][0]["city"] == "Lyon"


@pytest.mark.parametrize("path, body, message", [
    ("/predict", {"instances": [NEW[0], {"city": "Nice", "x1": 1, "x2": 2}]},
     "instances: row 2, column 'city': level 'Nice' was not seen in training"),
    ("/v2/models/tabular/infer", {"inputs": _v2_json(NEW)["inputs"][:2]},
     "missing input(s) x2; the model takes one input per column: city, x1, x2"),
    ("/v2/models/tabular/infer", {"inputs": [{**_v2_json(NEW)["inputs"][0], "datatype": "FP32"},
                                             *_v2_json(NEW)["inputs"][1:]]},
     "input 'city': datatype 'FP32'; send BYTES for this categorical column"),
    ("/v2/models/tabular/infer", {"inputs": [{**_v2_json(NEW)["inputs"][0], "data": [1] * 5},
                                             *_v2_json(NEW)["inputs"][1:]]},
     "input 'city': BYTES data must be strings"),
    ("/v2/models/tabular/infer", {"inputs": [*_v2_json(NEW)["inputs"],
                                             {"name": "x9", "datatype": "FP64", "shape": [5],
                                              "data": [0] * 5}]},
     "unknown input 'x9'; the model's inputs are its columns city, x1, x2"),
])
def test_http_bad_tabular_requests_are_4xx(server, path, body, message):
    status, got = server.json("POST", path, body)
    assert status == 400, got
    assert got["error"].startswith(message), got


def test_tritonclient_sends_bytes_and_floats_with_its_defaults(server, want):
    triton = pytest.importorskip("tritonclient.http")
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    inputs = []
    city = triton.InferInput("city", [len(NEW), 1], "BYTES")
    city.set_data_from_numpy(np.array([[r["city"]] for r in NEW], dtype=object))
    x1 = triton.InferInput("x1", [len(NEW), 1], "FP64")
    x1.set_data_from_numpy(np.array([[_number(r["x1"])] for r in NEW]))
    x2 = triton.InferInput("x2", [len(NEW), 1], "FP64")
    x2.set_data_from_numpy(np.array([[float(r["x2"])] for r in NEW]))
    inputs = [city, x1, x2]
    close(client.infer("tabular", inputs).as_numpy("prediction"), want)
