"""Start-up of every command, as whole processes, against the plain alternative in the same run.

    .venv/bin/python bench/startup.py              # 5 alternations of each pair (~2 min)
    .venv/bin/python bench/startup.py --repeats 3

Each row runs linreg's command and a bare script doing the same job, alternating, and prints
the medians and their ratio (issue #26's goals: train <= 1.1x, export <= 0.4x, predict <= 1.3x,
serve ready <= 1.5x):

- train the tutorial's 3 rows for 10 epochs: ``linreg-train`` vs a torch script (read the CSV,
  nn.Linear, SGD, save the state_dict);
- export it: ``linreg-export`` (ONNX + TorchScript, parity checked) vs a script running
  ``torch.onnx.export(dynamo=True)`` and ``torch.jit.trace``;
- predict 2 rows of a CSV: ``linreg-predict`` vs an onnxruntime + numpy script;
- serve: ``linreg-serve`` until ``/v2/health/ready`` answers 200 vs a bare uvicorn app that
  loads the same ONNX session.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TUTORIAL = "x,y\n1,2\n2,4\n3,6\n"

BARE_TRAIN = """
import sys, csv, torch
rows = list(csv.DictReader(open(sys.argv[1])))
x = torch.tensor([[float(r["x"])] for r in rows]); y = torch.tensor([[float(r["y"])] for r in rows])
model = torch.nn.Linear(1, 1); opt = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(10):
    cost = torch.nn.functional.mse_loss(model(x), y); opt.zero_grad(); cost.backward(); opt.step()
torch.save(model.state_dict(), sys.argv[2])
"""

BARE_EXPORT = """
import sys, torch
model = torch.nn.Linear(1, 1); model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
x = torch.zeros(3, 1)
torch.onnx.export(model, (x,), sys.argv[2], dynamo=True, input_names=["features"],
                  output_names=["prediction"], dynamic_shapes={"input": {0: torch.export.Dim("b")}})
torch.jit.trace(model, x).save(sys.argv[3])
"""

BARE_PREDICT = """
import sys, numpy as np, onnxruntime as ort
X = np.loadtxt(sys.argv[2], delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)[:, :1]
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
np.savetxt(sys.stdout, s.run(None, {"features": X})[0], delimiter=",")
"""

BARE_SERVE = """
import sys, numpy as np, onnxruntime as ort, uvicorn
from fastapi import FastAPI
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
app = FastAPI()
@app.get("/v2/health/ready")
def ready(): return {"ready": True}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until_ready(cmd: list[str], port: int) -> float:
    """Seconds from the process's start to the first 200 of /v2/health/ready."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < 60:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    return time.perf_counter() - start
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"{cmd[0]} never became ready")
    finally:
        proc.terminate()
        proc.wait()


def pair(label: str, mine, bare, repeats: int, goal: float) -> None:
    a, b = [], []
    for _ in range(repeats):
        a.append(mine())
        b.append(bare())
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{label:<34}{ma:>9.2f}{mb:>9.2f}{ma / mb:>9.2f}x   (goal <= {goal}x)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    # Bytecode for linreg's own modules, as an installed wheel has (an editable install under
    # PYTHONDONTWRITEBYTECODE=1 would compile every module on every start).
    root = Path(__file__).resolve().parent.parent
    subprocess.run([py, "-m", "compileall", "-q", str(root / "serve"), str(root / "trainer")],
                   check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "tut.csv").write_text(TUTORIAL)
        (t / "bare.py").write_text(BARE_TRAIN)
        (t / "bare_export.py").write_text(BARE_EXPORT)
        (t / "bare_predict.py").write_text(BARE_PREDICT)
        (t / "bare_serve.py").write_text(BARE_SERVE)
        train = [str(BIN / "linreg-train"), str(t / "tut.csv"), "--epochs", "10", "--out",
                 str(t / "m"), "--force", "-q"]
        subprocess.run(train, check=True)
        subprocess.run([py, str(t / "bare.py"), str(t / "tut.csv"), str(t / "bare.pt")],
                       check=True)
        print(f"{'whole process, median seconds':<34}{'linreg':>9}{'bare':>9}{'ratio':>10}")
        pair("train the tutorial, 10 epochs", lambda: timed(train),
             lambda: timed([py, str(t / "bare.py"), str(t / "tut.csv"), str(t / "bare.pt")]),
             args.repeats, 1.1)
        pair("export (ONNX + TorchScript)",
             lambda: timed([str(BIN / "linreg-export"), str(t / "m"), "--force", "-q"]),
             lambda: timed([py, str(t / "bare_export.py"), str(t / "bare.pt"),
                            str(t / "b.onnx"), str(t / "b.ts")]), args.repeats, 0.4)
        onnx_path = str(t / "m" / "model.onnx")
        pair("predict 2 rows of a CSV",
             lambda: timed([str(BIN / "linreg-predict"), str(t / "m"), str(t / "tut.csv"),
                            "-o", str(t / "p.csv"), "--force", "-q"]),
             lambda: timed([py, str(t / "bare_predict.py"), onnx_path, str(t / "tut.csv")]),
             args.repeats, 1.3)
        pair("serve: ready (health 200)",
             lambda: until_ready([str(BIN / "linreg-serve"), str(t / "m"), "--port",
                                  str(port := free_port()), "-q"], port),
             lambda: until_ready([py, str(t / "bare_serve.py"), onnx_path,
                                  str(port2 := free_port())], port2), args.repeats, 1.5)


if __name__ == "__main__":
    main()
