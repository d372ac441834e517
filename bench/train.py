"""Fitting-loop speed against the bare tutorial loop, in one run, as ratios.

    .venv/bin/python bench/train.py            # full run (about a minute)
    .venv/bin/python bench/train.py --quick    # smaller sizes, for a smoke test

Per-epoch time is measured as (T(long run) - T(short run)) / (extra epochs), for both linreg's
``fit`` and the bare loop (forward, ``F.mse_loss``, ``zero_grad``, ``backward``, ``step``), so
one-time set-up (building tensors, the first optimizer import) cancels out of both.
Targets: at most 1.1x on the tutorial's 3 points, at most 1.1x on 1,000,000 x 16 full batch.
"""

from __future__ import annotations

import argparse
import sys
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


if __name__ == "__main__":
    main()
