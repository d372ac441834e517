"""What a fit remembers of each epoch: the cost and the parameters (:class:`History`, kept
where the model is, read by the host only at check points), one row's layout
(:class:`Layout`: history.csv's columns and the log line), and the fold from standardised
units back to raw ones (:func:`unstandardize`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAX_HISTORY_PARAMS = 256  # above this, history.csv keeps the cost alone


MAX_HISTORY_PARAMS = 256  # above this, history.csv keeps the cost alone


def unstandardize(W: np.ndarray, b: np.ndarray, mean: np.ndarray | None, scale: np.ndarray | None):
    """W, b learned on (x - mean) / scale, re-expressed for raw x. Works on stacked rows too."""
    if scale is None:
        return W, b
    W_raw = W / scale
    return W_raw, b - W_raw @ mean


def params_row(tracked: list[torch.Tensor]) -> np.ndarray:
    """The tracked parameters as one row, in history's layout (W row-major, then b)."""
    if not tracked:
        return np.empty(0)
    return torch.cat([t.detach().reshape(-1) for t in tracked]).double().cpu().numpy()


class History:
    """Per-epoch cost and parameters. On the CPU a numpy array written through numpy views of
    the parameters (about 1 µs an epoch); on a GPU a device tensor filled by one ``torch.cat``
    an epoch, read by the host only when asked (that read is the sync)."""

    def __init__(self, epochs: int, tracked: list[torch.Tensor], device: torch.device,
                 dtype: torch.dtype) -> None:
        width = 1 + sum(t.numel() for t in tracked)
        self.on_cpu = device.type == "cpu"
        if self.on_cpu:
            self.data = np.empty((epochs, width), dtype=str(dtype).removeprefix("torch."))
            self.views = [t.detach().numpy().reshape(-1) for t in tracked]  # share memory
            self.slices = []
            at = 1
            for v in self.views:
                self.slices.append(slice(at, at + v.size))
                at += v.size
        else:
            self.data = torch.empty((epochs, width), dtype=dtype, device=device)
            self.flat = [t.view(-1) for t in tracked]

    def record(self, epoch: int, cost: torch.Tensor) -> None:
        if self.on_cpu:
            row = self.data[epoch]
            row[0] = cost.item()
            for sl, v in zip(self.slices, self.views):
                row[sl] = v
        else:
            with torch.no_grad():
                torch.cat([cost.detach().view(1), *self.flat], out=self.data[epoch])

    def restore(self, rows: np.ndarray) -> None:
        """The rows of the epochs already run (a resumed run)."""
        if self.on_cpu:
            self.data[:len(rows)] = rows
        else:
            self.data[:len(rows)] = torch.as_tensor(rows, dtype=self.data.dtype,
                                                    device=self.data.device)

    def costs(self, start: int, stop: int) -> np.ndarray:
        c = self.data[start:stop, 0]
        return c if self.on_cpu else c.cpu().numpy()

    def row(self, epoch: int) -> np.ndarray:
        r = self.data[epoch]
        return r if self.on_cpu else r.cpu().numpy()

    def rows(self, n: int) -> np.ndarray:
        r = self.data[:n]
        return r.astype(np.float64) if self.on_cpu else r.double().cpu().numpy()


@dataclass(frozen=True)
class Layout:
    """One history row: the cost, then W row-major (targets x features), then b (with a bias);
    the cost alone when the parameters are not tracked. The one place that knows it."""

    n_features: int
    n_targets: int
    bias: bool
    params: bool  # parameters tracked (at most MAX_HISTORY_PARAMS)

    def columns(self) -> list[str]:
        if not self.params:
            return ["cost"]
        if self.n_features == 1 and self.n_targets == 1:
            return ["cost", "W"] + (["b"] if self.bias else [])
        cols = [f"W[{t},{f}]" for t in range(self.n_targets) for f in range(self.n_features)]
        return ["cost", *cols, *([f"b[{t}]" for t in range(self.n_targets)] if self.bias else [])]

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rows`` (..., width) as cost (...), W (..., targets, features), b (..., targets)."""
        rows = np.asarray(rows, dtype=np.float64)
        n_w = self.n_features * self.n_targets
        W = rows[..., 1:1 + n_w].reshape(*rows.shape[:-1], self.n_targets, self.n_features)
        b = rows[..., 1 + n_w:] if self.bias else np.zeros((*rows.shape[:-1], self.n_targets))
        return rows[..., 0], W, b

    def join(self, cost: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        parts = [np.asarray(cost)[..., None], W.reshape(*W.shape[:-2], -1)]
        return np.concatenate(parts + ([b] if self.bias else []), axis=-1)

    def folded(self, rows: np.ndarray, mean: np.ndarray | None,
               scale: np.ndarray | None) -> np.ndarray:
        """Rows with W and b re-expressed for raw features (see :func:`unstandardize`)."""
        if scale is None or not self.params:
            return rows
        cost, W, b = self.split(rows)
        return self.join(cost, *unstandardize(W, b, mean, scale))

    def log_line(self, epoch: int, epochs: int, row: np.ndarray, mean: np.ndarray | None,
                 scale: np.ndarray | None) -> str:
        """The tutorial's line for one feature and target; the same shape with vectors
        otherwise. ``row`` is in training units; the line shows raw-unit W and b."""
        cost = float(row[0])
        if not self.params:
            return f"Epoch {epoch:4d}/{epochs} Cost: {cost:.6f}"
        _, W, b = self.split(self.folded(np.asarray(row)[None], mean, scale))
        W, b = W[0], b[0]
        bias = self.bias
        if self.n_features == 1 and self.n_targets == 1:
            b_text = f", b: {b[0]:.3f} " if bias else ", "  # bias-free: "W: 1.400, Cost"
            return f"Epoch {epoch:4d}/{epochs} W: {W[0, 0]:.3f}{b_text}Cost: {cost:.6f}"
        w_text = _vec(W[0]) if self.n_targets == 1 else "[" + ", ".join(_vec(r) for r in W) + "]"
        b_text = (f", b: {b[0]:.3f} " if self.n_targets == 1 else f", b: {_vec(b)} ") \
            if bias else ", "
        return f"Epoch {epoch:4d}/{epochs} W: {w_text}{b_text}Cost: {cost:.6f}"


def _vec(v: np.ndarray, limit: int = 6) -> str:
    items = [f"{x:.3f}" for x in v[:limit]] + (["..."] if len(v) > limit else [])
    return "[" + ", ".join(items) + "]"
