"""Fitting-loop speed against the bare tutorial loop, in one run, as ratios.

    .venv/bin/python bench/train.py            # full run (about a minute)
    .venv/bin/python bench/train.py --quick    # smaller sizes, for a smoke test

Per-epoch time is measured as (T(long run) - T(short run)) / (extra epochs), for both linreg's
``fit`` and the bare loop (forward, ``F.mse_loss``, ``zero_grad``, ``backward``, ``step``), so
one-time set-up (building tensors, the first optimizer import) cancels out of both.
Targets: at most 1.1x on the tutorial's 3 points, at most 1.1x on 1,000,000 x 16 full batch.

Streamed training (``linreg-train`` on a folder of 8 Parquet files, run as a user runs it): the
rows/s of one full-batch epoch, again as (T(long) - T(short)) / extra epochs, re-reading the
files each epoch (``--max-memory 1M``) and keeping them (the default budget), in 1 and 2
processes; against the floor, a bare ``pyarrow.dataset`` scan of the same files into numpy.
Then the streamed exact fit (``--solver lstsq``, re-read) as a whole process, less a tiny run's
start-up, and its passes over the data; and an encoded epoch (the same files with a text column
``city``), each against the scan floor of its files (goal: at most 2x).

    .venv/bin/python bench/train.py --streamed-only --rows 10000000   # the issue's size
    .venv/bin/python bench/train.py --memory      # peak RSS, CSV of 1M vs 10M rows (text, blanks)
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
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trainer.fit import TrainConfig, fit  # noqa: E402


class TutorialModel(torch.nn.Module):
    """The tutorial's nn.Module: one nn.Linear, forward returns it applied."""

    def __init__(self, n_features: int, n_targets: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def bare_loop(X: np.ndarray, Y: np.ndarray, epochs: int) -> None:
    """The tutorial's loop, nothing else."""
    torch.manual_seed(1)
    model = TutorialModel(X.shape[1], Y.shape[1])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.as_tensor(X, dtype=torch.float32)
    y = torch.as_tensor(Y, dtype=torch.float32)
    for _ in range(epochs):
        cost = F.mse_loss(model(x), y)
        opt.zero_grad()
        cost.backward()
        opt.step()


def linreg_fit(X: np.ndarray, Y: np.ndarray, epochs: int) -> None:
    fit(X, Y, TrainConfig(epochs=epochs, lr=0.01, device="cpu"))


def per_epoch(fn, X, Y, short: int, long: int, repeats: int) -> float:
    def best(epochs: int) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(X, Y, epochs)
            times.append(time.perf_counter() - t)
        return min(times)
    return (best(long) - best(short)) / (long - short)


def read_twice_floor(X: np.ndarray) -> float:
    """The floor of one full-batch epoch: reading the data twice (forward and gradient)."""
    x = torch.as_tensor(X, dtype=torch.float32)
    times = []
    for _ in range(10):
        t = time.perf_counter()
        x.sum()
        x.sum()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--streamed-only", action="store_true", help="only the streamed rows")
    ap.add_argument("--rows", type=int, default=None, help="rows of the streamed dataset")
    ap.add_argument("--no-sgd-epochs", action="store_true",
                    help="skip the streamed SGD epochs (the exact fit and the encoded epoch only)")
    ap.add_argument("--memory", action="store_true",
                    help="only the peak RSS of a streamed CSV fit, 1M against 10M rows")
    args = ap.parse_args()
    if args.memory:
        memory()
        return
    if args.streamed_only:
        rows = args.rows or 1_000_000
        streamed(rows, 2, 12 if not args.quick else 6, sgd_epochs=not args.no_sgd_epochs)
        return
    torch.set_num_threads(torch.get_num_threads())
    rows = 100_000 if args.quick else 1_000_000
    tiny_x = np.array([[1.0], [2.0], [3.0]])
    big_x = np.random.default_rng(0).normal(size=(rows, 16))
    big_y = big_x @ np.arange(16.0) + 1.0
    linreg_fit(tiny_x, 2 * tiny_x, 10)  # warm up imports and allocator

    cases = [
        ("3 x 1 (tutorial)", tiny_x, 2 * tiny_x, (2000, 12000) if not args.quick else (500, 3000),
         1.10),
        (f"{rows:,} x 16 full batch", big_x, big_y[:, None], (5, 25) if not args.quick else (2, 6),
         1.10),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'data':<26}{'bare µs/epoch':>15}{'linreg µs/epoch':>17}{'ratio':>8}{'target':>8}"
          f"{'read-twice floor µs':>21}")
    for name, X, Y, (short, long), target in cases:
        bare = per_epoch(bare_loop, X, Y, short, long, repeats=3)
        ours = per_epoch(linreg_fit, X, Y, short, long, repeats=3)
        floor = read_twice_floor(X) if X.shape[0] > 3 else float("nan")
        print(f"{name:<26}{bare * 1e6:>15.1f}{ours * 1e6:>17.1f}{ours / bare:>7.2f}x"
              f"{'<=' + str(target) + 'x':>8}{floor * 1e6:>21.1f}")
    streamed(rows, 2, 12 if not args.quick else 6)


CITIES = np.array(["Paris", "Lyon", "Nice", "Lille", "Nantes", "Brest", "Metz", "Caen"])


def write_parts(folder: Path, rows: int, parts: int = 8, *, text: bool = False) -> None:
    """``parts`` Parquet files of 16 normal features and y (``text``: and a ``city`` column
    of 8 levels that shifts y)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    for i in range(parts):
        n = rows // parts
        X = rng.normal(size=(n, 16))
        y = X @ np.arange(16.0) + 1.0
        cols = {f"x{j}": X[:, j] for j in range(16)}
        if text:
            city = rng.integers(0, len(CITIES), n)
            cols["city"] = pa.array(CITIES[city])
            y = y + city
        pq.write_table(pa.table(cols | {"y": y}), folder / f"part-{i}.parquet",
                       row_group_size=65536)


def scan_floor(folder: Path) -> float:
    """Seconds for a bare pyarrow dataset scan of ``folder`` into numpy batches (float64; a
    text column as its dictionary codes, the least an encoding must do)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    def column(c) -> np.ndarray:
        if pa.types.is_string(c.type) or pa.types.is_large_string(c.type):
            return c.dictionary_encode().indices.to_numpy().astype(np.float64)
        return c.to_numpy()

    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for batch in pads.dataset(folder, format="parquet").to_batches(batch_size=65536):
            np.column_stack([column(c) for c in batch.columns])
        best = min(best, time.perf_counter() - t)
    return best


def _train(folder: Path, out: Path, *extra: str) -> tuple[float, dict]:
    """Wall seconds of one linreg-train run, and its manifest."""
    import json

    t = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "linreg-train"), str(folder), "--out",
                    str(out), "--force", "-q", *extra], check=True)
    wall = time.perf_counter() - t
    return wall, json.loads((out / "model.json").read_text())


def exact_fit(folder: Path, tmp: Path, rows: int, floor: float) -> None:
    """The streamed exact fit, re-reading (no file kept): whole-process seconds less the
    start-up of the same command on a tiny dataset, its passes, 1 and 2 processes."""
    tiny = tmp / "tiny"
    tiny.mkdir()
    write_parts(tiny, 64, parts=1)
    print(f"\nstreamed exact fit (--solver lstsq --max-memory 1M), {rows:,} x 16, against the "
          "scan floor")
    print(f"{'run':<40}{'wall s':>9}{'less start-up':>15}{'passes':>8}{'/ floor':>10}")
    for label, extra in (("1 process", []), ("2 processes", ["--nproc", "2"])):
        args = ["--solver", "lstsq", "--dtype", "float64", "--max-memory", "1M", *extra]
        start_up = min(_train(tiny, tmp / "t", *args)[0] for _ in range(2))
        wall, manifest = min((_train(folder, tmp / "m", *args) for _ in range(2)),
                             key=lambda r: r[0])
        fit = wall - start_up
        print(f"{label:<40}{wall:>9.2f}{fit:>15.2f}"
              f"{manifest['training']['streamed']['passes']:>8}{fit / floor:>9.2f}x")


def memory() -> None:
    """Peak RSS of a streamed fit of a CSV over --max-memory with a text column and blanks
    (--impute mean: the encoding pass, then the scan), 1M rows against 10M (goal: at most
    1.2x)."""
    import json

    import pyarrow as pa
    import pyarrow.csv as pacsv

    print("peak RSS of linreg-train on a CSV with a text column and blanks, --max-memory 64M")
    print(f"{'rows':>12}{'CSV MB':>9}{'wall s':>9}{'passes':>8}{'peak RSS MB':>13}")
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (1_000_000, 10_000_000):
            path = Path(tmp) / f"d{rows}.csv"
            rng = np.random.default_rng(1)
            with pacsv.CSVWriter(path, pa.schema([("a", pa.float64()), ("b", pa.float64()),
                                                  ("c", pa.float64()), ("city", pa.string()),
                                                  ("y", pa.float64())])) as w:
                for at in range(0, rows, 500_000):
                    n = min(500_000, rows - at)
                    X = rng.normal(size=(n, 3))
                    city = rng.integers(0, len(CITIES), n)
                    y = X @ [1.0, -2.0, 0.5] + city + rng.normal(size=n) * 0.1
                    a = pa.array(X[:, 0], mask=rng.random(n) < 0.01)  # blanks
                    w.write_table(pa.table({"a": a, "b": X[:, 1], "c": X[:, 2],
                                            "city": CITIES[city], "y": y}))
            t = time.perf_counter()
            proc = subprocess.Popen([str(Path(sys.executable).parent / "linreg-train"),
                                     str(path), "--solver", "lstsq", "--impute", "mean",
                                     "--max-memory", "64M", "--out", str(Path(tmp) / "m"),
                                     "--force", "-q"])
            _, status, usage = os.wait4(proc.pid, 0)
            assert status == 0, status
            wall = time.perf_counter() - t
            passes = json.loads((Path(tmp) / "m" / "model.json").read_text())[
                "training"]["streamed"]["passes"]
            peaks.append(usage.ru_maxrss / 1024)  # KiB on Linux
            print(f"{rows:>12,}{path.stat().st_size / 1e6:>9.0f}{wall:>9.1f}{passes:>8}"
                  f"{peaks[-1]:>13.0f}")
            path.unlink()
    print(f"10M / 1M peak RSS: {peaks[1] / peaks[0]:.2f}x (goal <= 1.2x)")


def streamed_epoch(folder: Path, out: Path, extra: list[str], short: int, long: int) -> float:
    """Seconds per streamed full-batch epoch of linreg-train: the fit's own time (the
    manifest's ``training.seconds``: no start-up, no first pass), long run minus short run."""
    import json

    def run(epochs: int) -> float:
        subprocess.run([str(Path(sys.executable).parent / "linreg-train"), str(folder),
                        "--epochs", str(epochs), "--lr", "0.01", "--out", str(out), "--force",
                        "-q", "--batch-rows", "65536", *extra], check=True)
        return json.loads((out / "model.json").read_text())["training"]["seconds"]
    return (min(run(long) for _ in range(2)) - min(run(short) for _ in range(2))) / (long - short)


def streamed(rows: int, short: int, long: int, *, sgd_epochs: bool = True) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "parts"
        folder.mkdir()
        write_parts(folder, rows)
        floor = scan_floor(folder)
        print(f"\nstreamed, {rows:,} x 16 in 8 Parquet files, full batch: rows/s of one epoch")
        print(f"{'run':<40}{'s/epoch':>10}{'rows/s':>14}{'time / floor':>15}")
        print(f"{'bare pyarrow.dataset scan (the floor)':<40}{floor:>10.3f}{rows / floor:>14,.0f}"
              f"{1.0:>14.2f}x")
        for label, extra in () if not sgd_epochs else (
                ("1 process, re-read each epoch", ["--max-memory", "1M"]),
                             ("1 process, kept in memory", []),
                             ("2 processes, re-read each epoch", ["--max-memory", "1M",
                                                                  "--nproc", "2"]),
                             ("2 processes, kept in memory", ["--nproc", "2"])):
            sec = streamed_epoch(folder, Path(tmp) / "m", extra, short, long)
            print(f"{label:<40}{sec:>10.3f}{rows / sec:>14,.0f}{sec / floor:>14.2f}x")
        exact_fit(folder, Path(tmp), rows, floor)
        text = Path(tmp) / "text"
        text.mkdir()
        write_parts(text, rows, text=True)
        floor = scan_floor(text)
        sec = streamed_epoch(text, Path(tmp) / "m", ["--max-memory", "1M"], 1, 4)
        print(f"\nencoded epoch (a text column city, 8 levels; re-read), {rows:,} rows")
        print(f"{'run':<40}{'s/epoch':>10}{'rows/s':>14}{'time / floor':>15}")
        print(f"{'bare scan (text as dictionary codes)':<40}{floor:>10.3f}"
              f"{rows / floor:>14,.0f}{1.0:>14.2f}x")
        print(f"{'1 process, encoded chunk by chunk':<40}{sec:>10.3f}{rows / sec:>14,.0f}"
              f"{sec / floor:>14.2f}x")


if __name__ == "__main__":
    main()
