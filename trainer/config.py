"""The settings of one fit, and each setting's valid range, declared once.

``TrainConfig`` holds plain values (saved as-is in the manifest). ``SETTINGS`` declares every
numeric setting's range and choice list; the CLI builds its click parameter types from it and
``TrainConfig.validate`` checks library callers against the same declarations, so a flag and
the library can never disagree. No torch here: ``--help`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import click
import numpy as np

from serve.core.commands import FiniteFloat
from serve.core.errors import LinregError

LOST_RANK = "stopped: another rank left the run"  # a survivor's error, not the root cause


class TrainingError(LinregError):
    """The fit cannot run or cannot finish (bad settings, no CUDA, divergence)."""


@dataclass(frozen=True)
class Range:
    """A number's valid range: ``kind`` int or float, ends inclusive unless open, None = none."""

    kind: type
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def click_type(self) -> click.ParamType:
        if self.kind is int:
            return click.IntRange(self.min, self.max, min_open=self.min_open,
                                  max_open=self.max_open)
        return FiniteFloat(self.min, self.max, min_open=self.min_open, max_open=self.max_open)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return False
        return not (self.max is not None and
                    (value >= self.max if self.max_open else value > self.max))

    def describe(self) -> str:
        return FiniteFloat(self.min, self.max, min_open=self.min_open,
                           max_open=self.max_open).describe()


# Every numeric setting of TrainConfig (and the data split), with its range: the one place.
SETTINGS: dict[str, Range] = {
    "epochs": Range(int, 1),
    "lr": Range(float, 0, min_open=True),
    "momentum": Range(float, 0),
    "weight_decay": Range(float, 0),
    "batch_size": Range(int, 0),
    "seed": Range(int, 0, 2**63 - 1),
    "tol": Range(float, 0),
    "log_every": Range(int, 0),
    "val_fraction": Range(float, 0, 1, min_open=True, max_open=True),
    "init_value": Range(float, -1e6, 1e6),
    "max_levels": Range(int, 1),
    "confidence": Range(float, 0, 1, min_open=True, max_open=True),
    "alpha": Range(float, 0, min_open=True),
    "l1_ratio": Range(float, 0, 1),
    "huber_delta": Range(float, 0, min_open=True),
    "huber_epsilon": Range(float, 1.0),  # HuberRegressor's epsilon: 1.0 or more
    "lr_step_size": Range(int, 1),
    "lr_gamma": Range(float, 0, 1, min_open=True),
    "lr_patience": Range(int, 0),
    "patience": Range(int, 1),
    "min_delta": Range(float, 0),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "solver": ("sgd", "lstsq"),
    "device": ("auto", "cpu", "cuda"),
    "dtype": ("float32", "float64"),
    "unknown": ("error", "reference"),
    "missing_target": ("drop", "error"),
    "cov": ("nonrobust", "HC0", "HC1", "HC2", "HC3"),
    "loss": ("mse", "huber"),
    "optimizer": ("sgd", "adam", "lbfgs"),
    "penalty": ("none", "l2", "l1", "elasticnet"),
    "lr_schedule": ("constant", "step", "cosine", "plateau"),
}
INIT_NAMES = ("default", "zeros")
# Each optimiser's learning rate when --lr is not given: torch's own defaults for Adam (1e-3)
# and L-BFGS (1, the step its line search scales), the tutorials' 0.01 for SGD (torch has none).
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001, "lbfgs": 1.0}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_setting(name: str, value: Any) -> None:
    """Raise a TrainingError naming the flag, the bad value and the range."""
    if value is None and name in ("tol", "val_fraction"):
        return
    if not SETTINGS[name].contains(value):
        raise TrainingError(f"{flag(name)} {value}: must be a number in "
                            f"{SETTINGS[name].describe()}")


class InitType(click.ParamType):
    """``--init``: ``default`` (nn.Linear's own, under the seed), ``zeros``, or a number every
    parameter starts at (one tutorial starts at 0.01)."""

    name = "default|zeros|NUMBER"

    def convert(self, value: Any, param: Any, ctx: Any) -> str | float:
        if isinstance(value, float) or value in INIT_NAMES:
            return value
        number = SETTINGS["init_value"].click_type().convert(value, param, ctx)
        return float(number)


IMPUTE = ("mean", "median", "most-frequent")  # or constant:V


def check_impute(value: str) -> str:
    """``--impute``: mean, median, most-frequent or constant:V (V a finite number)."""
    if value in IMPUTE:
        return value
    if value.startswith("constant:"):
        try:
            number = float(value.removeprefix("constant:"))
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return value
        raise TrainingError(f"--impute {value}: constant:V needs a finite number V, e.g. "
                            "constant:0")
    raise TrainingError(f"--impute {value!r}: use one of {', '.join(IMPUTE)} or constant:V")


class ImputeType(click.ParamType):
    """``--impute`` as a click type, so a bad value exits 2 before any work."""

    name = "mean|median|most-frequent|constant:V"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        try:
            return check_impute(str(value))
        except TrainingError as e:
            self.fail(str(e).removeprefix("--impute "), param, ctx)


@dataclass
class TrainConfig:
    """Every setting of one fit, plain values only (saved as-is in the manifest)."""

    epochs: int = 1000
    lr: float | None = None  # None: the optimiser's DEFAULT_LR (the effective value is kept)
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 0  # 0: full batch, as the tutorials
    init: str | float = "default"  # "default" (nn.Linear's, under the seed), "zeros" or a number
    bias: bool = True
    seed: int = 1
    standardize: bool = False
    solver: str = "sgd"  # or "lstsq"
    tol: float | None = None
    device: str = "auto"
    dtype: str = "float32"
    log_every: int = 100
    log_before_step: bool = False  # log the parameters the cost was computed with
    loss: str = "mse"  # or "huber" (torch's HuberLoss, --huber-delta)
    huber_delta: float = 1.0
    huber_epsilon: float | None = None  # HuberRegressor's loss (σ estimated jointly), exact
    optimizer: str = "sgd"  # or "adam", "lbfgs" (full batch)
    penalty: str = "none"  # l2, l1, elasticnet: scikit-learn's ElasticNet objective
    alpha: float = 1.0  # the penalty's strength (with --penalty); with --cv, the one chosen
    alphas: tuple[float, ...] = ()  # --cv: the grid α is chosen from
    cv: int = 0  # --cv K: choose α by K-fold cross-validation (0: no)
    l1_ratio: float = 0.5  # elasticnet's mix: 1 is l1, 0 is l2
    lr_schedule: str = "constant"  # torch.optim.lr_scheduler: StepLR, CosineAnnealingLR, ...
    lr_step_size: int = 100  # step: epochs between decays
    lr_gamma: float = 0.1  # step and plateau: the factor of each decay
    lr_patience: int = 10  # plateau: epochs without improvement before a decay
    early_stopping: bool = False  # stop when the validation cost stops improving
    patience: int = 10  # early stopping: epochs without an improvement of min_delta
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.lr is None and self.optimizer in DEFAULT_LR:
            self.lr = DEFAULT_LR[self.optimizer]

    def validate(self) -> None:
        """Reject settings that cannot train, naming the flag and the fix."""
        for name in ("solver", "device", "dtype", "loss", "optimizer", "penalty", "lr_schedule"):
            choices = CHOICES[name]
            if getattr(self, name) not in choices:
                raise TrainingError(f"{flag(name)} {getattr(self, name)!r}: use one of "
                                    f"{', '.join(choices)}")
        if self.init not in INIT_NAMES:
            check_setting("init_value", self.init)
        for name in ("epochs", "lr", "momentum", "weight_decay", "batch_size", "seed", "tol",
                     "log_every", "alpha", "l1_ratio", "huber_delta", "lr_step_size",
                     "lr_gamma", "lr_patience", "patience", "min_delta"):
            check_setting(name, getattr(self, name))
        if self.cv or self.alphas:
            self._validate_cv()
        if self.optimizer == "lbfgs" and self.batch_size:
            raise TrainingError("--optimizer lbfgs works on the full batch; drop --batch-size")
        if self.optimizer == "lbfgs" and self.penalty in ("l1", "elasticnet"):
            raise TrainingError(f"--optimizer lbfgs needs a smooth objective; --penalty "
                                f"{self.penalty} has an L1 part: use --optimizer sgd or "
                                "--solver lstsq")
        if self.huber_epsilon is not None:
            check_setting("huber_epsilon", self.huber_epsilon)
            if self.solver != "lstsq" or self.loss != "huber":
                raise TrainingError(f"--huber-epsilon {self.huber_epsilon:g} is scikit-learn's "
                                    "HuberRegressor, solved exactly: use --loss huber --solver "
                                    "lstsq (--huber-delta is torch's HuberLoss, for SGD)")
            if self.penalty not in ("none", "l2") or self.cv:
                raise TrainingError("--huber-epsilon takes HuberRegressor's L2 penalty only: "
                                    "--penalty l2 --alpha A (its alpha), without --cv")
        elif self.solver == "lstsq" and self.loss != "mse":
            raise TrainingError("--loss huber has no closed form; use --solver sgd (e.g. with "
                                "--optimizer lbfgs), or --solver lstsq --huber-epsilon 1.35 "
                                "(scikit-learn's HuberRegressor)")
        if self.solver == "lstsq" and (self.early_stopping or self.lr_schedule != "constant"):
            raise TrainingError("--early-stopping and --lr-schedule steer SGD epochs; the exact "
                                "solver has none (use --solver sgd)")
        if self.solver == "lstsq" and self.optimizer != "sgd":
            raise TrainingError(f"--optimizer {self.optimizer} applies to --solver sgd; the "
                                "exact solver needs none")
        if self.solver == "lstsq" and self.device == "cuda":
            raise TrainingError("--solver lstsq runs on the CPU (numpy, float64); drop "
                                "--device cuda, or use --solver sgd on the GPU")


    def _validate_cv(self) -> None:
        if not self.cv:
            raise TrainingError(f"--alpha {','.join(f'{a:g}' for a in self.alphas)} is a grid; "
                                "choose from it with --cv K (e.g. --cv 5), or give one --alpha")
        if self.cv < 2:
            raise TrainingError(f"--cv {self.cv}: use 2 folds or more")
        if len(self.alphas) < 2:
            raise TrainingError(f"--cv {self.cv} chooses --alpha from a grid: give two or more, "
                                "e.g. --alpha 0.01,0.1,1 or --alpha 1e-3:10:20 (a log grid)")
        for a in self.alphas:
            check_setting("alpha", a)
        if self.penalty == "none" or self.solver != "lstsq":
            raise TrainingError(f"--cv {self.cv} chooses the penalty's --alpha by the exact "
                                "solver: add --penalty l2|l1|elasticnet and --solver lstsq")


class AlphaGrid(click.ParamType):
    """--alpha: one value, a list ``a,b,c``, or a log grid ``lo:hi:n`` (n values from lo to hi,
    evenly spaced in log, as numpy's geomspace); a list or grid needs --cv."""

    name = "alpha"

    def convert(self, value: Any, param: Any, ctx: Any) -> float | tuple[float, ...]:
        if isinstance(value, (float, tuple)):
            return value
        text = str(value).strip()
        try:
            if ":" in text:
                lo, hi, n = text.split(":")
                if int(n) < 2:
                    raise ValueError
                values = tuple(float(v) for v in np.geomspace(float(lo), float(hi), int(n)))
            else:
                values = tuple(float(v) for v in text.split(","))
        except ValueError:
            self.fail(f"{value!r}: give a number, a list a,b,c or a log grid lo:hi:n (n >= 2)",
                      param, ctx)
        for v in values:
            if not (math.isfinite(v) and v > 0):
                self.fail(f"{value!r}: every alpha must be a finite number above 0", param, ctx)
        return values[0] if len(values) == 1 and ":" not in text else values


class ByteSize(click.ParamType):
    """A memory size: bytes, or a number with K, M, G or T (powers of 1024), e.g. ``512M``."""

    name = "size"
    UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in self.UNITS else ""
        try:
            number = float(text[:len(text) - len(unit)])
        except ValueError:
            self.fail(f"{value!r} is not a size; use e.g. 4G, 512M or a number of bytes",
                      param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r}: the size must be above 0", param, ctx)
        return int(number * self.UNITS[unit])

