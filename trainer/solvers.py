"""The exact solvers (numpy, float64): least squares and weighted least squares, and
scikit-learn's ElasticNet objective (closed form for l2, coordinate descent on the Gram matrix
for l1 and elastic net), shared by the in-memory and the streamed paths."""

from __future__ import annotations

import numpy as np

from trainer.config import TrainingError


def least_squares(X: np.ndarray, Y: np.ndarray, *, bias: bool,
                  weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact least-squares ``coef_`` (targets, features) and ``intercept_`` (numpy,
    float64); with ``weights``, weighted least squares (rows scaled by √w, as statsmodels WLS)."""
    A = np.hstack([X, np.ones((X.shape[0], 1))]) if bias else X
    if weights is not None:
        root = np.sqrt(weights)[:, None]
        A, Y = A * root, Y * root
    sol, *_ = np.linalg.lstsq(A, Y, rcond=None)
    coef = sol[: X.shape[1]].T.copy()
    intercept = sol[X.shape[1]].copy() if bias else np.zeros(Y.shape[1])
    return coef, intercept


def penalized(X: np.ndarray, Y: np.ndarray, *, bias: bool, penalty: str, alpha: float,
              l1_ratio: float, weights: np.ndarray | None = None, tol: float = 1e-14,
              max_iter: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ElasticNet objective, (1/2n)‖y − Xw − b‖² + α·R·‖w‖₁ + ½·α·(1 − R)·‖w‖²,
    the intercept not penalised (``penalty`` l2: R = 0, l1: R = 1), solved exactly:

    1. centre X and y (by their weighted means; weights scaled to sum to n, as scikit-learn
       does) so the intercept drops out, and scale rows by √w;
    2. l2: the closed form, as least squares on X stacked over √(nα)·I;
       l1/elasticnet: cyclic coordinate descent on the Gram matrix, w_j ← S(ρ_j, αR) /
       (G_jj + α(1−R)), until no coordinate moves more than ``tol`` (relative);
    3. b = ȳ − x̄·w.
    """
    n, p = X.shape
    ratio = {"l2": 0.0, "l1": 1.0}.get(penalty, l1_ratio)
    w = np.ones(n) if weights is None else weights * n / weights.sum()
    x_mean = (w @ X) / n if bias else np.zeros(p)  # 1.
    y_mean = (w @ Y) / n if bias else np.zeros(Y.shape[1])
    root = np.sqrt(w)[:, None]
    Xc, Yc = (X - x_mean) * root, (Y - y_mean) * root
    if ratio == 0.0:  # 2. closed form
        A = np.vstack([Xc, np.sqrt(n * alpha) * np.eye(p)])
        B = np.vstack([Yc, np.zeros((p, Y.shape[1]))])
        coef = np.linalg.lstsq(A, B, rcond=None)[0].T
    else:
        coef = coordinate_descent(Xc.T @ Xc / n, Xc.T @ Yc / n, penalty=penalty, alpha=alpha,
                                  ratio=ratio, tol=tol, max_iter=max_iter)
    intercept = y_mean - coef @ x_mean if bias else np.zeros(Y.shape[1])  # 3.
    return coef, intercept


def coordinate_descent(G: np.ndarray, C: np.ndarray, *, penalty: str, alpha: float,
                       ratio: float, tol: float = 1e-14, max_iter: int = 100_000) -> np.ndarray:
    """``coef`` (targets, features) minimising ½wᵀGw − Cᵀw + α·R·‖w‖₁ + ½·α·(1 − R)·‖w‖² per
    target: cyclic coordinate descent on the (centred, /n) Gram matrix ``G`` and ``C`` = Xᵀy/n,
    scikit-learn's precomputed-Gram path; rows in memory and streamed rows share it."""
    p, targets = C.shape
    coef = np.zeros((targets, p))
    l1, l2 = alpha * ratio, alpha * (1 - ratio)
    for t in range(targets):
        beta = coef[t]
        for _ in range(max_iter):
            biggest, size = 0.0, 0.0
            for j in range(p):
                if G[j, j] == 0:
                    continue
                rho = C[j, t] - G[j] @ beta + G[j, j] * beta[j]
                new = np.sign(rho) * max(abs(rho) - l1, 0.0) / (G[j, j] + l2)
                biggest = max(biggest, abs(new - beta[j]))
                size = max(size, abs(new))
                beta[j] = new
            if biggest <= tol * max(size, 1e-300):
                break
        else:
            raise TrainingError(f"--penalty {penalty}: coordinate descent did not converge "
                                f"in {max_iter:,} sweeps; standardise the data "
                                "(--standardize) or use a larger --alpha")
    return coef
