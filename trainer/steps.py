"""What an SGD step is made of, at every size: the objective (MSE or Huber, weighted rows, the
L2 part of a penalty), the L1 proximal step, the optimiser and its learning-rate schedule, and
one epoch of mini-batch steps."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from trainer.config import TrainConfig


def objective_of(config: TrainConfig, n_targets: int):
    """The cost the optimiser minimises: the data loss (MSE as the tutorials, or Huber;
    weighted by rows when weights are given), plus the L2 part of a penalty. Scaled so that
    its minimum is scikit-learn's ElasticNet's: MSE averages over n x targets, which is
    2/targets x (1/2n)‖r‖² summed over targets, so the penalties get the same 2/targets."""
    l2_scale = l2_weight(config, n_targets)

    def objective(model, x, y, w=None) -> torch.Tensor:
        pred = model(x)
        if w is None:
            cost = F.mse_loss(pred, y) if config.loss == "mse" else \
                F.huber_loss(pred, y, delta=config.huber_delta)
        else:
            each = (pred - y) ** 2 if config.loss == "mse" else \
                F.huber_loss(pred, y, delta=config.huber_delta, reduction="none")
            cost = (each * w[:, None]).sum() / (w.sum() * y.shape[1])
        if l2_scale:
            cost = cost + l2_scale * (model.linear.weight ** 2).sum()
        return cost
    return objective


def l2_weight(config: TrainConfig, n_targets: int) -> float:
    """The factor of ‖W‖² in the cost: (2/T) x ½ α (1 - R) (see :func:`objective_of`)."""
    l2 = 0.0 if config.penalty in ("none", "l1") else \
        config.alpha * (1 - (config.l1_ratio if config.penalty == "elasticnet" else 0.0))
    return l2 / n_targets


def l1_prox(config: TrainConfig, n_targets: int):
    """The proximal step of the L1 part after each optimiser step: soft-threshold W by
    lr x (2/targets) x α x R, which leaves exact zeros. None without an L1 part."""
    ratio = {"l1": 1.0, "elasticnet": config.l1_ratio}.get(config.penalty, 0.0)
    if not ratio:
        return None
    threshold = config.lr * 2 / n_targets * config.alpha * ratio

    def prox(W: torch.Tensor) -> None:
        with torch.no_grad():
            W.copy_(torch.sign(W) * torch.clamp(W.abs() - threshold, min=0))
    return prox


def optimizer_of(model, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr,
                                weight_decay=config.weight_decay)
    if config.optimizer == "lbfgs":
        tight = config.dtype == "float64"  # torch's defaults stop at float32's precision
        return torch.optim.LBFGS(model.parameters(), lr=config.lr, max_iter=20,
                                 line_search_fn="strong_wolfe",
                                 tolerance_grad=1e-12 if tight else 1e-7,
                                 tolerance_change=1e-16 if tight else 1e-9)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def scheduler_of(optimizer, config: TrainConfig):
    """torch's own scheduler for ``--lr-schedule``, stepped once an epoch; None: constant."""
    sched = torch.optim.lr_scheduler
    if config.lr_schedule == "step":
        return sched.StepLR(optimizer, step_size=config.lr_step_size, gamma=config.lr_gamma)
    if config.lr_schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.lr_schedule == "plateau":
        return sched.ReduceLROnPlateau(optimizer, factor=config.lr_gamma,
                                       patience=config.lr_patience)
    return None


def minibatch_epoch(model, optimizer, x_all, y_all, batch_size,
                     on_batch: Callable[[float], None] | None = None, *, objective=None,
                     w_all=None, prox=None) -> torch.Tensor:
    """One epoch over shuffled mini-batches (torch's global RNG, so the seed decides the order).

    Returns the epoch's cost: the row-weighted mean of its batches' costs, kept on the device.
    ``on_batch(fraction of the epoch done)`` is called about a hundred times an epoch.
    """
    n_rows = x_all.shape[0]
    order = torch.randperm(n_rows).to(x_all.device)
    total = torch.zeros((), dtype=x_all.dtype, device=x_all.device)
    every = max(1, n_rows // batch_size // 100) * batch_size
    for start in range(0, n_rows, batch_size):
        if on_batch is not None and start and start % every == 0:
            on_batch(start / n_rows)
        idx = order[start:start + batch_size]
        if objective is None:
            cost = F.mse_loss(model(x_all[idx]), y_all[idx])
        else:
            cost = objective(model, x_all[idx], y_all[idx],
                             None if w_all is None else w_all[idx])
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
        if prox is not None:
            prox(model.linear.weight)
        total += cost.detach() * idx.numel()
    return total / n_rows
