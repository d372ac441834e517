"""linreg-serve as a serving tier, over real HTTP and gRPC on loopback: a repository of models
with versions, tritonclient (HTTP and gRPC, with their defaults), Triton's repository and
configuration extensions, polling while clients send requests, and dynamic batching.

The server runs as a subprocess (the installed console script). This process imports
``tritonclient.grpc`` only, never ``serve.server.grpc_service``: both define the protocol's protobuf
messages, and protobuf allows one definition of a name per process."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from serve import Predictor
from tests.conftest import BIN
from tests.serve.conftest import MODELS, expected
from tests.serve.test_repository import put, replace_by_rename
from tests.serve.test_server import Server, free_port

pytest.importorskip("fastapi")
grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from google.protobuf import json_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

X3 = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0], [0.0, 0.0, 0.0]])
TAB_ROWS = {"city": ["Paris", "Rome", "Lyon", "Rome"], "x1": [None, 12.0, 3.5, 1.0],
            "x2": [0.5, -1.0, 2.0, 0.0]}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """m: versions 1 (nobias, float32) and 2 (f64, float64); solo: one; tab: the tabular model
    with intervals; broken: not a model."""
    root = tmp_path_factory.mktemp("serving") / "repo"
    put("nobias", root / "m" / "1")
    put("f64", root / "m" / "2")
    put("one", root / "solo")
    put("intervals", root / "tab")
    (root / "broken").mkdir()
    (root / "broken" / "model.onnx").write_bytes(b"not onnx")
    return root


class Tier(Server):
    """A linreg-serve on a repository, with a gRPC port."""

    def __init__(self, path: Path, *args: str) -> None:
        self.grpc_port = free_port()
        super().__init__(path, "--grpc-port", str(self.grpc_port), *args)
        self.grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")
        self.http = httpclient.InferenceServerClient(f"127.0.0.1:{self.port}")


@pytest.fixture(scope="module")
def tier(repo):
    s = Tier(repo)
    yield s
    assert s.stop() == 0


def _infer(client, module, model: str, X: np.ndarray, version: str = ""):
    inp = module.InferInput("features", list(X.shape), "FP32")
    inp.set_data_from_numpy(X.astype(np.float32))
    return client.infer(model, [inp], model_version=version)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_tritonclient_gets_every_model_and_version(tier, transport):
    client, module = (tier.http, httpclient) if transport == "http" else (tier.grpc, grpcclient)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("m") and client.is_model_ready("m", "1")
    assert not client.is_model_ready("broken") and not client.is_model_ready("nope")
    result = _infer(client, module, "m", X3)  # the highest version by default
    np.testing.assert_allclose(result.as_numpy("prediction"),
                               expected(MODELS / "f64", X3.astype(np.float32)), rtol=1e-12)
    assert result.get_response(**({"as_json": True} if transport == "grpc" else {}))[
        "model_version"] == "2"
    np.testing.assert_allclose(_infer(client, module, "m", X3, "1").as_numpy("prediction"),
                               expected(MODELS / "nobias", X3), rtol=1e-5)
    np.testing.assert_allclose(_infer(client, module, "solo", X3[:, :1]).as_numpy("prediction"),
                               expected(MODELS / "one", X3[:, :1]), rtol=1e-5)
    meta = client.get_model_metadata("m")
    meta = json_format.MessageToDict(meta) if transport == "grpc" else meta
    assert meta["versions"] == ["1", "2"]


def test_grpc_tabular_model_with_intervals_equals_the_predictor(tier):
    p = Predictor.load(MODELS / "intervals")
    want = p.predict_intervals(TAB_ROWS)
    city = np.array([[c.encode()] for c in TAB_ROWS["city"]], dtype=np.object_)
    inputs = [grpcclient.InferInput("city", [4, 1], "BYTES"),
              grpcclient.InferInput("x1", [4, 1], "FP64"),
              grpcclient.InferInput("x2", [4, 1], "FP64")]
    inputs[0].set_data_from_numpy(city)
    inputs[1].set_data_from_numpy(np.array([[np.nan if v is None else v]
                                            for v in TAB_ROWS["x1"]]))
    inputs[2].set_data_from_numpy(np.array([[v] for v in TAB_ROWS["x2"]]))
    result = tier.grpc.infer("tab", inputs)
    for name, values in want.items():
        np.testing.assert_array_equal(result.as_numpy(name), values)
    only = tier.grpc.infer("tab", inputs, outputs=[grpcclient.InferRequestedOutput("mean_upper")])
    assert [o.name for o in only.get_response().outputs] == ["mean_upper"]


def test_grpc_typed_contents_are_read_like_raw_contents(tier):
    """A client that fills ``contents`` instead of ``raw_input_contents`` (KServe's default)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{tier.grpc_port}"))
    request = service_pb2.ModelInferRequest(model_name="m", model_version="1", id="7")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[3, 3])
    tensor.contents.fp32_contents.extend(X3.ravel().tolist())
    response = stub.ModelInfer(request, timeout=10)
    assert response.id == "7" and response.model_version == "1"
    got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(3, 1)
    np.testing.assert_allclose(got, expected(MODELS / "nobias", X3), rtol=1e-5)
    tab = service_pb2.ModelInferRequest(model_name="tab")
    for name, values in TAB_ROWS.items():
        t = tab.inputs.add(name=name, datatype="BYTES" if name == "city" else "FP64", shape=[4, 1])
        if name == "city":
            t.contents.bytes_contents.extend(v.encode() for v in values)
        else:
            t.contents.fp64_contents.extend(np.nan if v is None else v for v in values)
    got = stub.ModelInfer(tab, timeout=10)
    want = Predictor.load(MODELS / "intervals").predict(TAB_ROWS)
    np.testing.assert_array_equal(np.frombuffer(got.raw_output_contents[0], "<f8").reshape(4, 1),
                                  want)


def _grpc_error(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


def test_grpc_refusals_carry_the_http_messages(tier):
    X = np.ones((2, 5), np.float32)
    status, message = _grpc_error(lambda: _infer(tier.grpc, grpcclient, "m", X))
    http_status, body = tier.json("POST", "/v2/models/m/infer", {"inputs": [
        {"name": "features", "shape": [2, 5], "datatype": "FP32", "data": X.ravel().tolist()}]})
    assert status == "StatusCode.INVALID_ARGUMENT" and http_status == 400
    assert message == body["error"] == ("input shape [2, 5]: the model takes 3 features per row "
                                        "(x0, x1, x2)")
    status, message = _grpc_error(lambda: _infer(tier.grpc, grpcclient, "nope", X3))
    assert (status, message) == ("StatusCode.NOT_FOUND", "unknown model 'nope'; this server "
                                 "serves 'broken', 'm', 'solo', 'tab'")
    status, message = _grpc_error(lambda: _infer(tier.grpc, grpcclient, "m", X3, "9"))
    assert (status, message) == ("StatusCode.NOT_FOUND",
                                 "unknown version '9' of model 'm'; it has '1', '2'")
    status, message = _grpc_error(lambda: _infer(tier.grpc, grpcclient, "broken", X3))
    assert status == "StatusCode.UNAVAILABLE" and message.startswith("model 'broken' is not ready")
    status, message = _grpc_error(lambda: tier.grpc.infer("m", [], outputs=[
        grpcclient.InferRequestedOutput("nope")]))
    assert status == "StatusCode.INVALID_ARGUMENT"
    inf = np.full((1, 3), np.inf, np.float32)
    status, message = _grpc_error(lambda: _infer(tier.grpc, grpcclient, "m", inf))
    assert status == "StatusCode.INVALID_ARGUMENT" and "row 1" in message
    assert tier.grpc.is_server_live()  # and the server is fine


def test_config_endpoint_is_a_triton_model_config(tier):
    status, config = tier.json("GET", "/v2/models/m/config")
    assert status == 200
    parsed = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    assert parsed.platform == "onnxruntime_onnx" and parsed.max_batch_size == 100_000
    assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims))
            for i in parsed.input] == [("features", "TYPE_FP64", [3])]
    assert tier.json("GET", "/v2/models/m/versions/1/config")[1]["input"][0]["data_type"] == \
        "TYPE_FP32"
    tab = json_format.ParseDict(tier.json("GET", "/v2/models/tab/config")[1],
                                model_config_pb2.ModelConfig())
    assert [(i.name, model_config_pb2.DataType.Name(i.data_type)) for i in tab.input] == [
        ("city", "TYPE_STRING"), ("x1", "TYPE_FP64"), ("x2", "TYPE_FP64")]
    assert [o.name for o in tab.output] == ["prediction", "prediction_lower", "prediction_upper",
                                            "mean_lower", "mean_upper"]
    assert tier.json("GET", "/v2/models/nope/config")[0] == 404


def test_repository_index_unload_and_load(tier):
    status, index = tier.json("POST", "/v2/repository/index")
    assert status == 200
    assert [(e["name"], e.get("version"), e["state"]) for e in index] == [
        ("broken", "1", "UNAVAILABLE"), ("m", "1", "READY"), ("m", "2", "READY"),
        ("solo", "1", "READY"), ("tab", "1", "READY")]
    assert tier.json("POST", "/v2/repository/index", {"ready": True})[1] == [
        e for e in index if e["state"] == "READY"]
    assert tier.json("POST", "/v2/repository/models/solo/unload") == (200, {})
    assert not tier.grpc.is_model_ready("solo")
    status, body = tier.json("POST", "/v1/models/solo:predict", {"instances": [[1.0]]})
    assert (status, body) == (503, {"error": "model 'solo' is not ready: unloaded"})
    tier.http.load_model("solo")  # tritonclient's own call
    assert tier.grpc.is_model_ready("solo")
    status, body = tier.json("POST", "/v2/repository/models/broken/load")
    assert status == 400 and body["error"].startswith("failed to load 'broken': ")
    assert tier.json("POST", "/v2/repository/models/nope/unload")[0] == 404
    assert tier.json("POST", "/v2/repository/models/nope/load")[0] == 404
    assert tier.json("POST", "/v2/repository/index", "[1]") == (
        400, {"error": "expected a JSON object (or no body)"})


def test_metrics_carry_the_model(tier):
    _infer(tier.grpc, grpcclient, "m", X3)
    text = tier.request("GET", "/metrics")[2].decode()
    assert re.search(r'^linreg_requests_total\{endpoint="grpc_infer",model="m",code="200"\} \d+$',
                     text, re.M)
    assert re.search(r'^linreg_rows_predicted_total\{endpoint="grpc_infer",model="m"\} \d+$',
                     text, re.M)


def test_index_page_lists_the_repository(tier):
    status, page = tier.json("GET", "/")
    assert status == 200 and sorted(page["models"]) == ["m", "solo", "tab"]
    assert "model" not in page  # several models: no single-model example
    status, body = tier.json("POST", "/predict", {"instances": [[1.0]]})
    assert status == 400 and body["error"].startswith("this server serves 4 models")


@pytest.mark.parametrize("batching", [[], ["--max-batch-delay-us", "2000"]],
                         ids=["direct", "batching"])
def test_a_model_replaced_on_disk_under_load_fails_no_request(tmp_path, batching):
    """16 clients for a few seconds while the model folder is replaced (by rename) three
    times: zero failed requests, and the answers switch to the new model. With dynamic
    batching, each swap retires a batcher that requests may still be reaching."""
    root = tmp_path / "repo"
    put("nobias", root / "flip")
    s = Server(root, "--poll-seconds", "0.1", "-q", *batching)
    answers = {m: expected(MODELS / m, X3)[:, 0] for m in ("nobias", "f64")}
    body = json.dumps({"instances": X3.tolist()})
    stop = threading.Event()
    seen: list[str] = []
    failures: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        while not stop.is_set():
            conn.request("POST", "/v1/models/flip:predict", body=body)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                failures.append(f"{resp.status} {data[:200]!r}")
                continue
            got = np.array(json.loads(data)["predictions"])
            match = [m for m, want in answers.items() if np.allclose(got, want, rtol=1e-5)]
            if len(match) != 1:
                failures.append(f"an answer of neither model: {got}")
            else:
                seen.append(match[0])
        conn.close()

    try:
        with ThreadPoolExecutor(16) as pool:
            running = [pool.submit(client) for _ in range(16)]
            time.sleep(0.5)
            replace_by_rename("f64", root / "flip")
            time.sleep(1.0)
            replace_by_rename("nobias", root / "flip")
            time.sleep(1.0)
            replace_by_rename("f64", root / "flip")
            time.sleep(1.0)
            stop.set()
            for r in running:
                r.result()
    finally:
        assert s.stop() == 0
    assert failures == []
    assert len(seen) > 100 and seen[0] == "nobias" and seen[-1] == "f64"
    switches = sum(a != b for a, b in zip(seen, seen[1:]))
    assert switches >= 3  # interleaved clients may straddle a swap, never an error


def test_dynamic_batching_merges_concurrent_requests(repo):
    s = Tier(repo, "--max-batch-delay-us", "50000", "--max-batch-rows", "256")
    try:
        rng = np.random.default_rng(1)
        batches = [rng.normal(size=(int(rng.integers(1, 5)), 3)) for _ in range(32)]
        bad = np.array([[1e308, 0.0, 0.0]])  # overflows float64 once multiplied: fails alone

        def call(rows):
            return s.json("POST", "/v1/models/m:predict", {"instances": rows.tolist()})

        with ThreadPoolExecutor(33) as pool:
            results = list(pool.map(call, [*batches, bad]))
        for rows, (status, body) in zip(batches, results):
            assert status == 200
            np.testing.assert_allclose(np.array(body["predictions"]),
                                       expected(MODELS / "f64", rows)[:, 0], rtol=1e-12)
        status, body = results[-1]
        assert status == 422 and "overflows float64" in body["error"]
        with ThreadPoolExecutor(16) as pool:  # and over gRPC
            grpc_results = list(pool.map(lambda r: _infer(s.grpc, grpcclient, "m", r)
                                         .as_numpy("prediction"), batches[:16]))
        for rows, got in zip(batches, grpc_results):
            np.testing.assert_allclose(got, expected(MODELS / "f64", rows.astype(np.float32)),
                                       rtol=1e-12)
        text = s.request("GET", "/metrics")[2].decode()
        counts = {k: int(v) for k, v in re.findall(
            r'^(linreg_batch\w+)\{model="m"\} (\d+)$', text, re.M)}
        assert counts["linreg_batched_requests_total"] == 33 + 16
        assert counts["linreg_batches_total"] < 33 + 16  # requests were merged
        assert s.json("GET", "/v2/models/m/config")[1]["dynamic_batching"] == {
            "max_queue_delay_microseconds": 50000}
    finally:
        assert s.stop() == 0


def test_load_and_unload_are_refused_with_several_workers(repo):
    s = Server(repo / "solo", "--workers", "2", "-q")
    try:
        status, body = s.json("POST", "/v2/repository/models/solo/unload")
        assert status == 409 and "--poll-seconds" in body["error"]
    finally:
        assert s.stop() == 0


def test_grpc_port_errors_are_one_line(repo):
    port = free_port()
    res = subprocess.run([str(BIN / "linreg-serve"), str(repo), "--port", str(port),
                          "--grpc-port", str(port)], capture_output=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.decode().splitlines()[-1] == (f"linreg-serve: error: Invalid value for "
                                                    f"'--grpc-port': {port} is also --port; "
                                                    "give gRPC its own port")


def test_generated_grpc_code_matches_the_proto(tmp_path):
    """serve/server/proto's committed code is what `make proto` makes from inference.proto: their
    descriptors are equal (compared in a subprocess: see the module docstring)."""
    from grpc_tools import protoc

    proto_dir = Path(__file__).resolve().parents[2] / "serve" / "server" / "proto"
    out = tmp_path / "inference.desc"
    assert protoc.main(["protoc", f"-I{proto_dir}", f"--descriptor_set_out={out}",
                        str(proto_dir / "inference.proto")]) == 0
    committed = subprocess.run(
        [sys.executable, "-c", "import sys; from serve.server.proto import inference_pb2 as m; "
         "sys.stdout.buffer.write(m.DESCRIPTOR.serialized_pb)"],
        capture_output=True, check=True, cwd=proto_dir.parents[2]).stdout
    from google.protobuf import descriptor_pb2

    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]

    def strip_json_names(messages) -> None:  # a descriptor set spells them out; code does not
        for m in messages:
            for f in m.field:
                f.ClearField("json_name")
            strip_json_names(m.nested_type)
    strip_json_names(compiled.message_type)
    assert descriptor_pb2.FileDescriptorProto.FromString(committed) == compiled
