"""The tutorial's pictures: parameter trajectory θ, loss curve L, and the data with the fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serve.errors import LinregError


def write_plots(folder: Path, history: np.ndarray, columns: list[str], X: np.ndarray,
                Y: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                feature_names: list[str], target_names: list[str]) -> list[str]:
    """Write ``theta.png``, ``loss.png`` and ``fit.png`` into ``folder``; return their names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LinregError("--plot needs matplotlib: pip install 'linreg[plot]'") from None

    written = []
    epochs = np.arange(len(history))
    if len(columns) > 1 and len(history) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for j, name in enumerate(columns[1:13], start=1):
            ax.plot(epochs, history[:, j], label=name)
        ax.set(xlabel="epoch", ylabel="θ", title="Parameter trajectory")
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(folder / "theta.png", dpi=100)
        plt.close(fig)
        written.append("theta.png")
    if len(history) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, history[:, 0])
        ax.set(xlabel="epoch", ylabel="L (MSE)", title="Loss curve", yscale="log")
        fig.tight_layout()
        fig.savefig(folder / "loss.png", dpi=100)
        plt.close(fig)
        written.append("loss.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    x = X[:, 0]
    ax.scatter(x, Y[:, 0], s=8, alpha=0.6, label="data")
    grid = np.linspace(x.min(), x.max(), 50)
    # The line for the first feature, the others held at their mean.
    others = X.mean(axis=0) @ coef[0] - X[:, 0].mean() * coef[0, 0]
    ax.plot(grid, coef[0, 0] * grid + others + intercept[0], color="C1", label="fit")
    ax.set(xlabel=feature_names[0], ylabel=target_names[0], title="Data and fitted line")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "fit.png", dpi=100)
    plt.close(fig)
    written.append("fit.png")
    return written
