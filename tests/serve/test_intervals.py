"""Prediction intervals computed inside model.onnx, in every Python consumer, against
statsmodels' ``get_prediction().summary_frame()``. Runs without torch: the committed fixture
``intervals`` is the tabular model (city, x1 with blanks filled by the mean, x2; float64)
exported with ``--intervals 0.95`` (``tests/fixtures/make_models.py``)."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest

from serve import Predictor
from serve.core.graph import INTERVAL_OUTPUTS
from tests.conftest import BIN
from tests.serve.conftest import MODELS

IV = MODELS / "intervals"
CSV = MODELS.parent / "tabular.csv"
NEW = [{"city": "Paris", "x1": None, "x2": 0.5}, {"city": "Rome", "x1": 12.0, "x2": -1.0},
       {"city": "Lyon", "x1": 7.5, "x2": 2.0}]
COLUMNS = {"prediction": "mean", "prediction_lower": "obs_ci_lower",
           "prediction_upper": "obs_ci_upper", "mean_lower": "mean_ci_lower",
           "mean_upper": "mean_ci_upper"}


@pytest.fixture(scope="module")
def want() -> dict[str, np.ndarray]:
    """statsmodels OLS with C(city) on the mean-filled table, and its intervals for NEW."""
    pd = pytest.importorskip("pandas")
    smf = pytest.importorskip("statsmodels.formula.api")
    data = pd.read_csv(CSV)
    fill = data["x1"].mean()
    data["x1"] = data["x1"].fillna(fill)
    fit = smf.ols("y ~ C(city) + x1 + x2", data).fit()
    new = pd.DataFrame(NEW).astype({"x1": float})
    new["x1"] = new["x1"].fillna(fill)
    frame = fit.get_prediction(new).summary_frame(alpha=0.05)
    return {k: frame[c].to_numpy().reshape(-1, 1) for k, c in COLUMNS.items()}


def close(got, want, rtol=1e-10) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64).reshape(want.shape), want,
                               rtol=rtol)


def test_predictor_intervals_equal_statsmodels(want):
    p = Predictor.load(IV)
    assert p.intervals["level"] == 0.95 and p.intervals["distribution"] == "t"
    got = p.predict_intervals(NEW)
    assert list(got) == ["prediction", *INTERVAL_OUTPUTS]
    for name in COLUMNS:
        close(got[name], want[name])
    close(p.predict(NEW), want["prediction"])


def test_bare_onnxruntime_has_the_outputs(want):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(IV / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["prediction", *INTERVAL_OUTPUTS]
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["linreg.intervals"])
    assert meta["level"] == 0.95 and meta["outputs"] == list(INTERVAL_OUTPUTS)


def test_a_model_without_intervals_has_none():
    p = Predictor.load(MODELS / "tabular")
    assert p.intervals is None
    with pytest.raises(Exception, match="this model has no intervals; export it with "
                                        "linreg-export --intervals 0.95"):
        p.predict_intervals(NEW)


def test_linreg_predict_writes_the_bounds(tmp_path, want):
    pq = pytest.importorskip("pyarrow.parquet")

    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in NEW))
    res = subprocess.run([str(BIN / "linreg-predict"), str(IV), str(tmp_path / "in.jsonl"),
                          "-o", str(tmp_path / "out.parquet"), "--intervals"],
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column_names == ["y", "y_lower", "y_upper", "y_mean_lower", "y_mean_upper"]
    for col, name in zip(out.column_names, COLUMNS):
        close(out.column(col).to_numpy(), want[name])


def test_linreg_predict_refuses_intervals_the_model_lacks(tmp_path):
    (tmp_path / "in.csv").write_text("city,x1,x2\nParis,1,2\n")
    res = subprocess.run([str(BIN / "linreg-predict"), str(MODELS / "tabular"),
                          str(tmp_path / "in.csv"), "--intervals"], capture_output=True,
                         timeout=60)
    assert res.returncode == 1
    assert res.stderr.decode() == (f"linreg-predict: error: {MODELS / 'tabular' / 'model.onnx'}: "
                                   "this model has no intervals; export it with linreg-export "
                                   "--intervals 0.95\n")


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("fastapi")
    from tests.serve.test_server import Server

    s = Server(IV)
    yield s
    assert s.stop() == 0


def test_http_v1_mlflow_and_v2_carry_the_intervals(server, want):
    status, body = server.json("POST", "/predict", {"instances": NEW})
    assert status == 200, body
    assert list(body) == ["predictions", *INTERVAL_OUTPUTS]
    close(body["predictions"], want["prediction"])
    for name in INTERVAL_OUTPUTS:
        close(body[name], want[name])
    status, body = server.json("POST", "/invocations", {"dataframe_records": NEW},
                               headers={"Content-Type": "application/json"})
    assert status == 200 and list(body) == ["predictions", *INTERVAL_OUTPUTS]
    v2 = {"inputs": [
        {"name": "city", "datatype": "BYTES", "shape": [3], "data": [r["city"] for r in NEW]},
        {"name": "x1", "datatype": "FP64", "shape": [3], "data": [r["x1"] for r in NEW]},
        {"name": "x2", "datatype": "FP64", "shape": [3], "data": [r["x2"] for r in NEW]}]}
    status, body = server.json("POST", "/v2/models/intervals/infer", v2)
    assert status == 200, body
    assert [o["name"] for o in body["outputs"]] == ["prediction", *INTERVAL_OUTPUTS]
    for out in body["outputs"]:
        close(out["data"], want[out["name"]])
    status, body = server.json("POST", "/v2/models/intervals/infer", {
        **v2, "outputs": [{"name": "mean_upper"}]})
    assert status == 200 and [o["name"] for o in body["outputs"]] == ["mean_upper"]
    status, body = server.json("GET", "/v2/models/intervals")
    assert [o["name"] for o in body["outputs"]] == ["prediction", *INTERVAL_OUTPUTS]
    assert body["parameters"]["intervals"]["level"] == 0.95


def test_tritonclient_reads_an_interval_output(server, want):
    triton = pytest.importorskip("tritonclient.http")
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    city = triton.InferInput("city", [3, 1], "BYTES")
    city.set_data_from_numpy(np.array([[r["city"]] for r in NEW], dtype=object))
    x1 = triton.InferInput("x1", [3, 1], "FP64")
    x1.set_data_from_numpy(np.array([[math.nan if r["x1"] is None else r["x1"]] for r in NEW]))
    x2 = triton.InferInput("x2", [3, 1], "FP64")
    x2.set_data_from_numpy(np.array([[r["x2"]] for r in NEW]))
    result = client.infer("intervals", [city, x1, x2],
                          outputs=[triton.InferRequestedOutput("prediction_lower")])
    close(result.as_numpy("prediction_lower"), want["prediction_lower"])
