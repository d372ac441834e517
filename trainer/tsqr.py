"""What the R factor of a tall-skinny QR tells, with no further pass over the rows: row counts,
means and spreads, exact and penalised least squares, and the residuals' sums of squares.

:class:`Tsqr` keeps a running R of [X, 1 | Y]: each chunk is stacked under R and factored
again (LAPACK's Householder QR on a column-major block), so memory holds one chunk. RᵀR is the
Gram matrix of every column, so R stands for the rows in everything below; the normal equations
are never formed (they square the condition number).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.history import unstandardize
from trainer.solvers import coordinate_descent


@dataclass
class Moments:
    """Row count (or total weight), mean and sum of squared deviations per column."""

    n: float
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, width: int) -> Moments:
        return cls(0.0, np.zeros(width), np.zeros(width))


class Tsqr:
    """A running R factor of [X, 1 | Y]: each chunk is stacked under R and factored again (by
    LAPACK's Householder QR, ``dgeqrf``, on a column-major block: no copies), so R stays
    (p + 1 + targets) square and memory holds one chunk."""

    def __init__(self, width: int) -> None:
        self.R = np.zeros((0, width))
        self.rows = 0

    def add(self, X: np.ndarray, Y: np.ndarray, root: np.ndarray | None = None) -> None:
        """Stack the rows [X, 1 | Y] (scaled by ``root``, √w, when given) under R."""
        if not len(X):
            return
        r, p = len(self.R), X.shape[1]
        block = np.empty((r + len(X), self.R.shape[1]), order="F")
        block[:r] = self.R
        block[r:, :p] = X
        block[r:, p] = 1.0
        block[r:, p + 1:] = Y
        if root is not None:
            block[r:] *= root[:, None]
        self.R = r_factor(block)
        self.rows += len(X)


def r_factor(block: np.ndarray) -> np.ndarray:
    """R of a column-major ``block``'s QR (``min(rows, columns)`` rows), overwriting it.

    On one BLAS thread: a thin block's QR is LAPACK's unblocked ``dgeqr2``, a column at a time,
    and OpenBLAS's threads cost more than they give there (65,536 x 18: 110 ns a row on two
    threads, 52 on one); the reader thread has the other core."""
    from scipy.linalg import lapack

    with _blas().limit(limits=1, user_api="blas"):
        qr, _, _, info = lapack.dgeqrf(block, lwork=max(1, 64 * block.shape[1]),
                                       overwrite_a=True)
    if info != 0:  # only for an illegal argument: a bug, not the data
        raise RuntimeError(f"LAPACK dgeqrf failed (info {info})")
    return np.triu(qr[:min(block.shape)])


@functools.cache
def _blas() -> Any:
    """The process's BLAS libraries (threadpoolctl's controller, made once: it scans them)."""
    from scipy.linalg import lapack  # noqa: F401  (loaded first, so it is found)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def moments_from_r(R: np.ndarray, n_features: int) -> tuple[Moments, Moments]:
    """The moments of X and of Y from R of [X, 1 | Y]: factored again with the constant
    column first, its first row holds √n and each column's mean times √n, and the rows below
    are the centred columns' factor (their squared norms are the sums of squared deviations,
    with no cancellation). With rows scaled by √w, the weighted moments (n = Σw)."""
    p, width = n_features, R.shape[1]
    if not len(R) or not R[:, p].any():  # no rows (or every weight 0)
        return Moments.empty(p), Moments.empty(width - p - 1)
    C = np.linalg.qr(R[:, [p, *range(p), *range(p + 1, width)]], mode="r")
    n, mean, m2 = C[0, 0] ** 2, C[0, 1:] / C[0, 0], (C[1:, 1:] ** 2).sum(axis=0)
    return Moments(float(n), mean[:p], m2[:p]), Moments(float(n), mean[p:], m2[p:])


def without_constant(R: np.ndarray, n_features: int) -> np.ndarray:
    """R of [X | Y] from R of [X, 1 | Y] (a model without a bias): RᵀR is the Gram matrix of
    every column, so R's columns stand for the rows' for any subset of them."""
    keep = [j for j in range(R.shape[1]) if j != n_features]
    return np.linalg.qr(R[:, keep], mode="r")


def least_squares_from_r(R: np.ndarray, n_features: int, *, bias: bool
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Exact (weighted) least squares from TSQR's R of [X, 1 | Y]: R₁₁ β = R₁₂, the minimum-norm
    solution as numpy's lstsq (the normal equations are never formed: they square the condition
    number). The caller checks there are at least as many rows as parameters."""
    p = n_features + int(bias)
    sol = np.linalg.lstsq(R[:p, :p], R[:p, p:], rcond=None)[0]
    coef = sol[:n_features].T.copy()
    intercept = sol[n_features].copy() if bias else np.zeros(R.shape[1] - p)
    return coef, intercept


def penalized_from_r(R: np.ndarray, n: float, n_features: int, *, bias: bool, penalty: str,
                     alpha: float, l1_ratio: float, mean: np.ndarray | None,
                     scale: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ElasticNet objective (:func:`trainer.fit.penalized`) from TSQR's R of
    [X, 1 | Y] over ``n`` rows, on the features standardised by ``mean``/``scale`` when given
    (then folded back): the R rows stand in for the data rows, since every sum of squares of the
    rows is one of R's.

    - l2: least squares on R stacked over √(nα)·I under the feature columns (the intercept
      column is not penalised: centring, implied), as the in-memory closed form;
    - l1/elasticnet: coordinate descent on the centred Gram matrix RᵀR/n − x̄x̄ᵀ.
    """
    p, k = n_features, n_features + int(bias)
    A = R.copy()
    if scale is not None:  # Xs = (X − 1·meanᵀ)/scale, in R's terms (R's rows stand for rows)
        A[:, :p] = R[:, :p] / scale
        if bias:
            A[:, :p] -= np.outer(R[:, p], mean / scale)
    ratio = {"l2": 0.0, "l1": 1.0}.get(penalty, l1_ratio)
    if ratio == 0.0:
        lhs = np.vstack([A[:, :k], np.hstack([np.sqrt(n * alpha) * np.eye(p),
                                              np.zeros((p, k - p))])])
        rhs = np.vstack([A[:, k:], np.zeros((p, A.shape[1] - k))])
        sol = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        coef = sol[:p].T.copy()
        intercept = sol[p].copy() if bias else np.zeros(A.shape[1] - k)
    else:
        M = A.T @ A / n  # the Gram matrix of [X, 1, Y] over n rows
        x_mean = M[:p, p] if bias else np.zeros(p)
        y_mean = M[k:, p] if bias else np.zeros(A.shape[1] - k)
        G = M[:p, :p] - np.outer(x_mean, x_mean)
        C = M[:p, k:] - np.outer(x_mean, y_mean)
        coef = coordinate_descent(G, C, penalty=penalty, alpha=alpha, ratio=ratio)
        intercept = y_mean - coef @ x_mean if bias else np.zeros(A.shape[1] - k)
    return unstandardize(coef, intercept, mean, scale)


def design_r(R: np.ndarray, n_features: int, *, bias: bool) -> np.ndarray:
    """The R factor of the statistics' design [1, X] from TSQR's factor of [X, 1 | Y]: its
    first block with the columns reordered (ZᵀZ's singular values and vectors follow)."""
    p = n_features + int(bias)
    order = [n_features, *range(n_features)] if bias else list(range(n_features))
    return R[:p, :p][:, order]


def sse_from_r(R: np.ndarray, coef: np.ndarray, intercept: np.ndarray, *,
               bias: bool) -> np.ndarray:
    """The train sums of squared errors per target at any parameters, from TSQR's R of
    [X, 1 | Y] alone: the residuals are [X, 1 | Y]·M with M = [-coefᵀ; -intercept; I], and
    ‖QRM‖ = ‖RM‖ (no pass over the rows)."""
    t, p = coef.shape
    M = np.zeros((R.shape[1], t))
    M[:p] = -coef.T
    if bias:
        M[p] = -intercept
    M[p + int(bias):] = np.eye(t)
    return ((R @ M) ** 2).sum(axis=0)
