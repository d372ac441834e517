"""A per-call policy for the cells a model cannot take (issue #22): a level not seen in
training, a blank with no fill. ``error`` refuses the row naming the cell, ``nan`` leaves its
prediction NaN (null in JSON) and counts it, ``reference`` predicts an unseen level as its
column's reference level; no policy keeps the model's own (``linreg-train --unknown``). The same
in every consumer: ``Predictor``, ``linreg-predict``, HTTP (v2 parameters, v1 and MLflow),
gRPC, and (tests/serve/test_engines.py) Dask and Spark."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serve import Predictor
from serve.runtime.predictor import PredictionInputError, unpredictable_rows
from tests.conftest import run_script
from tests.serve.conftest import MODELS

TAB, MULTI, IV = MODELS / "tabular", MODELS / "multi", MODELS / "intervals"
# Row 2: an unseen level; row 4: a blank city (no blank was seen in training); row 3 is fine.
ROWS = [{"city": "Paris", "x1": 10.0, "x2": 0.5}, {"city": "Nice", "x1": 9.0, "x2": 1.0},
        {"city": "Rome", "x1": None, "x2": -1.0}, {"city": None, "x1": 11.0, "x2": 0.0}]
AS_REFERENCE = [dict(r, city=r["city"] if r["city"] in ("Paris", "Rome") else "Lyon")
                for r in ROWS]
UNSEEN = ("row 2, column 'city': level 'Nice' was not seen in training (known: 'Lyon', "
          "'Paris', 'Rome'); --on-unknown reference predicts it as the reference level, "
          "--on-unknown nan gives the row NaN")


@pytest.fixture(scope="module")
def tab() -> Predictor:
    return Predictor.load(TAB)


def test_each_policy_in_the_predictor(tab):
    good = tab.predict([ROWS[0], ROWS[2]])
    nan = tab.predict(ROWS, on_unknown="nan")
    assert np.isnan(nan[[1, 3]]).all() and unpredictable_rows(nan) == 2
    np.testing.assert_array_equal(nan[[0, 2]], good)
    np.testing.assert_array_equal(tab.predict(ROWS, on_unknown="reference"),
                                  tab.predict(AS_REFERENCE))
    for policy in (None, "error"):
        with pytest.raises(PredictionInputError) as e:
            tab.predict(ROWS, on_unknown=policy)
        assert str(e.value) == UNSEEN
    with pytest.raises(PredictionInputError, match=r"^on_unknown 'drop': use error, nan, "
                                                   r"reference$"):
        tab.predict(ROWS, on_unknown="drop")


def test_nan_covers_a_blank_without_fill_and_every_output():
    iv = Predictor.load(IV)
    out = iv.predict_intervals(ROWS, on_unknown="nan")
    for values in out.values():
        assert np.isnan(values[[1, 3]]).all() and np.isfinite(values[[0, 2]]).all()
    plain = Predictor.load(MULTI)
    X = np.array([[1, 2, 3, 4], [1, np.nan, 3, 4], [0, 0, math.inf, 0]], dtype=np.float32)
    pred = plain.predict(X, on_unknown="nan")
    assert unpredictable_rows(pred) == 2
    np.testing.assert_array_equal(pred[0], plain.predict(X[:1])[0])
    with pytest.raises(PredictionInputError, match="row 2, column 'x1': NaN is not allowed"):
        plain.predict(X, on_unknown="error")


def test_a_stored_reference_policy_is_overridden_per_call(tmp_path):
    pytest.importorskip("torch")
    from trainer.encode import EncodeConfig
    from trainer.export import export
    from trainer.fit import TrainConfig
    from trainer.train import train

    folder, _ = train(MODELS.parent / "tabular.csv", out=tmp_path / "ref", config=TrainConfig(
        solver="lstsq", dtype="float64"), encoding=EncodeConfig(impute="mean",
                                                                unknown="reference"))
    export(folder, formats=("onnx",))
    p = Predictor.load(folder)
    rows = ROWS[:3]
    np.testing.assert_array_equal(p.predict(rows), p.predict(AS_REFERENCE[:3]))
    assert unpredictable_rows(p.predict(rows, on_unknown="nan")) == 1
    with pytest.raises(PredictionInputError) as e:
        p.predict(rows, on_unknown="error")
    assert str(e.value) == UNSEEN


def test_reference_needs_a_reference_level(tmp_path):
    pytest.importorskip("torch")
    from trainer.encode import EncodeConfig
    from trainer.export import export
    from trainer.fit import TrainConfig
    from trainer.train import train

    folder, _ = train(MODELS.parent / "tabular.csv", out=tmp_path / "nob", config=TrainConfig(
        solver="lstsq", dtype="float64", bias=False), encoding=EncodeConfig(impute="mean"))
    export(folder, formats=("onnx",))
    with pytest.raises(PredictionInputError) as e:
        Predictor.load(folder).predict(ROWS, on_unknown="reference")
    assert str(e.value) == (
        "row 2, column 'city': level 'Nice' was not seen in training (known: 'Lyon', 'Paris', "
        "'Rome'); on_unknown 'reference' needs a reference level, and 'city' has none (a "
        "model without an intercept, or a formula coding it without one): use on_unknown "
        "'nan' or 'error'")


def _csv(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("city,x1,x2\n" + "".join(
        f"{r['city'] or ''},{'' if r['x1'] is None else r['x1']},{r['x2']}\n" for r in ROWS))
    return path


@pytest.mark.parametrize("policy", ["nan", "reference", "error"])
def test_linreg_predict_on_unknown(tmp_path, tab, policy):
    res = run_script("linreg-predict", TAB, _csv(tmp_path), "-o", tmp_path / "out.csv",
                     "--on-unknown", policy)
    if policy == "error":
        assert res.returncode == 1
        assert res.stderr.decode() == f"linreg-predict: error: {tmp_path / 'in.csv'}: {UNSEEN}\n"
        assert not (tmp_path / "out.csv").exists()
        return
    assert res.returncode == 0, res.stderr.decode()
    got = np.genfromtxt(tmp_path / "out.csv", skip_header=1, delimiter=",").reshape(-1, 1)
    np.testing.assert_array_equal(got, tab.predict(ROWS, on_unknown=policy))
    lines = res.stderr.decode().splitlines()
    warning = ("linreg-predict: warning: 2 of 4 row(s) could not be predicted (a level not seen "
               "in training, or a blank with no fill): their predictions are NaN "
               "(--on-unknown nan)")
    assert (warning in lines) == (policy == "nan")


# ------------------------------------------------------------------ HTTP and gRPC

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    grpc = pytest.importorskip("grpc")
    from fastapi.testclient import TestClient

    from serve.server.app import create_app
    from serve.server.proto import inference_pb2 as pb
    from serve.server.repository import Repository
    from serve.server.settings import ServerSettings
    from tests.serve.test_server import free_port

    port = free_port()
    app = create_app(Repository.open(TAB), ServerSettings(grpc_port=port))
    with TestClient(app) as http, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        yield http, infer, pb, grpc


def _v2(parameters: dict | None = None) -> dict:
    body = {"inputs": [
        {"name": "city", "datatype": "BYTES", "shape": [4, 1], "data": [r["city"] for r in ROWS]},
        {"name": "x1", "datatype": "FP64", "shape": [4, 1], "data": [r["x1"] for r in ROWS]},
        {"name": "x2", "datatype": "FP64", "shape": [4, 1], "data": [r["x2"] for r in ROWS]}]}
    return {**body, "parameters": parameters} if parameters is not None else body


def _nulls(want: np.ndarray) -> list:
    return [None if math.isnan(v) else v for v in want[:, 0].tolist()]


def test_http_v2_v1_and_mlflow_take_the_policy(server, tab):
    http = server[0]
    want = tab.predict(ROWS, on_unknown="nan")
    answer = http.post("/v2/models/tabular/infer", json=_v2({"on_unknown": "nan"}))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["outputs"][0]["data"] == _nulls(want)
    assert body["parameters"] == {"unpredictable_rows": 2}
    answer = http.post("/v2/models/tabular/infer", json=_v2({"on_unknown": "reference"}))
    assert answer.json()["outputs"][0]["data"] == tab.predict(AS_REFERENCE)[:, 0].tolist()
    assert "parameters" not in answer.json()
    answer = http.post("/v2/models/tabular/infer", json=_v2())
    assert (answer.status_code, answer.json()) == (400, {"error": UNSEEN})
    answer = http.post("/v2/models/tabular/infer", json=_v2({"on_unknown": 1}))
    assert (answer.status_code, answer.json()) == (
        400, {"error": "on_unknown 1: use one of error, nan, reference"})
    for path in ("/v1/models/tabular:predict", "/predict"):
        answer = http.post(path + "?on_unknown=nan", json={"instances": ROWS})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": _nulls(want), "unpredictable_rows": 2}
    answer = http.post("/invocations", json={"dataframe_records": ROWS,
                                             "params": {"on_unknown": "nan"}})
    assert answer.json() == {"predictions": _nulls(want), "unpredictable_rows": 2}
    answer = http.post("/invocations?on_unknown=reference", json={"dataframe_records": ROWS})
    assert answer.json() == {"predictions": tab.predict(AS_REFERENCE)[:, 0].tolist()}
    csv = "city,x1,x2\n" + "".join(f"{r['city'] or ''},{'' if r['x1'] is None else r['x1']},"
                                   f"{r['x2']}\n" for r in ROWS)
    answer = http.post("/invocations?on_unknown=nan", content=csv,
                       headers={"Content-Type": "text/csv"})
    assert answer.json() == {"predictions": _nulls(want), "unpredictable_rows": 2}


def test_grpc_takes_the_policy_as_a_request_parameter(server, tab):
    _, infer, pb, grpc = server
    message = pb.ModelInferRequest(model_name="tabular")
    for name, dtype, values in (("city", "BYTES", [r["city"] for r in ROWS]),
                                ("x1", "FP64", [r["x1"] for r in ROWS]),
                                ("x2", "FP64", [r["x2"] for r in ROWS])):
        tensor = message.inputs.add(name=name, datatype=dtype, shape=[4, 1])
        if dtype == "BYTES":
            tensor.contents.bytes_contents.extend((v or "").encode() for v in values)
        else:
            tensor.contents.fp64_contents.extend(math.nan if v is None else v for v in values)
    with pytest.raises(grpc.RpcError) as e:
        infer(message, timeout=10)
    assert e.value.details() == UNSEEN
    message.parameters["on_unknown"].string_param = "nan"
    reply = infer(message, timeout=10)
    got = np.frombuffer(reply.raw_output_contents[0], "<f8").reshape(-1, 1)
    np.testing.assert_array_equal(got, tab.predict(ROWS, on_unknown="nan"))
    assert reply.parameters["unpredictable_rows"].int64_param == 2


def test_any_json_on_unknown_is_answered_not_crashed(server):
    """Whatever JSON arrives as the parameter: a policy, or a 400 naming the value."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    http = server[0]
    scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8) \
        | st.floats(allow_nan=False, allow_infinity=False) \
        | st.sampled_from(["nan", "error", "reference"])
    values = st.recursive(scalars,
                          lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(values)
    def check(value):
        answer = http.post("/v2/models/tabular/infer", json=_v2({"on_unknown": value}))
        if value in ("nan", "reference"):
            assert answer.status_code == 200
        elif value in (None, "error"):
            assert (answer.status_code, answer.json()) == (400, {"error": UNSEEN})
        else:
            assert answer.status_code == 400
            assert answer.json()["error"].startswith("on_unknown ")
            assert answer.json()["error"].endswith(": use one of error, nan, reference")
    check()
