"""linreg-serve on loopback: requests/s and p50/p99 latency at 1, 8 and 64 concurrent clients.

    .venv/bin/python bench/serve.py                  # about 30 s
    .venv/bin/python bench/serve.py --seconds 2      # shorter

Each client is a keep-alive HTTP/1.1 connection (asyncio, one process) sending one-row requests
back to back, bounded in count and time. The baseline is the same row through an in-process
``Predictor.predict``. Client and server share this machine's cores, so figures are a floor.
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
from serve.predictor import Predictor  # noqa: E402

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


async def load(port: int, path: str, body: bytes, clients: int, seconds: float,
               max_requests: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    await asyncio.gather(*(client(port, path, body, start + seconds, max_requests, latencies,
                                  errors) for _ in range(clients)))
    return time.perf_counter() - start, latencies, len(errors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    ap.add_argument("--max-requests", type=int, default=20000, help="per client")
    args = ap.parse_args()

    p = Predictor.load(MODEL)
    x = np.array([ROW], dtype=np.float32)
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        p.predict(x)
    in_process = (time.perf_counter() - t) / n

    port = free_port()
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([str(BIN / "linreg-serve"), str(MODEL), "--port", str(port)],
                                  stderr=log)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            print(f"in-process Predictor.predict, one row: {in_process * 1e6:.1f} µs")
            print(f"{'endpoint':<26}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
                  f"{'errors':>8}{'p50 / in-process':>18}")
            for label, (path, body) in BODIES.items():
                for clients in (1, 8, 64):
                    wall, lat, errors = asyncio.run(load(port, path, body, clients, args.seconds,
                                                         args.max_requests))
                    lat_ms = np.array(lat) * 1e3
                    p50, p99 = np.percentile(lat_ms, 50), np.percentile(lat_ms, 99)
                    print(f"{label:<26}{clients:>8}{len(lat) / wall:>10,.0f}{p50:>9.2f}"
                          f"{p99:>9.2f}{errors:>8}{p50 / 1e3 / in_process:>17,.0f}x")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
