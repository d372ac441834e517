"""Runtime speed and memory, each as a ratio against a baseline measured in the same run.

    .venv/bin/python bench/predict.py                 # 5,000,000-row CSV (about 2 GB of disk)
    .venv/bin/python bench/predict.py --rows 500000   # smaller

1. Batch prediction of an N x 16 CSV to CSV (``serve.batch.files.predict_file``) against the
   sequential floor: stream the same CSV with pyarrow, multiply by the weights (numpy), write
   the column (issue #26's goal: <= 0.65x its time, by overlapping the three).
2. Peak RSS of ``linreg-predict`` at N rows vs N/10 rows (target <= 1.2x).
3. ``Predictor.predict`` on one row vs a bare ``InferenceSession.run`` (target <= 1.5x).
4. A whole process that imports the runtime, loads the model and predicts one row, vs the same
   with TorchScript through torch (target <= 0.3x).
5. ``linreg-predict`` on a folder of 8 Parquet parts with ``--engine dask --workers 2`` and
   ``--engine spark --master local[2]`` against ``--engine local``: rows/s of the whole command
   (cluster start-up included, which dominates small inputs) and peak RSS per worker process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from serve.batch.files import predict_file  # noqa: E402
from serve.batch.readers import _csv_block_size  # noqa: E402
from serve.runtime.predictor import Predictor  # noqa: E402

BIN = Path(sys.executable).parent
N_FEATURES = 16


def make_model(work: Path) -> Path:
    """Train and export a 16-feature model with the real console scripts."""
    data = work / "train.csv"
    subprocess.run([BIN / "linreg-synth", data, "--samples", "2000", "--features",
                    str(N_FEATURES)], check=True, capture_output=True)
    model = work / "model"
    subprocess.run([BIN / "linreg-train", data, "--solver", "lstsq", "--out", model, "-q"],
                   check=True)
    subprocess.run([BIN / "linreg-export", model, "-q"], check=True)
    return model


def make_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    names = [f"x{i}" for i in range(N_FEATURES)] + ["y"]
    with pacsv.CSVWriter(path, pa.schema([(n, pa.float32()) for n in names])) as w:
        for start in range(0, rows, 500_000):
            n = min(500_000, rows - start)
            block = rng.normal(0, 5, size=(n, N_FEATURES + 1)).astype(np.float32)
            w.write_table(pa.table({c: block[:, i] for i, c in enumerate(names)}))


def floor_read_write(src: Path, dst: Path, weights: np.ndarray) -> int:
    """No runtime: stream the CSV with pyarrow (the same columns, types and block size as
    linreg-predict asks for, the fastest pyarrow offers), multiply by the weights, and write
    the column back out, one step after the other."""
    features = [f"x{i}" for i in range(N_FEATURES)]
    reader = pacsv.open_csv(src, read_options=pacsv.ReadOptions(
        block_size=_csv_block_size(src, 65536)), convert_options=pacsv.ConvertOptions(
        column_types={f: pa.float64() for f in features}, include_columns=features))
    n = 0
    with pacsv.CSVWriter(dst, pa.schema([("y", pa.float32())])) as w:
        for batch in reader:
            x = np.column_stack([c.to_numpy() for c in batch.columns]).astype(np.float32)
            w.write_batch(pa.record_batch([pa.array((x @ weights)[:, 0])], names=["y"]))
            n += batch.num_rows
    return n


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def peak_rss_mib(cmd: list) -> float:
    """Peak resident memory of one child process, in MiB (ru_maxrss of the waited child)."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN)"
            ".ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *map(str, cmd)], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024


def row(name: str, ours: str, base: str, ratio: float, target: str) -> None:
    ok = eval(f"{ratio:.4f} {target}")  # targets are like '>= 0.8'
    print(f"{name:<44}{ours:>16}{base:>16}{ratio:>8.2f}x  {target:<7}{'ok' if ok else 'MISSED'}")


def engines(work: Path, model: Path, rows: int) -> None:
    """5. The cluster engines against the local one, on the same 8 Parquet parts."""
    import pyarrow.parquet as pq

    parts = work / "parts"
    parts.mkdir()
    rng = np.random.default_rng(2)
    for i in range(8):
        X = rng.normal(size=(rows // 8, N_FEATURES))
        pq.write_table(pa.table({f"x{j}": X[:, j] for j in range(N_FEATURES)}),
                       parts / f"part-{i}.parquet")
    print(f"\n8 Parquet parts, {rows:,} rows in all: linreg-predict PARTS -o OUT --engine ...")
    print(f"{'engine':<30}{'seconds':>10}{'rows/s':>14}{'vs local':>10}{'peak RSS/worker':>18}")
    base = None
    for label, args in (("local", []), ("dask, 2 workers", ["--engine", "dask", "--workers", "2"]),
                        ("spark, local[2]", ["--engine", "spark", "--master", "local[2]"])):
        report = work / f"rss-{label.split(',')[0]}"
        report.mkdir()
        env = {**os.environ, "LINREG_WORKER_RSS": str(report)}
        t = time.perf_counter()
        subprocess.run([BIN / "linreg-predict", model, parts, "-o", work / "out-parts", "-q",
                        "--force", *args], check=True, env=env)
        sec = time.perf_counter() - t
        base = base or sec
        peaks = [int(f.read_text()) / 1024 for f in report.iterdir()]
        rss = f"{max(peaks):,.0f} MiB x{len(peaks)}" if args else "(one process)"
        print(f"{label:<30}{sec:>10.2f}{rows / sec:>14,.0f}{base / sec:>9.2f}x{rss:>18}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine-rows", type=int, default=2_000_000,
                    help="rows of the engines' comparison (5.); 0 skips it")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="linreg-bench-"))
    try:
        run(work, args.rows, args.repeats)
        if args.engine_rows:
            engines(work, work / "model", args.engine_rows)
    finally:
        subprocess.run(["rm", "-rf", str(work)])


def run(work: Path, rows: int, repeats: int) -> None:
    model = make_model(work)
    big, small = work / "big.csv", work / "small.csv"
    make_csv(big, rows)
    make_csv(small, rows // 10)
    if rows // 10 < 500_000:
        print("note: the RSS ratio is only meaningful when N/10 rows span several chunks")
    predictor = Predictor.load(model)
    print(f"{rows:,} x {N_FEATURES} CSV ({big.stat().st_size / 2**20:,.0f} MiB), "
          f"{os.cpu_count()} CPUs")
    print(f"{'measure':<44}{'linreg':>16}{'baseline':>16}{'ratio':>9}  {'target':<7}")

    # 1. Throughput against the read-and-write floor.
    out = work / "out.csv"
    weights = np.random.default_rng(2).normal(size=(N_FEATURES, 1)).astype(np.float32)
    t_floor = best_of(lambda: floor_read_write(big, work / "floor.csv", weights), repeats)
    t_ours = best_of(lambda: predict_file(predictor, big, out, force=True), repeats)
    row("batch CSV->CSV seconds (vs read,matvec,write)", f"{t_ours:.2f}", f"{t_floor:.2f}",
        t_ours / t_floor, "<= 0.65")

    # 2. Memory stays flat.
    cmd = [BIN / "linreg-predict", model]
    rss_big = peak_rss_mib([*cmd, big, "-o", work / "o1.csv", "-q"])
    rss_small = peak_rss_mib([*cmd, small, "-o", work / "o2.csv", "-q"])
    row(f"peak RSS MiB, {rows:,} vs {rows // 10:,} rows", f"{rss_big:,.0f}", f"{rss_small:,.0f}",
        rss_big / rss_small, "<= 1.2")

    # 3. One-row latency against a bare onnxruntime session.
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model / "model.onnx"), opts,
                                providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(1, N_FEATURES)).astype(np.float32)
    n = 20000

    def bare():
        for _ in range(n):
            sess.run(["prediction"], {"features": x})

    def ours():
        for _ in range(n):
            predictor.predict(x)

    def ours_list():
        r = x[0].tolist()
        for _ in range(n):
            predictor.predict([r])

    t_bare = best_of(bare, repeats) / n
    t_pred = best_of(ours, repeats) / n
    row("one row: Predictor.predict(ndarray) µs", f"{t_pred * 1e6:.1f}", f"{t_bare * 1e6:.1f}",
        t_pred / t_bare, "<= 1.5")
    t_list = best_of(ours_list, repeats) / n
    row("one row: Predictor.predict(list) µs (info)", f"{t_list * 1e6:.1f}",
        f"{t_bare * 1e6:.1f}", t_list / t_bare, "<= 99")

    # 4. A whole short-lived process: runtime vs torch + TorchScript.
    feats = [0.5] * N_FEATURES
    rt = (f"import serve; p = serve.Predictor.load({str(model)!r}); p.predict([{feats}])")
    ts = (f"import warnings; warnings.simplefilter('ignore'); import torch; "
          f"m = torch.jit.load({str(model / 'model.torchscript.pt')!r}); "
          f"m(torch.tensor([{feats}]))")
    t_rt = best_of(lambda: subprocess.run([sys.executable, "-c", rt], check=True), 5)
    t_ts = best_of(lambda: subprocess.run([sys.executable, "-c", ts], check=True), 5)
    row("process: import+load+predict 1 row, s", f"{t_rt:.3f}", f"{t_ts:.3f}", t_rt / t_ts,
        "<= 0.3")


if __name__ == "__main__":
    main()
