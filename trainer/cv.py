"""Choosing the penalty's α by K-fold cross-validation (``--cv K --alpha a,b,c``), as
scikit-learn's RidgeCV, LassoCV and ElasticNetCV choose it, in memory and streamed alike:

1. each training row goes to fold ⌊u·K⌋, u a seeded hash of its (file, row)
   (:func:`trainer.dataset.row_hash`, drawn apart from the validation rows'): the same folds
   in every run, at every size and for any number of processes;
2. one pass gathers per fold the (weighted) count, means and centred cross-products of [X | Y]
   (:class:`FoldStats`, merged chunk by chunk and rank by rank by Chan's formulas);
3. for each α and fold k, the fit on the other folds' merged statistics by the exact solver's
   algebra on the Gram matrix (l2: (G + αI) w = c; l1 and elasticnet: the coordinate descent of
   :func:`trainer.solvers.coordinate_descent`), and its mean squared error on fold k, from
   fold k's statistics;
4. the α with the least mean of the folds' MSE (ties: the larger α, as LassoCV, which walks
   the grid from the largest); the fit on every row at each α (the path) and the curve are
   recorded, and the model is then fitted at that α on every row, as scikit-learn refits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trainer.config import TrainConfig, TrainingError
from trainer.solvers import coordinate_descent


@dataclass
class FoldStats:
    """Σw, the weighted means and centred cross-products of [X | Y] of some rows, and the
    unweighted count, means and sums of squares of X (the scale --standardize uses)."""

    n: float
    mean: np.ndarray
    M: np.ndarray
    rows: int
    x_mean: np.ndarray
    x_m2: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray, Y: np.ndarray, w: np.ndarray) -> FoldStats:
        A = np.hstack([X, Y])
        n = float(w.sum())
        mean = (w @ A) / n if n > 0 else np.zeros(A.shape[1])
        C = A - mean
        x_mean = X.mean(axis=0)
        return cls(n, mean, (C * w[:, None]).T @ C, len(X), x_mean,
                   ((X - x_mean) ** 2).sum(axis=0))

    def merged(self, other: FoldStats) -> FoldStats:
        if not other.rows:
            return self
        if not self.rows:
            return other
        n, d = self.n + other.n, other.mean - self.mean
        mean = self.mean + d * (other.n / n) if n > 0 else self.mean
        M = self.M + other.M + np.outer(d, d) * (self.n * other.n / n if n > 0 else 0.0)
        rows, dx = self.rows + other.rows, other.x_mean - self.x_mean
        return FoldStats(n, mean, M, rows, self.x_mean + dx * other.rows / rows,
                         self.x_m2 + other.x_m2 + dx**2 * self.rows * other.rows / rows)


def fold_of(seed: int, k: int, file: int, rows: np.ndarray) -> np.ndarray:
    """The fold (0..k-1) of each of ``rows`` (0-based rows of file ``file``)."""
    from trainer.dataset import row_hash

    return np.minimum((row_hash(seed, file, rows, stream=1) * k).astype(np.int64), k - 1)


def gather_folds(chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]],
                 k: int, seed: int, group: Any = None) -> list[FoldStats]:
    """2. Every fold's statistics over ``chunks`` of (X, Y, weights, file, rows in it), summed
    over the ranks of ``group``."""
    folds: list[FoldStats | None] = [None] * k
    for X, Y, w, file, rows in chunks:
        which = fold_of(seed, k, file, rows)
        for f in range(k):
            mine = which == f
            if mine.any():
                part = FoldStats.of(X[mine], Y[mine], w[mine])
                folds[f] = part if folds[f] is None else folds[f].merged(part)
    if group is not None and group.distributed:
        everyone = group.gather_object(folds)
        folds = [None] * k
        for theirs in everyone:
            for f, part in enumerate(theirs):
                if part is not None:
                    folds[f] = part if folds[f] is None else folds[f].merged(part)
    if any(f is None or f.n <= 0 for f in folds):
        raise TrainingError(f"--cv {k}: a fold has no training rows; use fewer folds (or more "
                            "rows)")
    return folds  # type: ignore[return-value]


def fit_on(stats: FoldStats, alpha: float, config: TrainConfig,
           p: int) -> tuple[np.ndarray, np.ndarray]:
    """3. ``coef_`` (targets, p) and ``intercept_`` of the penalized objective at ``alpha`` on
    the rows ``stats`` sums up (as :func:`trainer.solvers.penalized`, with --standardize as
    :func:`trainer.fit._standardization`)."""
    mean, M, n = stats.mean, stats.M, stats.n
    if not config.bias:  # no centring: the raw second moments
        M, mean = M + np.outer(mean, mean) * n, np.zeros_like(mean)
    G, C = M[:p, :p] / n, M[:p, p:] / n
    scale = np.ones(p)
    if config.standardize:
        scale = np.sqrt(stats.x_m2 / stats.rows)
        scale[scale == 0] = 1.0
        G, C = G / np.outer(scale, scale), C / scale[:, None]
    ratio = {"l2": 0.0, "l1": 1.0}.get(config.penalty, config.l1_ratio)
    if ratio == 0.0:
        coef = np.linalg.solve(G + alpha * np.eye(p), C).T
    else:
        coef = coordinate_descent(G, C, penalty=config.penalty, alpha=alpha, ratio=ratio)
    coef = coef / scale
    intercept = mean[p:] - coef @ mean[:p] if config.bias else np.zeros(C.shape[1])
    return coef, intercept


def fold_mse(stats: FoldStats, coef: np.ndarray, intercept: np.ndarray, p: int) -> float:
    """The (weighted) mean squared error on the rows of ``stats``, averaged over targets:
    Σw(y − xw − b)² from the fold's centred moments and its mean's own residual."""
    Mxx, Mxy, Myy = stats.M[:p, :p], stats.M[:p, p:], np.diag(stats.M[p:, p:])
    offset = stats.mean[p:] - coef @ stats.mean[:p] - intercept
    sse = (Myy - 2 * np.einsum("tj,jt->t", coef, Mxy)
           + np.einsum("tj,jk,tk->t", coef, Mxx, coef) + stats.n * offset**2)
    return float(np.mean(np.maximum(sse, 0.0) / stats.n))


def choose_alpha(chunks: Iterable[Any], config: TrainConfig, p: int,
                 group: Any = None) -> tuple[TrainConfig, dict[str, Any]]:
    """1.-4. The config at the chosen α, and the record for model.json: the folds' sizes,
    the grid (largest first), each α's MSE per fold and mean, the chosen α and the path."""
    k, grid = config.cv, sorted(config.alphas, reverse=True)
    folds = gather_folds(chunks, k, config.seed, group)
    everything = folds[0]
    for f in folds[1:]:
        everything = everything.merged(f)
    mse = np.empty((len(grid), k))
    for f in range(k):
        others = None
        for g in range(k):
            if g != f:
                others = folds[g] if others is None else others.merged(folds[g])
        for a, alpha in enumerate(grid):
            coef, intercept = fit_on(others, alpha, config, p)
            mse[a, f] = fold_mse(folds[f], coef, intercept, p)
    mean = mse.mean(axis=1)
    best = int(np.argmin(mean))  # the first of the least: the largest such α
    path = [fit_on(everything, alpha, config, p) for alpha in grid]
    record = {"k": k, "fold_rows": [f.rows for f in folds], "alphas": grid,
              "mse": mse.tolist(), "mse_mean": mean.tolist(),
              "mse_se": (mse.std(axis=1, ddof=1) / math.sqrt(k)).tolist(),
              "alpha": grid[best],
              "path": {"coef_": [c.tolist() for c, _ in path],
                       "intercept_": [b.tolist() for _, b in path]}}
    return replace(config, alpha=grid[best]), record


def cv_message(record: dict[str, Any]) -> str:
    """The console's line about the choice."""
    alphas = record["alphas"]
    at = alphas.index(record["alpha"])
    edge = " (the edge of the grid: widen it)" if at in (0, len(alphas) - 1) and \
        len(alphas) > 2 else ""
    return (f"--cv {record['k']}: alpha {record['alpha']:g} of {len(alphas)} (least mean "
            f"validation MSE {record['mse_mean'][at]:.6g}){edge}")
