"""linreg-serve's own CPU per request, without sockets: the ASGI app driven directly.

    .venv/bin/python bench/asgi.py

Each request is a real call of the app (routing, body, parsing, the data plane, predicting
through the serving core, the response and the metrics middleware), sequential, on one event
loop; the figure is the best of 5 runs of 3,000 (after 300 warm-up requests), in µs. The
prediction itself (an in-process ``Predictor.predict`` of the same row) is printed beside it:
what the server adds is the difference. Compare two versions by running this file from each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from serve.runtime.predictor import Predictor  # noqa: E402
from serve.server.app import create_app  # noqa: E402
from serve.server.repository import Repository  # noqa: E402

MODEL = ROOT / "tests" / "fixtures" / "models" / "multi"
ROW = [0.5, -1.0, 2.0, 3.5]
V2 = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
BODIES = {
    "/predict (v1 JSON)": ("/predict", {"instances": [ROW]}),
    "/v2/.../infer (v2 JSON)": ("/v2/models/multi/infer", V2),
    "/v2/.../infer, refused (400)": ("/v2/models/multi/infer",
                                     {"inputs": [{**V2["inputs"][0], "name": "x"}]}),
}


async def call(app, path: str, body: bytes) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 8000),
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = []

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)  # a client that sent everything: wait
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def main() -> None:
    logging.getLogger("linreg.serve").setLevel(logging.ERROR)
    app = create_app(Repository.open(MODEL))
    predictor = Predictor.load(MODEL)
    x = [ROW]
    start = time.perf_counter()
    for _ in range(20000):
        predictor.predict(x)
    print(f"in-process Predictor.predict, one row: "
          f"{(time.perf_counter() - start) / 20000 * 1e6:.1f} µs")
    async with app.router.lifespan_context(app):
        for label, (path, payload) in BODIES.items():
            body = json.dumps(payload).encode()
            for _ in range(300):
                await call(app, path, body)
            best = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(3000):
                    status = await call(app, path, body)
                best.append((time.perf_counter() - start) / 3000 * 1e6)
            print(f"{label:<32} status {status}: {min(best):7.1f} µs a request")


if __name__ == "__main__":
    asyncio.run(main())
