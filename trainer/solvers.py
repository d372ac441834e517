"""The exact solvers (numpy, float64): least squares and weighted least squares,
scikit-learn's ElasticNet objective (closed form for l2, coordinate descent on the Gram matrix
for l1 and elastic net) and HuberRegressor's (L-BFGS-B over passes of the rows), shared by the
in-memory and the streamed paths."""

from __future__ import annotations

from collections.abc import Callable, Iterable

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


def huber(passes: Callable[[], Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]], *,
          n_features: int, n_targets: int, bias: bool, epsilon: float, alpha: float = 0.0,
          total: Callable[[np.ndarray], np.ndarray] = lambda a: a, tol: float = 1e-10,
          max_iter: int = 15_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``coef_``, ``intercept_`` and the scale σ per target minimising scikit-learn's
    HuberRegressor objective, the scale estimated jointly (Owen's concomitant scale):

        Σᵢ wᵢ (σ + H_ε((yᵢ − xᵢβ − b)/σ) σ) + α‖β‖²,  H_ε(z) = z² (|z| ≤ ε), 2ε|z| − ε² (else)

    by L-BFGS-B from β = 0, b = 0, σ = 1 (σ kept above 10·machine ε), as scikit-learn does, to
    a tight gradient tolerance. ``passes()`` yields the rows, (X, Y, weights) chunk by chunk,
    once per evaluation (in memory: one chunk; streamed: a pass over the data); ``total`` sums
    a vector of partial sums over the ranks of a distributed run. The targets are independent
    objectives, minimised jointly (one pass serves them all)."""
    from scipy import optimize

    p, t = n_features, n_targets
    k = p + int(bias) + 1  # per target: β, b, σ

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        P = theta.reshape(t, k)
        beta, b, sigma = P[:, :p], (P[:, p] if bias else np.zeros(t)), P[:, -1]
        sums = np.zeros(t * (k + 1))  # per target: loss, grad β, grad b, Σw·(1 − ...)...
        acc = sums.reshape(t, k + 1)
        for X, Y, w in passes():
            r = Y - X @ beta.T - b  # (rows, t)
            out = np.abs(r) > epsilon * sigma
            inner = np.where(out, 0.0, r)
            sign = np.where(out, np.sign(r), 0.0)
            wi, wo = w[:, None] * inner, w[:, None] * sign
            acc[:, 0] += (wi * inner).sum(axis=0) / sigma \
                + 2 * epsilon * (w[:, None] * np.abs(r) * out).sum(axis=0)
            g = -(2.0 / sigma)[:, None] * (wi.T @ X) - 2.0 * epsilon * (wo.T @ X)
            acc[:, 1:1 + p] += g
            if bias:
                acc[:, 1 + p] += -2.0 * wi.sum(axis=0) / sigma - 2.0 * epsilon * wo.sum(axis=0)
            # σ's gradient: n − n_out·ε² − Σw·inner²/σ²; its loss part: n·σ − n_out·σ·ε²
            n_out = (w[:, None] * out).sum(axis=0)
            acc[:, -1] += w.sum() - n_out * epsilon**2 - (wi * inner).sum(axis=0) / sigma**2
            acc[:, 0] += (w.sum() - n_out * epsilon**2) * sigma
        acc[:] = total(sums).reshape(t, k + 1)
        loss = acc[:, 0] + alpha * (beta**2).sum(axis=1)
        grad = acc[:, 1:].copy()
        grad[:, :p] += 2.0 * alpha * beta
        return float(loss.sum()), grad.ravel()

    theta0 = np.zeros((t, k))
    theta0[:, -1] = 1.0
    bounds = ([(None, None)] * (k - 1) + [(np.finfo(np.float64).eps * 10, None)]) * t
    res = optimize.minimize(loss_and_grad, theta0.ravel(), method="L-BFGS-B", jac=True,
                            bounds=bounds, options={"maxiter": max_iter, "gtol": tol,
                                                    "ftol": 1e-15, "maxcor": 20})
    if not res.success and res.nit >= max_iter:
        raise TrainingError(f"--huber-epsilon {epsilon:g}: L-BFGS-B did not converge in "
                            f"{max_iter:,} iterations; --standardize the data")
    P = res.x.reshape(t, k)
    return P[:, :p].copy(), (P[:, p].copy() if bias else np.zeros(t)), P[:, -1].copy()
