"""Where the SGD loop's rows come from (:class:`Source`): a table on the device
(:class:`InMemory`) here, chunks streamed over ranks in :class:`trainer.streamed_sgd.Streamed`. The
one loop, :func:`trainer.fit.sgd_loop`, asks a source only for what touches rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from trainer.config import TrainConfig, TrainingError
from trainer.steps import minibatch_epoch, objective_of


def resolve_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present; ``cuda`` without CUDA is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = "this torch has no CUDA support" if torch.version.cuda is None \
            else "no CUDA device is visible"
        raise TrainingError(f"--device {name}: {build}; use --device cpu or --device auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise TrainingError(f"--device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


class Source(Protocol):
    """Where an SGD fit's rows come from: a table on the device (:class:`InMemory`) or chunks
    streamed over ranks (:class:`trainer.streamed_sgd.Streamed`). The one loop (:func:`sgd_loop`)
    asks it for what touches rows; the steps, schedules, early stopping, checkpoints, history
    and logs are the loop's, the same at every size."""

    device: torch.device
    rank: int  # only rank 0 logs, reports progress and writes checkpoints
    check_every: int  # epochs between the host's reads of the history (a GPU sync)
    full_batch: bool  # one step an epoch over every row (else mini-batch epochs)
    watches: bool  # are there validation rows to watch (early stopping, plateau)?

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the steps run through (DistributedDataParallel over ranks)."""

    def gradient(self, net: torch.nn.Module) -> torch.Tensor:
        """The full-batch cost (data loss + the L2 part) at the current parameters, its
        gradient accumulated into them (every rank's rows)."""

    def minibatch_epoch(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        prox: Callable | None, on_batch: Callable[[float], None] | None
                        ) -> torch.Tensor:
        """One epoch of mini-batch steps; its cost."""

    def validation_cost(self, model: torch.nn.Module) -> float:
        """The validation rows' MSE."""

    def final_cost(self, model: torch.nn.Module) -> float:
        """The cost at the final parameters (the last log line)."""

    def saved(self) -> dict:
        """What a checkpoint keeps beyond the loop's state (every rank takes part)."""

    def restore(self, state: dict) -> None:
        """Put :meth:`saved`'s part of a checkpoint back."""


class InMemory:
    """A table on the device: one forward pass is the full batch; mini-batches are drawn by
    torch's global RNG (the seed decides the order)."""

    check_every: int
    rank = 0

    def __init__(self, X: np.ndarray, Y: np.ndarray, config: TrainConfig, *,
                 mean: np.ndarray | None, scale: np.ndarray | None,
                 weights: np.ndarray | None = None,
                 validation: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.device = resolve_device(config.device)
        dtype = getattr(torch, config.dtype)
        self.check_every = 50 if self.device.type == "cpu" else 100

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dtype, device=self.device)

        self.x = tensor(X if scale is None else (X - mean) / scale)
        self.y = tensor(Y)
        self.w = None if weights is None else tensor(weights)
        self.objective = objective_of(config, Y.shape[1])
        self.batch_size = config.batch_size
        # one batch of every row is the full batch
        self.full_batch = self.batch_size == 0 or self.batch_size >= len(X)
        self.watches = validation is not None
        if validation is not None:
            self.x_val = tensor(validation[0] if scale is None else
                                (validation[0] - mean) / scale)
            self.y_val = tensor(validation[1])

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def gradient(self, net: torch.nn.Module) -> torch.Tensor:
        cost = self.objective(net, self.x, self.y, self.w)
        cost.backward()
        return cost

    def minibatch_epoch(self, net, optimizer, prox, on_batch) -> torch.Tensor:
        return minibatch_epoch(net, optimizer, self.x, self.y, self.batch_size, on_batch,
                                objective=self.objective, w_all=self.w, prox=prox)

    def validation_cost(self, model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(F.mse_loss(model(self.x_val), self.y_val))

    def final_cost(self, model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(self.objective(model, self.x, self.y, self.w).double())

    def saved(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        return None
