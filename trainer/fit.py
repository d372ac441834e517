"""Fitting H(x) = Wx + b: the SGD loop of the tutorials, and exact least squares to check it.

    from trainer.fit import TrainConfig, fit
    result = fit(X, Y, TrainConfig(epochs=2000, lr=0.01, init="zeros"), log=print)
    result.coef_, result.intercept_        # raw units, numpy float64

The loop is the tutorial's (forward, ``F.mse_loss``, ``zero_grad``, ``backward``, ``step``) with
the bookkeeping kept off the hot path: the per-epoch cost and parameters are written into a
history tensor on the device, and the host only looks at it (a GPU sync) at check points.

It is the one loop at every size (:func:`sgd_loop`): a :class:`Source` gives it what touches
rows, :class:`InMemory` for a table on the device, :class:`trainer.streamed_sgd.Streamed` for chunks
read from files over ranks; steps, schedules, early stopping, checkpoints, history and logs are
the loop's own, so a flag means the same thing in memory and streamed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from trainer.checkpoint import Checkpoint, restore_state, state_of
from trainer.config import TrainConfig, TrainingError
from trainer.history import MAX_HISTORY_PARAMS, History, Layout, params_row, unstandardize
from trainer.model import build_model
from trainer.solvers import huber, least_squares, penalized
from trainer.sources import InMemory, Source, resolve_device
from trainer.steps import l1_prox, optimizer_of, scheduler_of

__all__ = ["DivergenceError", "FitResult", "TrainConfig", "TrainingError", "fit",
           "least_squares", "resolve_device"]


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
    huber_scale: np.ndarray | None = None  # --huber-epsilon: the scale σ per target


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


def sgd_loop(source: Source, config: TrainConfig, n_features: int, n_targets: int, *,
             mean: np.ndarray | None, scale: np.ndarray | None,
             log: Callable[[str], None] | None = None,
             progress: Callable[[float], None] | None = None,
             warm_start: tuple[np.ndarray, np.ndarray] | None = None,
             checkpoint: Checkpoint | None = None) -> FitResult:
    """The SGD loop of the tutorials, for every optimiser, objective and size: the model
    learns on features standardised by ``mean``/``scale`` (None: raw), and the result is
    folded back to raw units."""
    # 1-2. Seed, build the model, its optimiser and its history (or take a checkpoint's).
    run = _Run.start(source, config, n_features, n_targets, mean, scale, warm_start,
                     checkpoint)
    log_every = config.log_every if log is not None and source.rank == 0 else 0
    progress = progress if source.rank == 0 else None
    stopped, epoch = "epochs", run.first_epoch - 1
    for epoch in range(run.first_epoch, config.epochs):
        cost = run.step(source, epoch, progress)  # 3. one step (or epoch of steps)
        run.history.record(epoch, cost)  # 4. this epoch's cost and parameters (no GPU sync)
        if run.watch_and_schedule(source, epoch, cost):  # 4'. schedules, early stopping
            stopped = "early"
        if checkpoint is not None and checkpoint.due(epoch, config.epochs):
            extra = source.saved()
            if source.rank == 0:
                checkpoint.save({**run.state(epoch), **extra})
        # 5. At check points: divergence, tolerance, logging, progress.
        logging_now = log_every and epoch % log_every == 0
        if logging_now or epoch % run.check_every == 0 or epoch == config.epochs - 1:
            if run.check(epoch):
                stopped = "tol"
            if logging_now:
                log(run.log_line(epoch))
            if progress is not None:
                progress(epoch + 1)
            if stopped == "tol":
                break
        if stopped == "early":
            run.check(epoch, tol=False)
            break
    # 6-7. The best epoch's parameters, the last line, raw-unit results.
    return run.finish(source, epoch + 1, stopped, log if log_every else None)


@dataclass
class _Run:
    """What one SGD run carries from epoch to epoch: the model, its optimiser, schedule and
    proximal step, the history, and early stopping's best so far."""

    config: TrainConfig
    model: torch.nn.Module
    net: torch.nn.Module  # the module the steps run through (DDP over ranks)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    prox: Callable | None
    history: History
    layout: Layout
    tracked: list[torch.Tensor]
    mean: np.ndarray | None
    scale: np.ndarray | None
    check_every: int
    watch: bool
    initial: np.ndarray  # the parameters epoch 0's forward pass used
    first_epoch: int = 0
    last_checked: int = -1
    lrs: list[float] = field(default_factory=list)
    val_costs: list[float] = field(default_factory=list)
    best: tuple = (np.inf, -1, None)  # validation cost, epoch, parameters

    @classmethod
    def start(cls, source: Source, config: TrainConfig, n_features: int, n_targets: int,
              mean: np.ndarray | None, scale: np.ndarray | None,
              warm_start: tuple[np.ndarray, np.ndarray] | None,
              checkpoint: Checkpoint | None) -> _Run:
        dtype = getattr(torch, config.dtype)
        # 1. Seed, then build the model before any other random draw, as a plain script would.
        torch.manual_seed(config.seed)
        model = build_model(n_features, n_targets, bias=config.bias, init=config.init,
                            dtype=dtype)
        if warm_start is not None:
            _warm(model, warm_start, mean, scale)
        model.to(source.device)
        W, b = model.linear.weight, model.linear.bias
        optimizer = optimizer_of(model, config)
        # 2. History lives where the model does; the host reads it only at check points.
        keep_params = W.numel() + (b.numel() if b is not None else 0) <= MAX_HISTORY_PARAMS
        tracked = [W, b] if keep_params and b is not None else [W] if keep_params else []
        run = cls(config, model, source.wrap(model), optimizer, scheduler_of(optimizer, config),
                  l1_prox(config, n_targets), History(config.epochs, tracked, source.device, dtype),
                  Layout(n_features, n_targets, config.bias, keep_params), tracked, mean, scale,
                  # divergence is found at its exact epoch whatever the interval; --tol checks
                  # every epoch
                  1 if config.tol is not None else source.check_every,
                  source.watches and (config.early_stopping or config.lr_schedule == "plateau"),
                  params_row(tracked))
        if checkpoint is not None and checkpoint.state is not None:  # resume where it stopped
            source.restore(checkpoint.state)
            run.first_epoch, run.initial, run.lrs, run.val_costs, run.best = restore_state(
                checkpoint.state, model, optimizer, run.scheduler, run.history)
            run.last_checked = run.first_epoch - 1
        return run

    def step(self, source: Source, epoch: int,
             progress: Callable[[float], None] | None) -> torch.Tensor:
        """One epoch's optimisation; its cost (on the device)."""
        config, optimizer = self.config, self.optimizer
        if config.optimizer == "lbfgs":
            # 3'. L-BFGS re-evaluates the cost in its line search: give it a closure (each
            # evaluation is the full batch: a pass over every rank's rows when streamed).
            def closure() -> torch.Tensor:
                optimizer.zero_grad()
                return source.gradient(self.net)
            return optimizer.step(closure)
        if source.full_batch:
            # 3. Zero the old gradients; forward pass, cost and backward; step.
            optimizer.zero_grad()
            cost = source.gradient(self.net)
            optimizer.step()
            if self.prox is not None:
                self.prox(self.model.linear.weight)
            return cost
        return source.minibatch_epoch(self.net, optimizer, self.prox, None if progress is None
                                      else lambda f: progress(epoch + f))

    def watch_and_schedule(self, source: Source, epoch: int, cost: torch.Tensor) -> bool:
        """The validation cost, the learning-rate schedule and early stopping's best (these
        read one number back each epoch); True when early stopping says stop."""
        config = self.config
        if self.watch:
            self.val_costs.append(source.validation_cost(self.model))
        if self.scheduler is not None:
            self.lrs.append(self.optimizer.param_groups[0]["lr"])
            if config.lr_schedule == "plateau":
                self.scheduler.step(self.val_costs[-1] if self.val_costs else
                                    float(cost.detach()))
            else:
                self.scheduler.step()
        if config.early_stopping:
            if self.val_costs[-1] < self.best[0] - config.min_delta:
                self.best = (self.val_costs[-1], epoch,
                             [p.detach().clone() for p in self.model.parameters()])
            elif epoch - self.best[1] >= config.patience:
                return True
        return False

    def check(self, epoch: int, *, tol: bool = True) -> bool:
        """Read the costs since the last check: a divergence stops the run; True when --tol
        says the cost stopped falling (``tol``: asked)."""
        costs = self.history.costs(self.last_checked + 1, epoch + 1)
        _check_finite(costs, self.last_checked + 1, self.config.lr)
        self.last_checked = epoch
        return tol and self.config.tol is not None and epoch > 0 and \
            self.history.costs(epoch - 1, epoch)[0] - costs[-1] < self.config.tol

    def log_line(self, epoch: int) -> str:
        row = self.history.row(epoch)
        if self.config.log_before_step:  # the parameters the cost was computed with
            row = np.concatenate([row[:1], self.history.row(epoch - 1)[1:] if epoch else
                                  self.initial])
        return self.layout.log_line(epoch, self.config.epochs, row, self.mean, self.scale)

    def state(self, epoch: int) -> dict:
        return state_of(epoch, self.model, self.optimizer, self.scheduler, self.history,
                        self.initial, self.lrs, self.val_costs, self.best)

    def finish(self, source: Source, epochs_run: int, stopped: str,
               log: Callable[[str], None] | None) -> FitResult:
        config, model, mean, scale = self.config, self.model, self.mean, self.scale
        best_epoch = None
        if config.early_stopping and self.best[2] is not None:  # keep the best epoch's
            with torch.no_grad():
                for p, kept in zip(model.parameters(), self.best[2]):
                    p.copy_(kept)
            best_epoch = self.best[1]
        # 6. As the tutorials' range(epochs + 1) does, one last line: the saved model, its cost.
        if log is not None:
            final = np.concatenate([[source.final_cost(model)], params_row(self.tracked)])
            log(self.layout.log_line(epochs_run, config.epochs, final, mean, scale))
        # 7. Raw-unit results: fold the standardisation back into W and b.
        W, b = model.linear.weight, model.linear.bias
        n_targets = W.shape[0]
        W_s = W.detach().double().cpu().numpy()
        b_s = b.detach().double().cpu().numpy() if b is not None else np.zeros(n_targets)
        coef, intercept = unstandardize(W_s, b_s, mean, scale)
        state = state_dict_of(coef, intercept if config.bias else None,
                              getattr(torch, config.dtype))
        coef, intercept = saved_values(state, n_targets)
        extras = {"lr": np.array(self.lrs)} if self.lrs else {}
        if self.val_costs:
            extras["val_cost"] = np.array(self.val_costs)
        hist = self.layout.folded(self.history.rows(epochs_run), mean, scale)
        return FitResult(coef, intercept, state, hist, self.layout.columns(), epochs_run,
                         stopped, str(source.device), mean, scale, extras=extras,
                         best_epoch=best_epoch)


def _warm(model: torch.nn.Module, warm_start: tuple[np.ndarray, np.ndarray],
          mean: np.ndarray | None, scale: np.ndarray | None) -> None:
    """Start from raw-unit parameters, in training units."""
    W0, b0 = warm_start
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(W0 if scale is None else W0 * scale))
        if model.linear.bias is not None:
            model.linear.bias.copy_(torch.as_tensor(b0 if scale is None else b0 + W0 @ mean))


def _check_finite(costs: np.ndarray, first_epoch: int, lr: float) -> None:
    if np.isfinite(costs).all():
        return
    bad = np.flatnonzero(~np.isfinite(costs))
    if bad.size:
        epoch = first_epoch + int(bad[0])
        raise DivergenceError(
            f"training diverged at epoch {epoch}: the cost became {costs[bad[0]]} with --lr "
            f"{lr:g}; try a smaller --lr (e.g. {lr / 10:g}) or --standardize")


def _fit_lstsq(X: np.ndarray, Y: np.ndarray, config: TrainConfig,
               weights: np.ndarray | None = None) -> FitResult:
    """The exact answer (numpy, float64): least squares, weighted least squares, or the
    penalised objective (closed form for l2, coordinate descent for l1 and elasticnet)."""
    huber_scale = None
    if config.huber_epsilon is not None:
        w = np.ones(len(X)) if weights is None else weights
        coef, intercept, huber_scale = huber(
            lambda: [(X, Y, w)], n_features=X.shape[1], n_targets=Y.shape[1], bias=config.bias,
            epsilon=config.huber_epsilon, alpha=config.alpha if config.penalty == "l2" else 0.0)
        mean = scale = None
    elif config.penalty == "none":
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
    state = state_dict_of(coef, intercept if config.bias else None, getattr(torch, config.dtype))
    coef, intercept = saved_values(state, Y.shape[1])
    result = FitResult(coef, intercept, state, np.array([[cost]]), ["cost"], 0, "exact", "cpu")
    result.huber_scale = huber_scale
    return result


def saved_values(state: dict[str, torch.Tensor], n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """coef_ and intercept_ exactly as saved (in the model's dtype), as float64 numpy."""
    coef = state["linear.weight"].double().numpy()
    bias = state.get("linear.bias")
    return coef, bias.double().numpy() if bias is not None else np.zeros(n_targets)


def state_dict_of(coef: np.ndarray, intercept: np.ndarray | None, dtype: torch.dtype):
    state = {"linear.weight": torch.tensor(coef, dtype=dtype)}
    if intercept is not None:
        state["linear.bias"] = torch.tensor(intercept, dtype=dtype)
    return state


