"""The pictures of a fit (``--plot``).

One feature and one target: the tutorial's three, as they were: ``theta.png`` (the parameter
trajectory θ), ``loss.png`` (the loss curve L) and ``fit.png`` (the data and the fitted line).
Several features or targets: ``theta.png`` with weights and intercepts on separate panels,
labelled by feature name, at most ``MAX_CURVES`` curves (the title says how many are left out);
``loss.png`` with the validation curve when there is a split; ``pred_vs_actual.png`` and
``residuals.png`` per target, validation rows marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve.core.errors import LinregError

MAX_CURVES = 10  # weight curves on theta.png; more is unreadable
MAX_PANELS = 4  # targets shown on the per-target plots
MAX_POINTS = 5000  # rows drawn per scatter (a seeded sample above this)


@dataclass
class PlotData:
    """What the plots draw: history (cost, then W row-major, then b), the rows and the model."""

    history: np.ndarray
    columns: list[str]
    X: np.ndarray
    Y: np.ndarray
    X_val: np.ndarray
    Y_val: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    bias: bool
    feature_names: list[str]
    target_names: list[str]
    best_epoch: int | None = None  # early stopping: the epoch whose parameters were kept
    cv: dict | None = None  # --cv: the record of the choice of α (trainer.cv.choose_alpha)


def write_plots(folder: Path, d: PlotData) -> list[str]:
    """Write the PNGs into ``folder``; return their names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LinregError("--plot needs matplotlib: pip install 'linreg[plot]'") from None

    simple = len(d.feature_names) == 1 and len(d.target_names) == 1
    written = []
    for name, draw in (("theta.png", _theta_simple if simple else _theta_panels),
                       ("loss.png", _loss),
                       *([("fit.png", _fit_line)] if simple else
                         [("pred_vs_actual.png", _pred_vs_actual), ("residuals.png", _residuals)]),
                       ("cv.png", _cv)):
        fig = draw(plt, d)
        if fig is None:
            continue
        fig.savefig(folder / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(name)
    return written


def _cv(plt, d: PlotData):
    """--cv: the mean validation MSE (± one standard error over folds) and the coefficients
    fitted on every row, against α, the chosen α marked."""
    if d.cv is None:
        return None
    alphas = np.asarray(d.cv["alphas"])
    mean, se = np.asarray(d.cv["mse_mean"]), np.asarray(d.cv["mse_se"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.errorbar(alphas, mean, yerr=se, marker="o", capsize=3)
    left.set(xscale="log", xlabel="alpha", ylabel="mean validation MSE",
             title=f"{d.cv['k']}-fold cross-validation")
    coefs = np.asarray(d.cv["path"]["coef_"])[:, 0, :]  # (alphas, features), the first target
    order = np.argsort(-np.abs(coefs[-1]))[:MAX_CURVES]
    for j in order:
        right.plot(alphas, coefs[:, j], label=d.feature_names[j])
    right.set(xscale="log", xlabel="alpha", ylabel="coefficient",
              title=f"path ({d.target_names[0]})")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.axvline(d.cv["alpha"], color="grey", linestyle="--")
    return fig


def _theta_simple(plt, d: PlotData):
    if len(d.columns) < 2 or len(d.history) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(len(d.history))
    for j, name in enumerate(d.columns[1:], start=1):
        ax.plot(epochs, d.history[:, j], label=name)
    ax.set(xlabel="epoch", ylabel="θ", title="Parameter trajectory")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _theta_panels(plt, d: PlotData):
    if len(d.columns) < 2 or len(d.history) < 2:
        return None  # exact solver, or too many parameters to keep a history of
    n_t, n_f = len(d.target_names), len(d.feature_names)
    W = d.history[:, 1:1 + n_t * n_f].reshape(len(d.history), n_t, n_f)
    # The curves that matter most: the largest final |weight| first.
    order = np.argsort(-np.abs(W[-1]).ravel(), kind="stable")
    shown = order[:MAX_CURVES]
    panels = 2 if d.bias else 1
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3.2 * panels + 0.6), squeeze=False)
    epochs = np.arange(len(d.history))
    colours = plt.get_cmap("tab10" if len(shown) <= 10 else "tab20")
    ax = axes[0, 0]
    for k, flat in enumerate(shown):
        t, f = divmod(int(flat), n_f)
        label = d.feature_names[f] if n_t == 1 else f"{d.target_names[t]} ← {d.feature_names[f]}"
        ax.plot(epochs, W[:, t, f], color=colours(k), label=label)
    left_out = n_t * n_f - len(shown)
    ax.set(xlabel="epoch", ylabel="weight", title="Weights by epoch" + (
        f" (the {len(shown)} largest; {left_out} more not shown)" if left_out else ""))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if d.bias:
        ax = axes[1, 0]
        b = d.history[:, 1 + n_t * n_f:]
        for t in range(min(n_t, MAX_CURVES)):
            ax.plot(epochs, b[:, t], color=colours(t), label=d.target_names[t])
        ax.set(xlabel="epoch", ylabel="intercept", title="Intercepts by epoch")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _loss(plt, d: PlotData):
    if len(d.history) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(len(d.history))
    ax.plot(epochs, d.history[:, 0], label="training")
    val = _validation_curve(d)
    if val is not None:
        ax.plot(val[0], val[1], label="validation")
    if d.best_epoch is not None:
        ax.axvline(d.best_epoch, color="0.5", linestyle=":", label="kept (early stopping)")
    if val is not None or d.best_epoch is not None:
        ax.legend()
    ax.set(xlabel="epoch", ylabel="L (MSE)", title="Loss curve", yscale="log")
    fig.tight_layout()
    return fig


def _validation_curve(d: PlotData) -> tuple[np.ndarray, np.ndarray] | None:
    """Validation MSE at up to 500 epochs, from the parameter history (None without either)."""
    n_t, n_f = len(d.target_names), len(d.feature_names)
    if not len(d.X_val) or len(d.columns) < 1 + n_t * n_f:
        return None
    epochs = np.unique(np.linspace(0, len(d.history) - 1, 500).astype(int))
    W = d.history[epochs, 1:1 + n_t * n_f].reshape(len(epochs), n_t, n_f)
    b = d.history[epochs, 1 + n_t * n_f:] if d.bias else np.zeros((len(epochs), n_t))
    # History rows hold the parameters after each epoch's step: the cost they give is the
    # validation cost at the end of that epoch.
    pred = np.einsum("rf,etf->ert", d.X_val, W) + b[:, None, :]
    return epochs, np.mean((pred - d.Y_val[None]) ** 2, axis=(1, 2))


def _fit_line(plt, d: PlotData):
    fig, ax = plt.subplots(figsize=(6, 4))
    x = d.X[:, 0]
    ax.scatter(x, d.Y[:, 0], s=8, alpha=0.6, label="data")
    grid = np.linspace(x.min(), x.max(), 50)
    ax.plot(grid, d.coef[0, 0] * grid + d.intercept[0], color="C1", label="fit")
    ax.set(xlabel=d.feature_names[0], ylabel=d.target_names[0], title="Data and fitted line")
    ax.legend()
    fig.tight_layout()
    return fig


def _per_target(plt, d: PlotData, title: str, y_of, ylabel: str, diagonal: bool):
    n = min(len(d.target_names), MAX_PANELS)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False)
    rng = np.random.default_rng(0)
    for t, ax in enumerate(axes[0]):
        for X, Y, label, colour in ((d.X, d.Y, "training", "C0"),
                                    (d.X_val, d.Y_val, "validation", "C1")):
            if not len(X):
                continue
            keep = rng.choice(len(X), MAX_POINTS, replace=False) if len(X) > MAX_POINTS \
                else slice(None)
            pred = X[keep] @ d.coef[t] + d.intercept[t]
            ax.scatter(pred if not diagonal else Y[keep, t], y_of(pred, Y[keep, t]), s=8,
                       alpha=0.5, color=colour, label=label)
        if diagonal:
            lo = min(d.Y[:, t].min(), (d.X @ d.coef[t] + d.intercept[t]).min())
            hi = max(d.Y[:, t].max(), (d.X @ d.coef[t] + d.intercept[t]).max())
            ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="perfect")
            ax.set(xlabel=f"actual {d.target_names[t]}", ylabel=f"predicted {d.target_names[t]}")
        else:
            ax.axhline(0, color="grey", lw=1, ls="--")
            ax.set(xlabel=f"predicted {d.target_names[t]}", ylabel=ylabel)
        ax.set_title(d.target_names[t])
        ax.legend(fontsize="small")
    left_out = len(d.target_names) - n
    fig.suptitle(title + (f" (first {n} targets; {left_out} more not shown)" if left_out else ""))
    fig.tight_layout()
    return fig


def _pred_vs_actual(plt, d: PlotData):
    return _per_target(plt, d, "Predicted against actual", lambda pred, y: pred, "", True)


def _residuals(plt, d: PlotData):
    return _per_target(plt, d, "Residuals (actual − predicted)", lambda pred, y: y - pred,
                       "residual", False)
