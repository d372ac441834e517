"""``LinregRegressor``: linreg's trainer as a scikit-learn estimator.

    from trainer import LinregRegressor
    model = LinregRegressor(penalty="l2", alpha=0.1).fit(X, y)      # numpy, pandas or Arrow
    model.predict(X_new), model.score(X_new, y_new)
    model.coef_, model.intercept_, model.statistics_                 # statsmodels-grade
    model.save("models/m"); model.export("models/m")                 # linreg-train's folder

The fit is :func:`trainer.train.fit_data`, the very core ``linreg-train`` runs after reading its
file: the same solvers, penalties, encoding of categorical columns and blanks, statistics and
artifact folder. Parameters are the CLI's settings, keyword-only, each checked where the CLI
checks it (:class:`trainer.config.TrainConfig`, :class:`trainer.encode.EncodeConfig`), with two
defaults of a library rather than of the tutorial CLI: the exact solver (``solver="lstsq"``) in
float64, and ``fit_intercept`` for the CLI's ``--no-bias``.

Input: a numeric array (or anything scikit-learn's ``validate_data`` takes), or a pandas
DataFrame / Arrow table whose text columns (or ``categorical`` names) are categorical and whose
blanks (None, NaN) are filled by ``impute``, as the CLI reads a file. ``fit`` raises
``ValueError`` for data or settings that cannot train (linreg's one-line message).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from serve.core.errors import LinregError

# TrainConfig's settings the estimator takes (bias is fit_intercept; the CLI-only ones left out)
_CONFIG = ("solver", "penalty", "alpha", "l1_ratio", "loss", "huber_delta", "huber_epsilon",
           "optimizer", "epochs", "lr", "momentum", "weight_decay", "batch_size", "init",
           "standardize", "tol", "lr_schedule", "lr_step_size", "lr_gamma", "lr_patience",
           "early_stopping", "patience", "min_delta", "seed", "dtype", "device")
_ENCODING = ("categorical", "impute", "missing_indicator", "max_levels", "unknown", "reference",
             "missing_target")


class LinregRegressor(RegressorMixin, BaseEstimator):
    """Linear regression by linreg's trainer (see the module docstring); learned:
    ``coef_`` (``(n_features,)``, or ``(n_targets, n_features)`` for a 2-D y), ``intercept_``,
    ``n_features_in_``, ``feature_names_in_`` (string column names given), ``statistics_``
    (per target: coef, std_err, t, p_value, conf_int, r2, ...; a list for a 2-D y),
    ``columns_`` (the learned column specs of a table with categorical columns or blanks,
    else None) and ``feature_names_out_`` (the design's columns: ``city[T.Paris]``, ...)."""

    def __init__(self, *, solver: str = "lstsq", penalty: str = "none", alpha: float = 1.0,
                 l1_ratio: float = 0.5, loss: str = "mse", huber_delta: float = 1.0,
                 huber_epsilon: float | None = None, optimizer: str = "sgd",
                 epochs: int = 1000, lr: float | None = None, momentum: float = 0.0,
                 weight_decay: float = 0.0, batch_size: int = 0, init: str | float = "default",
                 standardize: bool = False, tol: float | None = None,
                 lr_schedule: str = "constant", lr_step_size: int = 100, lr_gamma: float = 0.1,
                 lr_patience: int = 10, early_stopping: bool = False, patience: int = 10,
                 min_delta: float = 0.0, seed: int = 1, dtype: str = "float64",
                 device: str = "auto", fit_intercept: bool = True,
                 categorical: Sequence[str] = (), impute: str | None = None,
                 missing_indicator: bool = False, max_levels: int = 1000,
                 unknown: str = "error", reference: Sequence[str] = (),
                 missing_target: str = "drop", val_fraction: float | None = None,
                 cov: str = "nonrobust", confidence: float = 0.95) -> None:
        self.solver, self.penalty, self.alpha, self.l1_ratio = solver, penalty, alpha, l1_ratio
        self.loss, self.huber_delta, self.huber_epsilon = loss, huber_delta, huber_epsilon
        self.optimizer, self.epochs, self.lr, self.momentum = optimizer, epochs, lr, momentum
        self.weight_decay, self.batch_size, self.init = weight_decay, batch_size, init
        self.standardize, self.tol, self.lr_schedule = standardize, tol, lr_schedule
        self.lr_step_size, self.lr_gamma, self.lr_patience = lr_step_size, lr_gamma, lr_patience
        self.early_stopping, self.patience, self.min_delta = early_stopping, patience, min_delta
        self.seed, self.dtype, self.device, self.fit_intercept = seed, dtype, device, \
            fit_intercept
        self.categorical, self.impute, self.missing_indicator = categorical, impute, \
            missing_indicator
        self.max_levels, self.unknown, self.reference = max_levels, unknown, reference
        self.missing_target, self.val_fraction = missing_target, val_fraction
        self.cov, self.confidence = cov, confidence

    # ------------------------------------------------------------------ scikit-learn

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.allow_nan = self.impute is not None
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        return tags

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinregRegressor:
        """Fit on ``X`` (rows by features) and ``y`` (a vector, or one column per target)."""
        from trainer.config import TrainConfig
        from trainer.data import TrainingData, encode, split_rows
        from trainer.encode import EncodeConfig
        from trainer.runs import check_run
        from trainer.train import fit_data

        config = TrainConfig(**{k: getattr(self, k) for k in _CONFIG},
                             bias=self.fit_intercept)
        encoding = EncodeConfig(**{k: tuple(getattr(self, k)) if k in ("categorical",
                                                                        "reference")
                                   else getattr(self, k) for k in _ENCODING})
        data, Y = self._rows(X, y, reset=True)
        single = np.ndim(Y) == 1
        Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
        weights = None if sample_weight is None else \
            _check_sample_weight(sample_weight, Y, dtype=np.float64)
        names = [f"y{j}" for j in range(Y.shape[1])] if Y.shape[1] > 1 else ["y"]
        try:
            check_run(config, encoding, val_fraction=self.val_fraction, cov=self.cov,
                      confidence=self.confidence)
            X_, features, raw = data
            rows = TrainingData(X_, Y, features, names, "(in memory)", raw=raw,
                                weights=weights)
            if self.missing_target == "drop" and np.isnan(Y).any():
                from trainer.data import _without_blank_targets

                rows = _without_blank_targets(rows)
            train_idx, val_idx = split_rows(rows.n_rows, self.val_fraction, config.seed)
            rows = encode(rows, train_idx, encoding, bias=config.bias)
            params = rows.X.shape[1] + int(config.bias)
            if len(train_idx) < params:  # linreg refuses an underdetermined fit, as its CLI
                raise ValueError(f"n_samples={len(train_idx)}: fewer training rows than the "
                                 f"model's {params} parameters per target; need at least "
                                 f"{params} rows (or fewer features)")
            fitted = fit_data(rows, train_idx, val_idx, config=config, cov=self.cov,
                              confidence=self.confidence)
        except LinregError as e:  # scikit-learn's contract: bad data or settings are ValueError
            raise ValueError(str(e)) from None
        result = fitted.result
        self.coef_ = result.coef_[0] if single else result.coef_
        self.intercept_ = float(result.intercept_[0]) if single else result.intercept_
        self.statistics_ = fitted.stats.per_target[0] if single else fitted.stats.per_target
        self.columns_ = rows.columns
        self.feature_names_out_ = np.asarray(rows.feature_names, dtype=object)
        self._fitted, self._encoding, self._single = fitted, encoding, single
        self._digest = _digest(rows, Y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The predictions of rows ``X``: ``(n,)``, or ``(n, n_targets)`` for a 2-D y."""
        check_is_fitted(self)
        from trainer.encode import design_matrix

        (X_, _, raw), _ = self._rows(X, None, reset=False)
        try:
            if self.columns_ is not None:
                X_ = design_matrix(raw, self.columns_, source="X")
        except LinregError as e:
            raise ValueError(str(e)) from None
        coef = np.atleast_2d(self.coef_)
        pred = X_ @ coef.T + self.intercept_
        return pred[:, 0] if self._single else pred

    # ------------------------------------------------------------------ linreg's artifacts

    def save(self, folder: str | Path, *, force: bool = False) -> Path:
        """The artifact folder ``linreg-train`` writes (model.pt, model.json with the
        statistics, history.csv, inference.npz), ready for :meth:`export`; ``force`` replaces
        a folder linreg wrote."""
        check_is_fitted(self)
        from trainer.train import check_out, write_fitted

        folder = Path(folder)
        check_out(folder, Path.cwd() / "_", force)
        f = self._fitted
        try:
            write_fitted(folder, f, encoding=self._encoding, force=force, data={
                "path": "(in memory: LinregRegressor.fit)", "sha256": self._digest,
                "rows": f.data.n_rows, "dropped_rows": f.data.dropped,
                "train_rows": int(len(f.train_idx)), "validation_rows": int(len(f.val_idx)),
                "validation_indices": None,
                "sample_weight": None if f.data.weights is None else "(given to fit)"})
        except LinregError as e:
            raise ValueError(str(e)) from None
        return folder

    def export(self, folder: str | Path, *, formats: Sequence[str] = ("onnx",),
               intervals: float | None = None, contributions: bool = False,
               force: bool = False) -> dict[str, Any]:
        """:meth:`save` (when ``folder`` has no model yet), then ``linreg-export``: model.onnx
        (with ``intervals``, ``contributions``), checked against the fit; the manifest."""
        from trainer.export import export

        folder = Path(folder)
        if not (folder / "model.json").is_file():
            self.save(folder)
        try:
            return export(folder, formats=tuple(formats), intervals=intervals,
                          contributions=contributions, force=force)
        except LinregError as e:
            raise ValueError(str(e)) from None

    # ------------------------------------------------------------------ the rows

    def _rows(self, X: Any, y: Any, *, reset: bool) -> tuple[tuple, Any]:
        """``(X matrix or None, names, raw columns or None)`` and y: a table (pandas, Arrow)
        or ``categorical`` names go by columns, as the CLI reads a file; anything else through
        scikit-learn's ``validate_data`` (NaN allowed with ``impute``)."""
        from trainer.encode import numeric_raw

        if _is_table(X) or self.categorical:
            table = _as_arrow(X)
            names = list(table.column_names)
            if reset:
                self.n_features_in_ = len(names)
                self.feature_names_in_ = np.asarray(names, dtype=object)
            else:
                want = list(getattr(self, "feature_names_in_", []))
                if missing := [n for n in want if n not in names]:
                    raise ValueError(f"missing feature column(s) {', '.join(missing)}; the "
                                     f"model was fitted on {', '.join(want)}")
                table, names = table.select(want), want
            if y is not None:
                y = _as_vector(y, table.num_rows)
            from trainer.encode import raw_columns

            try:
                raw = raw_columns(table, names, categorical=list(self.categorical),
                                  source="X")
            except LinregError as e:
                raise ValueError(str(e)) from None
            if all(v.dtype != object for v in raw.values()) and self.impute is None \
                    and not any(np.isnan(v).any() for v in raw.values()):
                return (np.column_stack([raw[n] for n in names]) if names else
                        np.empty((table.num_rows, 0)), names, None), y
            return (None, names, raw), y
        nan = "allow-nan" if self.impute is not None else True
        if y is None and not reset:
            X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite=nan)
        else:
            X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                                 dtype=np.float64, ensure_all_finite=nan)
        names = [str(n) for n in getattr(self, "feature_names_in_", [])] or \
            [f"x{j}" for j in range(X.shape[1])]
        if self.impute is not None or (not reset and self.columns_ is not None):
            return (None, names, numeric_raw(X, names)), y
        return (X, names, None), y


def _is_table(X: Any) -> bool:
    """A pandas DataFrame or an Arrow table/batch (columns by name, kinds by column)."""
    return (hasattr(X, "columns") and hasattr(X, "dtypes")) or \
        (hasattr(X, "schema") and hasattr(X, "column_names"))


def _as_arrow(X: Any) -> Any:
    import pyarrow as pa

    if isinstance(X, pa.Table):
        return X
    if isinstance(X, pa.RecordBatch):
        return pa.Table.from_batches([X])
    if hasattr(X, "columns") and hasattr(X, "dtypes"):
        X = X.rename(columns=str)
        return pa.Table.from_pandas(X, preserve_index=False)
    if isinstance(X, np.ndarray) and X.ndim == 2:
        return pa.table({f"x{j}": pa.array(X[:, j].tolist()) for j in range(X.shape[1])})
    raise ValueError("expected rows: a 2-D array, a pandas DataFrame or an Arrow table")


def _as_vector(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y, dtype=np.float64)
    if len(y) != n:
        raise ValueError(f"X has {n} rows but y has {len(y)}")
    return y


def _digest(rows: Any, Y: np.ndarray) -> str:
    """A sha256 of the fitted rows (the manifest's ``data.sha256``: which data made it)."""
    h = hashlib.sha256(np.ascontiguousarray(rows.X).tobytes())
    h.update(np.ascontiguousarray(Y).tobytes())
    return h.hexdigest()


__all__ = ["LinregRegressor"]
