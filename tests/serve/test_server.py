"""linreg-serve over real HTTP on loopback: every protocol, every bad request, concurrency and a
clean SIGTERM. The server runs as a subprocess of the installed console script."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BIN
from tests.serve.bad_requests import BAD, V2, wire_sample
from tests.serve.conftest import MODELS, expected

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MULTI = MODELS / "multi"  # 4 features x0..x3 -> 2 targets y0, y1
ONE = MODELS / "one"  # 1 feature x -> 1 target y


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real linreg-serve process on a free loopback port."""

    def __init__(self, model: Path, *args: str) -> None:
        self.port = free_port()
        # stderr goes to a file: a pipe nobody reads would block the server once it fills.
        fd, self.log = tempfile.mkstemp(prefix="linreg-serve-", suffix=".log")
        weakref.finalize(self, os.unlink, self.log)
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen([str(BIN / "linreg-serve"), str(model), "--port",
                                          str(self.port), *args], stdout=subprocess.DEVNULL,
                                         stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.stderr())
            try:
                if self.request("GET", "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def request(self, method: str, path: str, body: bytes | str | dict | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        if isinstance(body, dict):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def json(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
        status, _, data = self.request(method, path, body, headers)
        return status, json.loads(data)

    def stderr(self) -> str:
        """What the server has logged so far."""
        return Path(self.log).read_text()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server():
    s = Server(MULTI, "--max-rows", "1000", "--max-body-bytes", "200000")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def one_server():
    s = Server(ONE)
    yield s
    s.stop()


X = np.array([[1.0, 2.0, 3.0, 4.0], [-1.5, 0.0, 2.5, 10.0], [0.0, 0.0, 0.0, 0.0]])
WANT = expected(MULTI, X)


def close(got) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64).reshape(WANT.shape), WANT,
                               rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------ Open Inference Protocol v2

def test_v2_health_and_metadata(server):
    assert server.json("GET", "/v2/health/live") == (200, {"live": True})
    assert server.json("GET", "/v2/health/ready") == (200, {"ready": True})
    assert server.json("GET", "/v2/models/multi/ready")[0] == 200
    status, meta = server.json("GET", "/v2")
    assert status == 200 and meta["name"] == "linreg" and "binary_tensor_data" in meta["extensions"]
    status, meta = server.json("GET", "/v2/models/multi")
    assert status == 200
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1, 2]}]
    assert server.json("GET", "/v2/models/multi/versions/1")[1] == meta


@pytest.mark.parametrize("path", ["/v2/models/multi/infer", "/v2/models/multi/versions/1/infer"])
def test_v2_json_infer(server, path):
    status, out = server.json("POST", path, {"id": "42", "inputs": [
        {"name": "features", "shape": [3, 4], "datatype": "FP32", "data": X.ravel().tolist()}]})
    assert status == 200
    assert out["id"] == "42" and out["model_name"] == "multi"
    (o,) = out["outputs"]
    assert (o["name"], o["datatype"], o["shape"]) == ("prediction", "FP32", [3, 2])
    close(o["data"])
    # Nested rows and FP64 are accepted too.
    status, out = server.json("POST", path, {"inputs": [
        {"name": "features", "shape": [3, 4], "datatype": "FP64", "data": X.tolist()}]})
    close(out["outputs"][0]["data"])


def test_v2_binary_tensor_extension(server):
    header = json.dumps({"inputs": [{"name": "features", "shape": [3, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 48}}],
                         "outputs": [{"name": "prediction",
                                      "parameters": {"binary_data": True}}]}).encode()
    body = header + X.astype("<f4").tobytes()
    status, headers, data = server.request("POST", "/v2/models/multi/infer", body, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream"})
    assert status == 200
    n = int(headers["inference-header-content-length"])
    meta = json.loads(data[:n])
    assert meta["outputs"][0]["parameters"] == {"binary_data_size": 24}
    close(struct.unpack("<6f", data[n:]))


def test_tritonclient_with_its_defaults(server):
    http_client = pytest.importorskip("tritonclient.http")
    client = http_client.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("multi")
    assert client.get_model_metadata("multi")["inputs"][0]["shape"] == [-1, 4]
    inp = http_client.InferInput("features", [3, 4], "FP32")
    inp.set_data_from_numpy(X.astype(np.float32))  # binary_data=True by default
    result = client.infer("multi", [inp])
    close(result.as_numpy("prediction"))
    result = client.infer("multi", [inp], outputs=[http_client.InferRequestedOutput(
        "prediction", binary_data=False)], request_compression_algorithm="gzip")
    close(result.as_numpy("prediction"))
    with pytest.raises(Exception, match=r"\[400\] input shape \[1, 3\]: the model takes 4 "
                       r"features per row \(x0, x1, x2, x3\)"):
        bad = http_client.InferInput("features", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
        client.infer("multi", [bad])


# ------------------------------------------------------------------ v1 and MLflow

def test_v1_styles(server, one_server):
    records = [dict(zip(["x0", "x1", "x2", "x3"], r)) for r in X.tolist()]
    for path in ("/v1/models/multi:predict", "/predict"):
        status, out = server.json("POST", path, {"instances": X.tolist()})
        assert status == 200
        close(out["predictions"])
        close(server.json("POST", path, {"instances": records})[1]["predictions"])
    columns = {f"x{i}": X[:, i].tolist() for i in range(4)}
    close(server.json("POST", "/predict", {"inputs": columns})[1]["predictions"])
    # One target: one number per row.
    status, out = one_server.json("POST", "/predict", {"instances": [[1.0], [2.0]]})
    assert status == 200
    np.testing.assert_allclose(out["predictions"], expected(ONE, [[1.0], [2.0]])[:, 0], rtol=1e-5)
    assert server.json("GET", "/health") == (200, {"status": "ok", "model": "multi"})
    status, meta = server.json("GET", "/metadata")
    assert meta["features"] == ["x0", "x1", "x2", "x3"] and meta["targets"] == ["y0", "y1"]


def test_mlflow_invocations(server):
    names = ["x0", "x1", "x2", "x3"]
    order = [3, 0, 2, 1]
    bodies = [
        {"dataframe_split": {"columns": [names[i] for i in order],
                             "data": X[:, order].tolist()}},
        {"dataframe_records": [dict(zip(names, r)) for r in X.tolist()]},
        {"instances": X.tolist()},
        {"inputs": X.tolist()},
    ]
    for body in bodies:
        status, out = server.json("POST", "/invocations", body,
                                  {"Content-Type": "application/json"})
        assert status == 200, out
        close(out["predictions"])
    csv = "id,x3,x2,x1,x0\n" + "".join(f"r{i},{r[3]},{r[2]},{r[1]},{r[0]}\n"
                                       for i, r in enumerate(X.tolist()))
    status, out = server.json("POST", "/invocations", csv, {"Content-Type": "text/csv"})
    assert status == 200
    close(out["predictions"])
    assert server.json("GET", "/ping")[0] == 200


# ------------------------------------------------------------------ bad requests

WIRE_BAD = wire_sample(BAD, 6)


@pytest.mark.parametrize(("path", "body", "status", "message"), WIRE_BAD,
                         ids=[f"{i}-{m[:30]}" for i, (_, _, _, m) in enumerate(WIRE_BAD)])
def test_bad_requests_get_4xx_with_a_json_error(server, path, body, status, message):
    got, out = server.json("POST", path, body, {"Content-Type": "application/json"})
    assert got == status
    assert message in out["error"]
    assert server.json("GET", "/v2/health/live")[0] == 200  # still alive


def test_more_bad_requests(server):
    status, out = server.json("POST", "/invocations", "x0,x1,x2,x3\n1,2,,4\n",
                              {"Content-Type": "text/csv"})
    assert (status, out["error"]) == (400, "CSV body: row 1, column 'x2': missing value")
    status, out = server.json("POST", "/invocations", "a,b\n1,2\n", {"Content-Type": "text/csv"})
    assert status == 400 and "missing feature column(s) x0, x1, x2, x3" in out["error"]
    status, out = server.json("POST", "/invocations", "<x/>", {"Content-Type": "text/xml"})
    assert status == 415
    bomb = gzip.compress(b" " * 10_000_000)  # 10 MB of spaces, ~10 kB compressed
    status, out = server.json("POST", "/predict", bomb, {"Content-Encoding": "gzip"})
    assert status == 413
    status, out = server.json("GET", "/nope")
    assert (status, out) == (404, {"error": "Not Found: GET /nope"})
    header = json.dumps({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    status, _, data = server.request("POST", V2, header + b"\0" * 8, {
        "Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and b"binary_data_size 16" in data


def test_metrics_count_requests_rows_and_latency(server):
    server.json("POST", "/predict", {"instances": X.tolist()})
    server.json("POST", "/predict", {"instances": [[1]]})
    status, _, data = server.request("GET", "/metrics")
    text = data.decode()
    assert status == 200
    assert 'linreg_requests_total{endpoint="predict",model="multi",code="200"}' in text
    assert 'linreg_requests_total{endpoint="predict",model="multi",code="400"}' in text
    rows = [line for line in text.splitlines()
            if line.startswith('linreg_rows_predicted_total{endpoint="predict",model="multi"}')]
    assert int(rows[0].split()[-1]) >= 3
    assert ('linreg_request_duration_seconds_bucket{endpoint="predict",model="multi",le="+Inf"}'
            in text)
    assert "linreg_request_errors_total" in text


def test_openapi_spec(server):
    status, spec = server.json("GET", "/openapi.json")
    assert status == 200
    for path in ("/predict", "/invocations", "/v2/models/{model}/infer", "/v2/health/ready"):
        assert path in spec["paths"]


def test_concurrent_clients_all_get_their_own_answer(server):
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(int(rng.integers(1, 20)), 4)) for _ in range(200)]

    def call(rows):
        status, out = server.json("POST", "/predict", {"instances": rows.tolist()})
        return status, np.asarray(out["predictions"]), rows

    with ThreadPoolExecutor(max_workers=32) as pool:
        for status, got, rows in pool.map(call, batches):
            assert status == 200
            np.testing.assert_allclose(got, expected(MULTI, rows), rtol=1e-5, atol=1e-4)


def test_sigterm_lets_the_request_in_flight_finish():
    s = Server(MULTI)
    body = json.dumps({"instances": X.tolist()}).encode()
    sock = socket.create_connection(("127.0.0.1", s.port))
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)  # the request is in flight: half its body is sent
    time.sleep(0.3)
    sock.sendall(body[10:])
    response = b""
    while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        response += chunk
    sock.close()
    assert response.startswith(b"HTTP/1.1 200")
    close(json.loads(response.split(b"\r\n\r\n", 1)[1])["predictions"])
    assert s.proc.wait(timeout=30) == 0


def test_cli_errors_are_one_line(tmp_path):
    res = subprocess.run([str(BIN / "linreg-serve"), str(tmp_path / "none")], capture_output=True,
                         timeout=60)
    assert res.returncode == 1
    assert res.stderr.decode() == f"linreg-serve: error: {tmp_path}/none: no such model file, " \
                                  "model folder or repository\n"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run([str(BIN / "linreg-serve"), str(MULTI), "--port", str(port)],
                             capture_output=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.decode() == f"linreg-serve: error: cannot listen on 127.0.0.1:{port}: " \
                                  "Address already in use\n"


def test_workers_serve_in_parallel():
    s = Server(MULTI, "--workers", "2")
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda _: s.json("POST", "/predict",
                                                     {"instances": X.tolist()}), range(40)))
        for status, out in results:
            assert status == 200
            close(out["predictions"])
    finally:
        assert s.stop() == 0


def _random_json(rng: np.random.Generator, depth: int = 0):
    """Seeded junk shaped like requests: nested lists/objects of numbers, strings, nulls."""
    kind = rng.integers(0, 7 if depth < 3 else 4)
    if kind == 0:
        return float(rng.normal() * 10.0 ** int(rng.integers(-3, 40)))
    if kind == 1:
        return int(rng.integers(-5, 5))
    if kind == 2:
        return ["x", "", "NaN", "features", "FP32", None, True][rng.integers(0, 7)]
    if kind == 3:
        return None
    if kind in (4, 5):
        return [_random_json(rng, depth + 1) for _ in range(rng.integers(0, 5))]
    keys = ["instances", "inputs", "name", "shape", "datatype", "data", "outputs", "parameters",
            "dataframe_split", "dataframe_records", "columns", "x0", "binary_data_size"]
    return {keys[rng.integers(0, len(keys))]: _random_json(rng, depth + 1)
            for _ in range(rng.integers(0, 4))}


def test_junk_requests_never_get_a_500(server):
    rng = np.random.default_rng(7)
    paths = ["/predict", "/v1/models/multi:predict", V2, "/invocations"]
    for i in range(400):
        body = _random_json(rng)
        if i % 4 == 0:  # wrap in a plausible top level, so parsing gets deeper
            body = {"inputs": [body]} if i % 8 == 0 else {"instances": body}
        status, _, data = server.request("POST", paths[i % len(paths)], json.dumps(body),
                                         {"Content-Type": "application/json"})
        assert status < 500, (body, data)
        if status >= 400:
            assert "error" in json.loads(data)
