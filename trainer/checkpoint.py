"""Checkpoints of an SGD run (``--checkpoint-every``, ``--resume``): a ``torch.save`` dict of
tensors and plain values, loaded with ``weights_only=True``; what the loop saves and how it
is put back, so a resumed run is the run that was stopped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from serve.core.errors import first_line
from trainer.config import TrainingError
from trainer.history import History


@dataclass
class Checkpoint:
    """Where a run keeps its resumable state (``path``, a ``torch.save`` dict loadable with
    ``weights_only=True``) and how often (every ``every`` epochs); ``state`` is what a resumed
    run starts from. ``saved_epoch`` is the last epoch saved (for the resume hint)."""

    path: Path
    every: int
    state: dict | None = None
    saved_epoch: int | None = None

    def save(self, state: dict) -> None:
        from serve.core.atomic import atomic_file

        with atomic_file(self.path) as tmp:
            torch.save(state, tmp)
        self.saved_epoch = state["epoch"]

    def due(self, epoch: int, epochs: int) -> bool:
        """Is a save due after ``epoch`` (every ``every`` epochs, never after the last)?"""
        return (epoch + 1) % self.every == 0 and epoch + 1 < epochs

    @classmethod
    def load(cls, path: Path, every: int) -> Checkpoint:
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as e:  # torch raises many types for a corrupt file
            raise TrainingError(f"{path}: not a readable checkpoint ({e})") from None
        if not isinstance(state, dict) or not {"epoch", "model", "optimizer", "rng",
                                               "history"} <= set(state):
            raise TrainingError(f"{path}: not a linreg checkpoint")
        return cls(path, every, state, state["epoch"])


def state_of(epoch: int, model, optimizer, scheduler, history: History,
              initial: np.ndarray, lrs: list[float], val_costs: list[float],
              best: tuple) -> dict:
    """A resumable state after ``epoch`` (a ``torch.save`` dict of tensors and plain values,
    loadable with ``weights_only=True``): what :func:`restore_state` puts back."""
    return {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler else {},
            "rng": torch.get_rng_state(), "history": torch.as_tensor(history.rows(epoch + 1)),
            "initial": torch.as_tensor(initial), "lrs": lrs, "val_costs": val_costs,
            "best": [best[0], best[1], best[2] or []]}


def restore_state(state: dict, model, optimizer, scheduler, history: History):
    """Put a checkpoint's state back: parameters, optimiser, scheduler, torch's RNG, history.
    Returns the epoch to continue from, the initial parameters row, the learning rates and
    validation costs so far, and early stopping's best (cost, epoch, parameters or None)."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        history.restore(state["history"].numpy())
        kept = state["best"]
        best = (kept[0], kept[1], kept[2] if kept[2] else None)
        return (int(state["epoch"]) + 1, state["initial"].numpy(), list(state["lrs"]),
                list(state["val_costs"]), best)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise TrainingError(f"the checkpoint does not fit this run ({first_line(e)}); start "
                            "again without --resume") from None
