"""linreg-serve against its peers: KServe, MLServer and MLflow serving the same ONNX model on
this machine, driven by the same client (bench/serve.py's keep-alive HTTP/1.1 clients), one-row
JSON requests at 1, 8 and 64 concurrent clients.

    python3 -m venv .venv-peers
    .venv-peers/bin/pip install mlserver kserve mlflow onnxruntime onnx
    .venv/bin/python bench/peers.py --peers-python .venv-peers/bin/python   # about 3 min

The peers live in their own virtualenv: their pins (protobuf, fastapi, uvicorn) are not
linreg's. Each serves the model as its documentation shows, with an onnxruntime session:
KServe a ``kserve.Model`` in a ``ModelServer`` (one worker), MLServer an ``MLModel`` runtime
(``parallel_workers`` 0: inference in the server process, its fastest for a small model),
MLflow ``mlflow models serve --env-manager local`` of an ``mlflow.onnx`` model. KServe, MLServer
and linreg answer Open Inference Protocol v2 JSON (``/v2/models/multi/infer``); MLflow speaks
only its own scoring protocol (``/invocations`` with ``{"inputs": {...}}``). Each row prints
linreg's requests/s over the best peer's at that concurrency (issue #26's goal: >= 2.5x) and
every server's p99/p50.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util  # noqa: E402
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# bench/serve.py's client and model (loaded by path: its name is the package's)
_spec = importlib.util.spec_from_file_location("serve_bench", Path(__file__).with_name("serve.py"))
_serve_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_serve_bench)
BODIES, MODEL, ROW = _serve_bench.BODIES, _serve_bench.MODEL, _serve_bench.ROW
free_port, load = _serve_bench.free_port, _serve_bench.load

BIN = Path(sys.executable).parent
V2 = BODIES["/v2/.../infer (v2 JSON)"]
MLFLOW_BODY = json.dumps({"inputs": {"features": [ROW]}}).encode()

KSERVE = """
import sys, numpy as np, onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

class Onnx(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload: InferRequest, headers=None):
        x = payload.inputs[0].as_numpy().astype(np.float32)
        y = self.session.run(None, {"features": x})[0]
        out = InferOutput(name="prediction", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y)
        return InferResponse(response_id=payload.id or "", model_name=self.name,
                             infer_outputs=[out])

ModelServer(http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), workers=1,
            enable_latency_logging=False).start([Onnx("multi", sys.argv[1])])
"""

MLSERVER_RUNTIME = """
import numpy as np, onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

class Onnx(MLModel):
    async def load(self) -> bool:
        self.session = ort.InferenceSession(self.settings.parameters.uri,
                                            providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        y = self.session.run(None, {"features": x})[0]
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("prediction", y)])
"""

MLFLOW_SAVE = """
import sys, onnx, mlflow.onnx
mlflow.onnx.save_model(onnx.load(sys.argv[1]), sys.argv[2])
"""


def wait_ready(port: int, path: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"not ready on {port}{path}")


def start(name: str, peers: str, work: Path) -> tuple[subprocess.Popen, int, str, bytes]:
    """One server on a free port: (process, port, path, body)."""
    port, other, metrics = free_port(), free_port(), free_port()
    onnx_path = str(MODEL / "model.onnx")
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    if name == "linreg":
        cmd = [str(BIN / "linreg-serve"), str(MODEL), "--port", str(port), "-q"]
        ready, (path, body) = "/v2/health/ready", V2
    elif name == "kserve":
        (work / "kserve_server.py").write_text(KSERVE)
        cmd = [peers, str(work / "kserve_server.py"), onnx_path, str(port), str(other)]
        ready, (path, body) = "/v2/health/ready", V2
    elif name == "mlserver":
        folder = work / "mlserver"
        folder.mkdir(exist_ok=True)
        (folder / "onnx_runtime.py").write_text(MLSERVER_RUNTIME)
        (folder / "settings.json").write_text(json.dumps({
            "http_port": port, "grpc_port": other, "metrics_port": metrics,
            "parallel_workers": 0, "host": "127.0.0.1"}))
        (folder / "model-settings.json").write_text(json.dumps({
            "name": "multi", "implementation": "onnx_runtime.Onnx",
            "parameters": {"uri": onnx_path}}))
        cmd = [str(Path(peers).parent / "mlserver"), "start", str(folder)]
        ready, (path, body) = "/v2/health/ready", V2
    else:  # mlflow
        model_dir = work / "mlflow_model"
        if not model_dir.exists():
            (work / "mlflow_save.py").write_text(MLFLOW_SAVE)
            subprocess.run([peers, str(work / "mlflow_save.py"), onnx_path, str(model_dir)],
                           check=True, capture_output=True)
        cmd = [str(Path(peers).parent / "mlflow"), "models", "serve", "-m", str(model_dir),
               "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)]
        ready, path, body = "/ping", "/invocations", MLFLOW_BODY
    env = {**os.environ, "PATH": f"{Path(peers).parent}:{os.environ['PATH']}"}  # mlflow runs uvicorn
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env)
    wait_ready(port, ready, proc)
    return proc, port, path, body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers-python", required=True,
                    help="the python of a virtualenv with mlserver, kserve and mlflow")
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    ap.add_argument("--servers", default="linreg,kserve,mlserver,mlflow")
    args = ap.parse_args()
    names = args.servers.split(",")
    results: dict[tuple[str, int], tuple[float, float, float, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in names:
            proc, port, path, body = start(name, args.peers_python, work)
            try:
                first = asyncio.run(load(port, path, body, 1, 0.5, 100))  # warm, and check
                if first[2]:
                    raise RuntimeError(f"{name} refused the request: see its log in {work}")
                for clients in (1, 8, 64):
                    wall, lat, errors = asyncio.run(load(port, path, body, clients,
                                                         args.seconds, 10**6))
                    ms = np.array(lat) * 1e3
                    results[name, clients] = (len(lat) / wall, float(np.percentile(ms, 50)),
                                              float(np.percentile(ms, 99)), errors)
                    print(f"  {name}, {clients} clients: {len(lat) / wall:,.0f} req/s",
                          file=sys.stderr, flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    print(f"{'server':<10}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99/p50':>9}"
          f"{'errors':>8}")
    for (name, clients), (rps, p50, p99, errors) in results.items():
        print(f"{name:<10}{clients:>8}{rps:>10,.0f}{p50:>9.2f}{p99:>9.2f}{p99 / p50:>9.1f}"
              f"{errors:>8}")
    if "linreg" in names and len(names) > 1:
        print("\nlinreg's requests/s over the best peer's (goal >= 2.5x):")
        for clients in (1, 8, 64):
            best = max((results[n, clients][0], n) for n in names if n != "linreg")
            print(f"  {clients:>3} clients: {results['linreg', clients][0] / best[0]:.2f}x "
                  f"(best peer: {best[1]})")


if __name__ == "__main__":
    main()
