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
"""

from __future__ import annotations

import argparse
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
    args = ap.parse_args()
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


def write_parts(folder: Path, rows: int, parts: int = 8) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    for i in range(parts):
        n = rows // parts
        X = rng.normal(size=(n, 16))
        cols = {f"x{j}": X[:, j] for j in range(16)} | {"y": X @ np.arange(16.0) + 1.0}
        pq.write_table(pa.table(cols), folder / f"part-{i}.parquet", row_group_size=65536)


def scan_floor(folder: Path) -> float:
    """Seconds for a bare pyarrow dataset scan of ``folder`` into float64 numpy batches."""
    import pyarrow.dataset as pads

    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for batch in pads.dataset(folder, format="parquet").to_batches(batch_size=65536):
            np.column_stack([c.to_numpy() for c in batch.columns])
        best = min(best, time.perf_counter() - t)
    return best


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


def streamed(rows: int, short: int, long: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "parts"
        folder.mkdir()
        write_parts(folder, rows)
        floor = scan_floor(folder)
        print(f"\nstreamed, {rows:,} x 16 in 8 Parquet files, full batch: rows/s of one epoch")
        print(f"{'run':<40}{'s/epoch':>10}{'rows/s':>14}{'vs scan floor':>15}")
        print(f"{'bare pyarrow.dataset scan (the floor)':<40}{floor:>10.3f}{rows / floor:>14,.0f}"
              f"{1.0:>14.2f}x")
        for label, extra in (("1 process, re-read each epoch", ["--max-memory", "1M"]),
                             ("1 process, kept in memory", []),
                             ("2 processes, re-read each epoch", ["--max-memory", "1M",
                                                                  "--nproc", "2"]),
                             ("2 processes, kept in memory", ["--nproc", "2"])):
            sec = streamed_epoch(folder, Path(tmp) / "m", extra, short, long)
            print(f"{label:<40}{sec:>10.3f}{rows / sec:>14,.0f}{floor / sec:>14.2f}x")


if __name__ == "__main__":
    main()
