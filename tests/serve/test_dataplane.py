"""One data plane for HTTP and gRPC: a shared table of good and bad v2 requests, each sent as
HTTP JSON (or the binary extension) and as a gRPC ModelInferRequest (typed contents or
raw_input_contents) to one server running in this process (the ASGI app through Starlette's
TestClient, its gRPC server on a loopback port). Both must answer the same: the same outputs
bit for bit, or the same refusal, message for message, with the status each transport uses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from serve import Predictor
from tests.serve.conftest import MODELS
from tests.serve.test_repository import put
from tests.serve.test_server import free_port

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
grpc = pytest.importorskip("grpc")

from fastapi.testclient import TestClient  # noqa: E402

from serve.server.app import create_app  # noqa: E402
from serve.server.grpc_service import CODES  # noqa: E402
from serve.server.proto import inference_pb2 as pb  # noqa: E402
from serve.server.repository import Repository  # noqa: E402
from serve.server.settings import ServerSettings  # noqa: E402

ROWS = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.5]])
CITY = ["Paris", "Rome", "Lyon"]
X1, X2 = [1.5, None, 3.0], [0.5, -1.0, 2.0]


@dataclass
class Input:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any]
    binary: bool = False

    def raw(self) -> bytes:
        if self.datatype == "BYTES":
            items = [b"\xff" if v == "\xff" else (v or "").encode() for v in self.values]
            return b"".join(len(b).to_bytes(4, "little") + b for b in items)
        dtype = {"FP32": "<f4", "FP64": "<f8"}[self.datatype]
        return np.array([np.nan if v is None else v for v in self.values], dtype).tobytes()


@dataclass
class Case:
    model: str
    inputs: list[Input]
    outputs: list[str] = field(default_factory=list)
    version: str = ""
    id: str = ""


def features(rows: np.ndarray, *, datatype: str = "FP32", binary: bool = False,
             name: str = "features", shape: list[int] | None = None) -> Input:
    return Input(name, datatype, shape or list(rows.shape), rows.ravel().tolist(), binary)


def columns(*, binary: bool = False, city: list[Any] = CITY) -> list[Input]:
    return [Input("city", "BYTES", [len(city), 1], city, binary),
            Input("x1", "FP64", [3, 1], X1, binary), Input("x2", "FP64", [3], X2, binary)]


GOOD = [
    Case("multi", [features(ROWS)]),
    Case("multi", [features(ROWS, binary=True)], id="a-7"),
    Case("multi", [features(ROWS, datatype="FP64")], outputs=["prediction"]),
    Case("multi", [features(ROWS[0], shape=[4])], version="1"),
    Case("tab", columns()),
    Case("tab", columns(binary=True), outputs=["prediction_upper", "prediction"]),
    Case("explain", [columns()[0], columns()[2]]),  # a formula's contributions
    Case("explain", [columns(binary=True)[0], columns(binary=True)[2]],
         outputs=["contributions"]),
]

BAD = [  # (case, HTTP status, message)
    (Case("multi", [features(ROWS, name="x")]), 400,
     "unknown input 'x'; the model's input is 'features'"),
    (Case("multi", [features(ROWS, datatype="INT64")]), 400,
     "input datatype 'INT64' is not supported; send FP32 (or FP64)"),
    (Case("multi", [features(ROWS[:, :3])]), 400,
     "input shape [2, 3]: the model takes 4 features per row (x0, x1, x2, x3)"),
    (Case("multi", [features(ROWS, shape=[3, 4])]), 400,
     "input has 8 values but shape [3, 4] needs 12"),
    (Case("multi", [features(ROWS, shape=[3, 4], binary=True)]), 400,
     "input 'features': binary_data_size 32 for shape [3, 4] FP32 must be 48"),
    (Case("multi", [features(np.zeros((1001, 4)))]), 413,
     "1,001 rows is more than the limit of 1,000 per request (--max-rows)"),
    (Case("multi", [features(np.array([[1.0, np.inf, 0.0, 0.0]]), binary=True)]), 400,
     "row 1, column 'x1': inf is not allowed (or a value beyond float32's ±3.4e38; clean or "
     "drop the row)"),
    (Case("multi", [features(ROWS)], outputs=["nope"]), 400,
     "unknown output 'nope'; the model's outputs are prediction"),
    (Case("multi", [features(ROWS), features(ROWS)]), 400,
     "expected exactly one input tensor named 'features', got 2"),
    (Case("nope", [features(ROWS)]), 404, "unknown model 'nope'; this server serves 'explain', "
     "'multi', 'tab'"),
    (Case("multi", [features(ROWS)], version="3"), 404,
     "unknown version '3' of model 'multi'; it has '1'"),
    (Case("tab", columns()[:2]), 400,
     "missing input(s) x2; the model takes one input per column: city, x1, x2"),
    (Case("tab", [*columns(), columns()[1]]), 400, "input 'x1' is given twice"),
    (Case("tab", columns(city=["Paris", "Rome"])), 400, "input 'x1' has 3 rows, the others 2"),
    (Case("tab", columns(binary=True, city=["Paris", "\xff", "Lyon"])), 400,
     "input 'city': a BYTES element is not UTF-8 text"),
    (Case("tab", columns(city=["Paris", "\xff", "Lyon"])), 400,
     "input 'city': a BYTES element is not UTF-8 text"),
    (Case("tab", [Input("city", "FP32", [3], [1, 2, 3]), *columns()[1:]]), 400,
     "input 'city': datatype 'FP32'; send BYTES for this categorical column"),
    (Case("tab", columns(), outputs=["prediction_sideways"]), 400,
     "unknown output 'prediction_sideways'; the model's outputs are prediction, "
     "prediction_lower, prediction_upper, mean_lower, mean_upper"),
    (Case("explain", [columns()[0], columns()[2]], outputs=["mean_upper"]), 400,
     "unknown output 'mean_upper'; the model's outputs are prediction, contributions"),
]


def http_request(case: Case) -> tuple[str, bytes, dict[str, str]]:
    """The case as an HTTP v2 request: JSON, with binary parts after the header if any."""
    inputs, blobs = [], []
    for i in case.inputs:
        tensor: dict[str, Any] = {"name": i.name, "datatype": i.datatype, "shape": i.shape}
        if i.binary:
            blobs.append(i.raw())
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        elif "\xff" in i.values:  # not UTF-8 text: only the binary extension can carry it
            return http_request(Case(case.model, [Input(i.name, i.datatype, i.shape, i.values,
                                                        True) if x is i else x
                                                  for x in case.inputs], case.outputs,
                                     case.version, case.id))
        else:
            tensor["data"] = [None if v is None else v for v in i.values]
        inputs.append(tensor)
    header: dict[str, Any] = {"inputs": inputs, "parameters": {"binary_data_output": True}}
    if case.outputs:
        header["outputs"] = [{"name": n} for n in case.outputs]
    if case.id:
        header["id"] = case.id
    head = json.dumps(header).encode()
    path = f"/v2/models/{case.model}" + (f"/versions/{case.version}" if case.version else "")
    headers = {"Inference-Header-Content-Length": str(len(head))} if blobs else {}
    return path + "/infer", head + b"".join(blobs), headers


def grpc_request(case: Case) -> Any:
    """The case as a ModelInferRequest: raw_input_contents when its inputs are binary, else
    typed contents (a blank number as NaN, a blank level as the empty string)."""
    message = pb.ModelInferRequest(model_name=case.model, model_version=case.version,
                                   id=case.id)
    binary = any(i.binary for i in case.inputs)
    for i in case.inputs:
        tensor = message.inputs.add(name=i.name, datatype=i.datatype, shape=i.shape)
        if binary:
            message.raw_input_contents.append(i.raw())
        elif i.datatype == "BYTES":
            tensor.contents.bytes_contents.extend(b"\xff" if v == "\xff" else (v or "").encode()
                                                  for v in i.values)
        elif i.datatype in ("FP32", "FP64"):
            getattr(tensor.contents, i.datatype.lower() + "_contents").extend(
                np.nan if v is None else v for v in i.values)
    for name in case.outputs:
        message.outputs.add(name=name)
    return message


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataplane")
    put("multi", root / "multi" / "1")
    put("intervals", root / "tab")
    put("explain", root / "explain")
    port = free_port()
    app = create_app(Repository.open(root), ServerSettings(max_rows=1000, grpc_port=port))
    with TestClient(app) as http, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        yield http, infer


def both(server, case: Case) -> tuple[Any, Any]:
    http, infer = server
    path, body, headers = http_request(case)
    answer = http.post(path, content=body, headers=headers)
    try:
        reply = infer(grpc_request(case), timeout=10)
    except grpc.RpcError as e:
        reply = e
    return answer, reply


def http_outputs(answer) -> dict[str, np.ndarray]:
    n = int(answer.headers["inference-header-content-length"])
    header, offset, out = json.loads(answer.content[:n]), n, {}
    for o in header["outputs"]:
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = np.frombuffer(answer.content[offset:offset + size],
                                       {"FP32": "<f4", "FP64": "<f8"}[o["datatype"]]
                                       ).reshape(o["shape"])
        offset += size
    return out


@pytest.mark.parametrize("case", GOOD, ids=range(len(GOOD)))
def test_good_requests_answer_alike(server, case):
    answer, reply = both(server, case)
    assert answer.status_code == 200, answer.text
    assert not isinstance(reply, grpc.RpcError), reply
    got = http_outputs(answer)
    assert [o.name for o in reply.outputs] == list(got)
    assert reply.id == case.id and reply.model_name == case.model
    for o, raw in zip(reply.outputs, reply.raw_output_contents):
        assert bytes(raw) == got[o.name].tobytes() and list(o.shape) == list(got[o.name].shape)
    # and the numbers are the model's
    model = Predictor.load(MODELS / {"tab": "intervals"}.get(case.model, case.model))
    if case.model == "multi":
        rows = np.array(case.inputs[0].values).reshape(-1, 4)
        np.testing.assert_array_equal(got["prediction"], model.predict(rows))
    elif case.model == "explain":
        want = model.outputs({"city": CITY, "x2": X2})
        for name, values in got.items():
            np.testing.assert_array_equal(values, want[name])
    else:
        want = model.predict_intervals({"city": CITY, "x1": X1, "x2": X2})
        for name, values in got.items():
            np.testing.assert_array_equal(values, want[name])


@pytest.mark.parametrize(("case", "status", "message"), BAD, ids=range(len(BAD)))
def test_bad_requests_are_refused_alike(server, case, status, message):
    answer, reply = both(server, case)
    assert (answer.status_code, answer.json()) == (status, {"error": message})
    assert isinstance(reply, grpc.RpcError)
    assert (reply.code(), reply.details()) == (CODES[status], message)


# ----------------------------------------------------------------- the error model, in process

def metric(http, pattern: str) -> float:
    import re

    found = re.search("^" + pattern + r" (\S+)$", http.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def test_every_route_is_counted_under_its_name_model_and_status(server):
    http, _ = server
    ok = 'linreg_requests_total{endpoint="v2_infer",model="multi",code="200"}'
    bad = 'linreg_requests_total{endpoint="v2_infer",model="multi",code="400"}'
    rows = 'linreg_rows_predicted_total{endpoint="v2_infer",model="multi"}'
    before = [metric(http, p.replace("{", r"\{").replace("}", r"\}")) for p in (ok, bad, rows)]
    path, body, headers = http_request(GOOD[0])
    assert http.post(path, content=body, headers=headers).status_code == 200
    path, body, headers = http_request(BAD[0][0])
    assert http.post(path, content=body, headers=headers).status_code == 400
    after = [metric(http, p.replace("{", r"\{").replace("}", r"\}")) for p in (ok, bad, rows)]
    assert [a - b for a, b in zip(after, before)] == [1, 1, 2]


def test_a_refused_body_closes_the_connection_and_names_the_limit(server):
    http, _ = server
    answer = http.post("/v2/models/multi/infer", content=b"x" * 100,
                       headers={"Content-Length": str(64 << 20)})
    assert answer.status_code == 413 and answer.headers["connection"] == "close"
    assert answer.json() == {"error": f"request body of {64 << 20:,} bytes is more than the "
                             f"limit of {32 << 20:,} (--max-body-bytes)"}


def test_a_bug_is_a_500_without_a_traceback_and_is_counted(server, monkeypatch):
    http, _ = server
    from serve.server import dataplane

    def broken(*args, **kwargs):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(dataplane, "request_rows", broken)
    path, body, headers = http_request(GOOD[0])
    answer = http.post(path, content=body, headers=headers)
    assert (answer.status_code, answer.json()) == (500, {"error": "internal server error"})
    assert metric(http, r'linreg_requests_total\{endpoint="v2_infer",model="multi",code="500"\}') \
        == 1


def test_the_predicting_routes_run_plain_first_and_are_documented_once(server):
    """They are matched before any other route and run by Starlette as they are (no FastAPI
    parameters to solve), yet the OpenAPI schema still documents them with their bodies."""
    from serve.server.routes.common import Plain

    http, _ = server
    routes = http.app.router.routes
    hot = {r.path for r in routes if isinstance(r, Plain)}
    assert hot == {"/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer",
                   "/v1/models/{model}:predict", "/predict", "/invocations"}
    assert all(isinstance(r, Plain) for r in routes[:len(hot)])
    paths = http.get("/openapi.json").json()["paths"]
    for path in ("/v2/models/{model}/infer", "/v1/models/{model}:predict", "/predict",
                 "/invocations"):
        assert "requestBody" in paths[path]["post"], path
    assert "/v2/models/{model}/versions/{version}/infer" not in paths
