"""Fitting H(x) = Wx + b: the SGD loop of the tutorials, and exact least squares to check it.

    from trainer.fit import TrainConfig, fit
    result = fit(X, Y, TrainConfig(epochs=2000, lr=0.01, init="zeros"), log=print)
    result.coef_, result.intercept_        # raw units, numpy float64

The loop is the tutorial's (forward, ``F.mse_loss``, ``zero_grad``, ``backward``, ``step``) with
the bookkeeping kept off the hot path: the per-epoch cost and parameters are written into a
history tensor on the device, and the host only looks at it (a GPU sync) at check points.

It is the one loop at every size (:func:`sgd_loop`): a :class:`Source` gives it what touches
rows, :class:`InMemory` for a table on the device, :class:`trainer.stream.Streamed` for chunks
read from files over ranks; steps, schedules, early stopping, checkpoints, history and logs are
the loop's own, so a flag means the same thing in memory and streamed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from serve.core.errors import first_line
from trainer.config import TrainConfig, TrainingError
from trainer.model import build_model

__all__ = ["DivergenceError", "FitResult", "TrainConfig", "TrainingError", "fit",
           "least_squares", "resolve_device"]

MAX_HISTORY_PARAMS = 256  # above this, history.csv keeps the cost alone


class DivergenceError(TrainingError):
    """The cost became NaN or infinite."""


@dataclass
class FitResult:
    """What a fit learned, in raw feature units, and how it got there."""

    coef_: np.ndarray  # (n_targets, n_features)
    intercept_: np.ndarray  # (n_targets,), zeros without bias
    state_dict: dict[str, torch.Tensor]  # on the CPU, in the model's dtype
    history: np.ndarray  # (epochs_run, 1 + n_params): cost, then W row-major, then b
    history_columns: list[str]
    epochs_run: int
    stopped: str  # "epochs", "tol" or "exact"
    device: str
    mean_: np.ndarray | None = None  # standardisation used in training, folded into coef_
    scale_: np.ndarray | None = None
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # per epoch: lr, val_cost
    best_epoch: int | None = None  # early stopping: the epoch whose parameters were kept


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


def fit(X: np.ndarray, Y: np.ndarray, config: TrainConfig, *,
        weights: np.ndarray | None = None,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        warm_start: tuple[np.ndarray, np.ndarray] | None = None,
        checkpoint: Checkpoint | None = None,
        log: Callable[[str], None] | None = None,
        progress: Callable[[float], None] | None = None) -> FitResult:
    """Fit W and b to ``X`` (rows, features) and ``Y`` (rows, targets) as ``config`` says;
    ``weights`` (rows,) weigh each row's loss (weighted least squares for the exact solver);
    ``validation`` rows are watched by early stopping; ``warm_start`` = (coef, intercept) in raw
    units replaces the initialisation (a warm start); ``checkpoint`` saves a resumable state
    every few epochs and, when it holds one, continues from it."""
    config.validate()
    if config.early_stopping and validation is None:
        raise TrainingError("--early-stopping watches the validation cost: add --val-fraction "
                            "(e.g. 0.2)")
    n_rows, n_features = X.shape
    n_params = n_features + int(config.bias)
    if n_rows < n_params:
        raise TrainingError(f"{n_rows} training rows but the model has {n_params} parameters "
                            f"per target; need at least {n_params} rows (or fewer features)")
    if config.dtype == "float32":
        limit = float(np.finfo(np.float32).max)
        if np.abs(X).max() > limit or np.abs(Y).max() > limit:
            raise TrainingError("the data holds values beyond float32's ±3.4e38; train with "
                                "--dtype float64")
    start = time.perf_counter()
    mean, scale = _standardization(X, config)
    if config.solver == "lstsq":
        result = _fit_lstsq(X, Y, config, weights)
    else:
        source = InMemory(X, Y, config, mean=mean, scale=scale, weights=weights,
                          validation=validation)
        result = sgd_loop(source, config, X.shape[1], Y.shape[1], mean=mean, scale=scale,
                          log=log, progress=progress, warm_start=warm_start,
                          checkpoint=checkpoint)
    result.seconds = time.perf_counter() - start
    result.config = asdict(config)
    return result


def _standardization(X: np.ndarray, config: TrainConfig) -> tuple[np.ndarray | None, ...]:
    """Mean and scale per feature; without a bias only scale (centring would need one). The
    exact solver needs none, unless a penalty makes the scale matter (then it applies to the
    standardised coefficients, as StandardScaler + ElasticNet)."""
    if not config.standardize or (config.solver == "lstsq" and config.penalty == "none"):
        return None, None
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0  # a constant column stays as it is
    mean = X.mean(axis=0) if config.bias else np.zeros(X.shape[1])
    return mean, scale


def unstandardize(W: np.ndarray, b: np.ndarray, mean: np.ndarray | None, scale: np.ndarray | None):
    """W, b learned on (x - mean) / scale, re-expressed for raw x. Works on stacked rows too."""
    if scale is None:
        return W, b
    W_raw = W / scale
    return W_raw, b - W_raw @ mean


def _objective(config: TrainConfig, n_targets: int):
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
    """The factor of ‖W‖² in the cost: (2/T) x ½ α (1 - R) (see :func:`_objective`)."""
    l2 = 0.0 if config.penalty in ("none", "l1") else \
        config.alpha * (1 - (config.l1_ratio if config.penalty == "elasticnet" else 0.0))
    return l2 / n_targets


def _l1_prox(config: TrainConfig, n_targets: int):
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


def _optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
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


def _scheduler(optimizer, config: TrainConfig):
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


class Source(Protocol):
    """Where an SGD fit's rows come from: a table on the device (:class:`InMemory`) or chunks
    streamed over ranks (:class:`trainer.stream.Streamed`). The one loop (:func:`sgd_loop`)
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


def sgd_loop(source: Source, config: TrainConfig, n_features: int, n_targets: int, *,
             mean: np.ndarray | None, scale: np.ndarray | None,
             log: Callable[[str], None] | None = None,
             progress: Callable[[float], None] | None = None,
             warm_start: tuple[np.ndarray, np.ndarray] | None = None,
             checkpoint: Checkpoint | None = None) -> FitResult:
    """The SGD loop of the tutorials, for every optimiser, objective and size: the model
    learns on features standardised by ``mean``/``scale`` (None: raw), and the result is
    folded back to raw units."""
    device, dtype, epochs = source.device, getattr(torch, config.dtype), config.epochs

    # 1. Seed, then build the model before any other random draw, as a plain script would.
    torch.manual_seed(config.seed)
    model = build_model(n_features, n_targets, bias=config.bias, init=config.init, dtype=dtype)
    if warm_start is not None:  # raw-unit parameters, in training units
        W0, b0 = warm_start
        with torch.no_grad():
            model.linear.weight.copy_(torch.as_tensor(W0 if scale is None else W0 * scale))
            if model.linear.bias is not None:
                model.linear.bias.copy_(torch.as_tensor(b0 if scale is None else b0 + W0 @ mean))
    model.to(device)
    W, b = model.linear.weight, model.linear.bias
    net = source.wrap(model)
    optimizer = _optimizer(model, config)
    prox = _l1_prox(config, n_targets)
    scheduler = _scheduler(optimizer, config)
    lrs: list[float] = []
    val_costs: list[float] = []
    best: tuple = (np.inf, -1, None)  # validation cost, epoch, parameters
    watch = source.watches and (config.early_stopping or config.lr_schedule == "plateau")

    # 2. History lives where the model does; the host reads it only at check points.
    keep_params = W.numel() + (b.numel() if b is not None else 0) <= MAX_HISTORY_PARAMS
    layout = _Layout(n_features, n_targets, config.bias, keep_params)
    tracked = [W, b] if keep_params and b is not None else [W] if keep_params else []
    history = _History(epochs, tracked, device, dtype)
    # Divergence is found at its exact epoch whatever the interval; --tol checks every epoch.
    check_every = 1 if config.tol is not None else source.check_every
    log_every = config.log_every if log is not None and source.rank == 0 else 0
    progress = progress if source.rank == 0 else None
    last_checked, stopped, epoch = -1, "epochs", -1
    initial = _params_row(tracked)  # what epoch 0's forward pass used
    first_epoch = 0
    if checkpoint is not None and checkpoint.state is not None:  # resume where it stopped
        source.restore(checkpoint.state)
        first_epoch, initial, lrs, val_costs, best = _restore(checkpoint.state, model,
                                                              optimizer, scheduler, history)
        last_checked = first_epoch - 1

    def log_epoch(e: int) -> None:
        row = history.row(e)
        if config.log_before_step:  # the parameters the cost was computed with
            row = np.concatenate([row[:1], history.row(e - 1)[1:] if e else initial])
        log(layout.log_line(e, epochs, row, mean, scale))

    for epoch in range(first_epoch, epochs):
        if config.optimizer == "lbfgs":
            # 3'. L-BFGS re-evaluates the cost in its line search: give it a closure (each
            # evaluation is the full batch: a pass over every rank's rows when streamed).
            def closure() -> torch.Tensor:
                optimizer.zero_grad()
                return source.gradient(net)
            cost = optimizer.step(closure)
        elif source.full_batch:
            # 3. Zero the old gradients; forward pass, cost and backward; step.
            optimizer.zero_grad()
            cost = source.gradient(net)
            optimizer.step()
            if prox is not None:
                prox(W)
        else:
            cost = source.minibatch_epoch(net, optimizer, prox, None if progress is None else
                                          lambda f, e=epoch: progress(e + f))
        # 4. Record this epoch's cost and the parameters after its step (no GPU sync).
        history.record(epoch, cost)
        # 4'. Schedules and early stopping (these read one number back each epoch).
        if watch:
            val_costs.append(source.validation_cost(model))
        if scheduler is not None:
            lrs.append(optimizer.param_groups[0]["lr"])
            if config.lr_schedule == "plateau":
                scheduler.step(val_costs[-1] if val_costs else float(cost.detach()))
            else:
                scheduler.step()
        if config.early_stopping:
            if val_costs[-1] < best[0] - config.min_delta:
                best = (val_costs[-1], epoch, [p.detach().clone() for p in model.parameters()])
            elif epoch - best[1] >= config.patience:
                stopped = "early"

        if checkpoint is not None and checkpoint.due(epoch, epochs):
            extra = source.saved()
            if source.rank == 0:
                checkpoint.save({**_state_of(epoch, model, optimizer, scheduler, history,
                                             initial, lrs, val_costs, best), **extra})

        # 5. At check points: divergence, tolerance, logging, progress.
        logging_now = log_every and epoch % log_every == 0
        if logging_now or epoch % check_every == 0 or epoch == epochs - 1:
            costs = history.costs(last_checked + 1, epoch + 1)
            _check_finite(costs, last_checked + 1, config.lr)
            if config.tol is not None and epoch > 0 and \
                    history.costs(epoch - 1, epoch)[0] - costs[-1] < config.tol:
                stopped = "tol"
            if logging_now:
                log_epoch(epoch)
            if progress is not None:
                progress(epoch + 1)
            last_checked = epoch
            if stopped == "tol":
                break
        if stopped == "early":
            _check_finite(history.costs(last_checked + 1, epoch + 1), last_checked + 1, config.lr)
            break

    best_epoch = None
    if config.early_stopping and best[2] is not None:  # keep the best validation epoch's
        with torch.no_grad():
            for p, kept in zip(model.parameters(), best[2]):
                p.copy_(kept)
        best_epoch = best[1]

    # 6. As the tutorials' range(epochs + 1) does, one last line: the saved model and its cost.
    epochs_run = epoch + 1
    if log_every:
        final = source.final_cost(model)
        log(layout.log_line(epochs_run, epochs, np.concatenate([[final], _params_row(tracked)]),
                            mean, scale))

    # 7. Raw-unit results: fold the standardisation back into W and b.
    hist = history.rows(epochs_run)
    W_s = W.detach().double().cpu().numpy()
    b_s = b.detach().double().cpu().numpy() if b is not None else np.zeros(n_targets)
    coef, intercept = unstandardize(W_s, b_s, mean, scale)
    state = _state_dict(coef, intercept if config.bias else None, dtype)
    coef, intercept = _saved_values(state, n_targets)
    extras = {"lr": np.array(lrs)} if lrs else {}
    if val_costs:
        extras["val_cost"] = np.array(val_costs)
    return FitResult(coef, intercept, state, layout.folded(hist, mean, scale), layout.columns(),
                     epochs_run, stopped, str(device), mean, scale, extras=extras,
                     best_epoch=best_epoch)


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
        self.objective = _objective(config, Y.shape[1])
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
        return _minibatch_epoch(net, optimizer, self.x, self.y, self.batch_size, on_batch,
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


def _state_of(epoch: int, model, optimizer, scheduler, history: _History,
              initial: np.ndarray, lrs: list[float], val_costs: list[float],
              best: tuple) -> dict:
    """A resumable state after ``epoch`` (a ``torch.save`` dict of tensors and plain values,
    loadable with ``weights_only=True``): what :func:`_restore` puts back."""
    return {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler else {},
            "rng": torch.get_rng_state(), "history": torch.as_tensor(history.rows(epoch + 1)),
            "initial": torch.as_tensor(initial), "lrs": lrs, "val_costs": val_costs,
            "best": [best[0], best[1], best[2] or []]}


def _restore(state: dict, model, optimizer, scheduler, history: _History):
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


def _params_row(tracked: list[torch.Tensor]) -> np.ndarray:
    """The tracked parameters as one row, in history's layout (W row-major, then b)."""
    if not tracked:
        return np.empty(0)
    return torch.cat([t.detach().reshape(-1) for t in tracked]).double().cpu().numpy()


class _History:
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


def _minibatch_epoch(model, optimizer, x_all, y_all, batch_size,
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


def _check_finite(costs: np.ndarray, first_epoch: int, lr: float) -> None:
    if np.isfinite(costs).all():
        return
    bad = np.flatnonzero(~np.isfinite(costs))
    if bad.size:
        epoch = first_epoch + int(bad[0])
        raise DivergenceError(
            f"training diverged at epoch {epoch}: the cost became {costs[bad[0]]} with --lr "
            f"{lr:g}; try a smaller --lr (e.g. {lr / 10:g}) or --standardize")


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


def _fit_lstsq(X: np.ndarray, Y: np.ndarray, config: TrainConfig,
               weights: np.ndarray | None = None) -> FitResult:
    """The exact answer (numpy, float64): least squares, weighted least squares, or the
    penalised objective (closed form for l2, coordinate descent for l1 and elasticnet)."""
    if config.penalty == "none":
        coef, intercept = least_squares(X, Y, bias=config.bias, weights=weights)
        mean = scale = None
    else:
        mean, scale = _standardization(X, config)
        Xs = X if scale is None else (X - mean) / scale
        coef, intercept = penalized(Xs, Y, bias=config.bias, penalty=config.penalty,
                                    alpha=config.alpha, l1_ratio=config.l1_ratio,
                                    weights=weights)
        coef, intercept = unstandardize(coef, intercept, mean, scale)
    resid = X @ coef.T + intercept - Y
    cost = float(np.mean(resid**2) if weights is None else
                 np.sum(weights[:, None] * resid**2) / (weights.sum() * Y.shape[1]))
    state = _state_dict(coef, intercept if config.bias else None, getattr(torch, config.dtype))
    coef, intercept = _saved_values(state, Y.shape[1])
    return FitResult(coef, intercept, state, np.array([[cost]]), ["cost"], 0, "exact", "cpu")


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


def _saved_values(state: dict[str, torch.Tensor], n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """coef_ and intercept_ exactly as saved (in the model's dtype), as float64 numpy."""
    coef = state["linear.weight"].double().numpy()
    bias = state.get("linear.bias")
    return coef, bias.double().numpy() if bias is not None else np.zeros(n_targets)


def _state_dict(coef: np.ndarray, intercept: np.ndarray | None, dtype: torch.dtype):
    state = {"linear.weight": torch.tensor(coef, dtype=dtype)}
    if intercept is not None:
        state["linear.bias"] = torch.tensor(intercept, dtype=dtype)
    return state


@dataclass(frozen=True)
class _Layout:
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
