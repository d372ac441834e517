"""linreg-serve on loopback: requests/s and p50/p99 latency at 1, 8 and 64 concurrent clients,
over HTTP (v1 and v2 JSON) and gRPC (ModelInfer), and at 64 clients with dynamic batching off
and on.

    .venv/bin/python bench/serve.py                  # about 90 s
    .venv/bin/python bench/serve.py --seconds 2      # shorter

Each HTTP client is a keep-alive HTTP/1.1 connection (asyncio, one process) sending one-row
requests back to back, bounded in count and time; each gRPC client is its own grpc.aio channel
sending ModelInfer with raw_input_contents, as tritonclient does. The baseline is the same row
through an in-process ``Predictor.predict``. Client and server share this machine's cores, so
figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from serve.runtime.predictor import Predictor  # noqa: E402

BIN = Path(sys.executable).parent
MODEL = ROOT / "tests" / "fixtures" / "models" / "multi"  # 4 features -> 2 targets
ROW = [0.5, -1.0, 2.0, 3.5]
BODIES = {
    "/predict (v1 JSON)": ("/predict", json.dumps({"instances": [ROW]}).encode()),
    "/v2/.../infer (v2 JSON)": ("/v2/models/multi/infer", json.dumps({"inputs": [{
        "name": "features", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}).encode()),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def client(port: int, path: str, body: bytes, deadline: float, max_requests: int,
                 latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    try:
        for _ in range(max_requests):
            if time.perf_counter() > deadline:
                break
            t = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            if b" 200 " not in status:
                errors.append(1)
    finally:
        writer.close()


async def grpc_client(port: int, deadline: float, max_requests: int, latencies: list[float],
                      errors: list[int]) -> None:
    import grpc

    from serve.server.proto import inference_pb2 as pb
    from serve.server.proto import inference_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="multi", raw_input_contents=[
        np.array([ROW], dtype="<f4").tobytes()])
    request.inputs.add(name="features", datatype="FP32", shape=[1, len(ROW)])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(max_requests):
            if time.perf_counter() > deadline:
                break
            t = time.perf_counter()
            try:
                await stub.ModelInfer(request, timeout=30)
            except grpc.aio.AioRpcError:
                errors.append(1)
            latencies.append(time.perf_counter() - t)


async def load(port: int, path: str | None, body: bytes, clients: int, seconds: float,
               max_requests: int) -> tuple[float, list[float], int]:
    """``clients`` concurrent clients for ``seconds``: HTTP to ``path``, or gRPC (None)."""
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    if path is None:
        await asyncio.gather(*(grpc_client(port, start + seconds, max_requests, latencies,
                                           errors) for _ in range(clients)))
    else:
        await asyncio.gather(*(client(port, path, body, start + seconds, max_requests,
                                      latencies, errors) for _ in range(clients)))
    return time.perf_counter() - start, latencies, len(errors)


class Served:
    """linreg-serve on free HTTP and gRPC ports, with extra flags."""

    def __init__(self, *flags: str) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([str(BIN / "linreg-serve"), str(MODEL), "--port",
                                      str(self.port), "--grpc-port", str(self.grpc_port), "-q",
                                      *flags], stderr=self.log)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("linreg-serve did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    ap.add_argument("--max-requests", type=int, default=20000, help="per client")
    ap.add_argument("--batch-delay-us", type=int, default=1000,
                    help="--max-batch-delay-us of the batching server")
    args = ap.parse_args()

    p = Predictor.load(MODEL)
    x = np.array([ROW], dtype=np.float32)
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        p.predict(x)
    in_process = (time.perf_counter() - t) / n
    targets = {**BODIES, "gRPC ModelInfer": (None, b"")}

    def measure(server: Served, label: str, clients: int) -> None:
        path, body = targets[label]
        port = server.grpc_port if path is None else server.port
        wall, lat, errors = asyncio.run(load(port, path, body, clients, args.seconds,
                                             args.max_requests))
        lat_ms = np.array(lat) * 1e3
        p50, p99 = np.percentile(lat_ms, 50), np.percentile(lat_ms, 99)
        print(f"{label:<26}{clients:>8}{len(lat) / wall:>10,.0f}{p50:>9.2f}"
              f"{p99:>9.2f}{errors:>8}{p50 / 1e3 / in_process:>17,.0f}x")

    print(f"in-process Predictor.predict, one row: {in_process * 1e6:.1f} µs")
    header = (f"{'endpoint':<26}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'errors':>8}{'p50 / in-process':>18}")
    plain = Served()
    try:
        print(header)
        for label in targets:
            for clients in (1, 8, 64):
                measure(plain, label, clients)
    finally:
        plain.stop()
    batching = Served("--max-batch-delay-us", str(args.batch_delay_us))
    try:
        print(f"\n64 clients, dynamic batching on (--max-batch-delay-us "
              f"{args.batch_delay_us}); compare with the 64-client rows above")
        print(header)
        for label in targets:
            measure(batching, label, 64)
    finally:
        batching.stop()


if __name__ == "__main__":
    main()
