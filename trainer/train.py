"""One training run, end to end: data file in, artifact folder out.

    linreg-train data.csv --target y --epochs 2000 --lr 0.01 --init zeros

Steps: load and split the data, fit, measure, then write ``model.pt`` (state_dict only),
``history.csv``, optional plots and ``model.json`` into a temporary folder that is renamed into
place only when everything is written.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch

from serve.core.atomic import atomic_dir, resolve_output
from serve.core.columns import specs_json
from serve.core.errors import OutputError, OutputExistsError
from serve.core.manifest import (
    SCHEMA_VERSION,
    check_replaceable,
    record_artifact,
    sha256_file,
    write_manifest,
)
from serve.version import __version__
from trainer.config import TrainConfig, TrainingError
from trainer.data import TrainingData, encode, load_formula_data, load_training_data, split_rows
from trainer.encode import EncodeConfig, id_like
from trainer.fit import FitResult, fit
from trainer.runs import check_run, checkpoint_scope, open_checkpoint, run_record, warm_start
from trainer.solvers import least_squares
from trainer.stats import INFERENCE, inference, sgd_distance


def train(data_path: str | Path, *, out: str | Path | None = None, config: TrainConfig,
          targets: Sequence[str] = (), features: Sequence[str] = (),
          exclude: Sequence[str] = (), encoding: EncodeConfig | None = None,
          sample_weight: str | None = None, init_from: str | Path | None = None,
          val_fraction: float | None = None,
          cov: str = "nonrobust", confidence: float = 0.95,
          checkpoint_every: int | None = None, resume: str | Path | None = None,
          force: bool = False, plot: bool = False, log: Callable[[str], None] | None = None,
          progress: Callable[[float], None] | None = None,
          read_progress: Callable[[int], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """Train on ``data_path`` and write the artifact folder; return it and its manifest.

    ``checkpoint_every`` N keeps a resumable checkpoint in ``OUT.checkpoint/`` every N epochs
    (removed when the run ends well); ``resume`` continues from such a folder (the CLI reads
    the run's settings back with :func:`resume_settings`)."""
    out = Path(out) if out is not None else Path("models") / Path(data_path).stem
    encoding = encoding or EncodeConfig()
    check_run(config, encoding, val_fraction=val_fraction, cov=cov, confidence=confidence)
    check_out(out, Path(data_path), force)  # fail before the (possibly long) fit, not after it
    checkpoint = open_checkpoint(out, resume=resume, every=checkpoint_every, force=force,
                                 record=lambda: run_record(
        data_path, out=out, config=config, encoding=encoding, targets=targets,
        features=features, exclude=exclude, sample_weight=sample_weight, init_from=init_from,
        val_fraction=val_fraction, cov=cov, confidence=confidence, plot=plot,
        checkpoint_every=checkpoint_every))
    with checkpoint_scope(checkpoint, resumed=resume is not None):
        if encoding.formula is not None and (targets or features or exclude or sample_weight):
            raise TrainingError("--formula names the response and the terms: drop --target, "
                                "--features, --exclude and --sample-weight")
        if encoding.formula is not None:  # the design is the formula's (patsy, compiled)
            data, train_idx, val_idx = load_formula_data(
                data_path, encoding.formula, lambda n: split_rows(n, val_fraction, config.seed),
                na=encoding.na_values, impute=encoding.impute,
                missing_target=encoding.missing_target, unknown=encoding.unknown)
            config = replace(config, bias=data.formula.intercept)
        else:
            data = load_training_data(data_path, targets=targets, features=features,
                                      exclude=exclude, categorical=encoding.categorical,
                                      weight=sample_weight,
                                      missing_target=encoding.missing_target,
                                      na=encoding.na_values, progress=read_progress)
            train_idx, val_idx = split_rows(data.n_rows, val_fraction, config.seed)
            data = encode(data, train_idx, encoding, bias=config.bias)
        fitted = fit_data(data, train_idx, val_idx, config=config, cov=cov,
                          confidence=confidence, init_from=init_from, checkpoint=checkpoint,
                          log=log, progress=progress, plot=plot)
        manifest = write_fitted(out, fitted, encoding=encoding, force=force, data={
            "path": str(Path(data.path).resolve()), "sha256": sha256_file(data.path),
            "rows": data.n_rows, "dropped_rows": data.dropped,
            "train_rows": int(len(train_idx)), "validation_rows": int(len(val_idx)),
            "validation_indices": val_idx.tolist() if 0 < len(val_idx) <= 10000 else None,
            "sample_weight": sample_weight})
    return out, manifest


@dataclass
class Fitted:
    """One in-memory fit, before anything is written: the rows (encoded), the split, the
    settings the fit ran with, its result, statistics, metrics, warnings and --cv's record."""

    data: TrainingData
    train_idx: np.ndarray
    val_idx: np.ndarray
    config: TrainConfig
    result: FitResult
    stats: Any
    metrics: dict[str, Any]
    warnings: list[str]
    cv: dict[str, Any] | None = None
    pictures: Any = None


def fit_data(data: TrainingData, train_idx: np.ndarray, val_idx: np.ndarray, *,
             config: TrainConfig, cov: str = "nonrobust", confidence: float = 0.95,
             init_from: str | Path | None = None, checkpoint: Any = None,
             log: Callable[[str], None] | None = None,
             progress: Callable[[float], None] | None = None, plot: bool = False) -> Fitted:
    """The fit of encoded rows ``data`` (its training rows ``train_idx``; ``val_idx`` are
    watched): α by --cv, the fit, statistics, metrics and warnings. The one core that
    ``linreg-train`` (:func:`train`) and the scikit-learn estimator
    (:class:`trainer.estimator.LinregRegressor`) both run."""
    # 1. The training rows, their weights and their place in the file.
    X, Y = data.X[train_idx], data.Y[train_idx]
    weights = None if data.weights is None else data.weights[train_idx]
    if weights is not None and not weights.sum() > 0:
        raise TrainingError("every training row has sample weight 0")
    validation = (data.X[val_idx], data.Y[val_idx]) if len(val_idx) else None
    start = warm_start(init_from, data.feature_names, data.target_names, config) \
        if init_from is not None else None
    file_rows = data.rows_in_file(train_idx)  # the folds and the diagnostics follow them
    # 2. --cv K: α from the grid, by the folds of the training rows.
    cv = None
    if config.cv:
        from trainer.cv import choose_alpha

        config, cv = choose_alpha([(X, Y, np.ones(len(X)) if weights is None else weights, 0,
                                    file_rows)], config, X.shape[1])
    # 3. The fit, its statistics and metrics (sgd_distance also records SGD's distance from
    #    the optimum in ``metrics``).
    result = fit(X, Y, config, weights=weights, validation=validation, warm_start=start,
                 checkpoint=checkpoint, log=log, progress=progress)
    stats = inference(X, Y, result.coef_, result.intercept_, bias=config.bias,
                      names=data.feature_names, cov_type=cov, confidence=confidence,
                      penalized=not_least_squares(config), weights=weights, rows=file_rows)
    metrics = _metrics(data, result, config, train_idx, val_idx)
    warnings = [*data.warnings, *id_like(data.columns, len(train_idx)), *stats.warnings,
                *sgd_distance(metrics, stats, result.coef_, result.intercept_,
                              bias=config.bias)]
    pictures = None
    if plot:
        from trainer.plots import PlotData

        pictures = PlotData(result.history, result.history_columns, X, Y, data.X[val_idx],
                            data.Y[val_idx], result.coef_, result.intercept_, config.bias,
                            data.feature_names, data.target_names, result.best_epoch, cv=cv)
    return Fitted(data, train_idx, val_idx, config, result, stats, metrics, warnings, cv,
                  pictures)


def write_fitted(out: Path, fitted: Fitted, *, encoding: EncodeConfig, data: dict[str, Any],
                 force: bool = False) -> dict[str, Any]:
    """The artifact folder of an in-memory fit (``data``: the manifest's record of the rows)."""
    d = fitted.data
    return write_folder(
        out, force=force, result=fitted.result, config=fitted.config,
        features=d.feature_names, targets=d.target_names, columns=d.columns,
        encoding=encoding, warnings=fitted.warnings, metrics=fitted.metrics,
        stats=fitted.stats, data=data, plots=fitted.pictures,
        training={"cv": fitted.cv} if fitted.cv else None, formula=d.formula,
        means=d.X[fitted.train_idx].mean(axis=0, dtype=np.float64))


def _write_inference(folder: Path, manifest: dict[str, Any], stats: Any) -> None:
    """``inference.npz``: the covariance of the estimates and σ̂, for intervals at export."""
    if stats.cov is not None:
        np.savez(folder / INFERENCE, cov=stats.cov, sigma=stats.sigma,
                 df_resid=np.array(stats.per_target[0]["df_resid"]))
        record_artifact(manifest, folder, INFERENCE)


def not_least_squares(config: TrainConfig) -> str | None:
    """Why the estimates are not (weighted) least squares, for the statistics; or None."""
    if config.penalty != "none":
        return f"--penalty {config.penalty} --alpha {config.alpha:g}"
    if config.weight_decay:
        return f"--weight-decay {config.weight_decay:g}"
    if config.loss != "mse":
        return f"--loss {config.loss}"
    return None


def check_out(out: Path, data_path: Path, force: bool) -> None:
    """Refuse an artifact folder that would replace the working folder, the data, or anything
    linreg did not write."""
    final, st = resolve_output(out)
    if st is None:
        existing = next(p for p in final.parents if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"{out}: cannot write (Permission denied in {existing})")
        return
    cwd = Path.cwd().resolve()
    if final == cwd or final in cwd.parents:
        raise OutputError(f"--out {out}: is the current folder (or holds it); name a new folder "
                          "for the model, e.g. --out models/NAME")
    if final in Path(data_path).resolve().parents:
        raise OutputError(f"--out {out}: holds the training data {data_path}; choose another "
                          "--out")
    if not force:
        raise OutputExistsError(f"{out}: already exists; pass --force to overwrite it")
    if final.is_dir():
        check_replaceable(final)


def _exact_penalized(X, Y, config: TrainConfig, weights) -> tuple[np.ndarray, np.ndarray]:
    result = fit(X, Y, replace(config, solver="lstsq", optimizer="sgd", device="cpu"),
                 weights=weights)
    return result.coef_, result.intercept_


def regression_metrics(X: np.ndarray, Y: np.ndarray, coef: np.ndarray,
                       intercept: np.ndarray) -> dict[str, Any]:
    """MSE and R² per target (float64), and their means over targets."""
    resid = Y - (X @ coef.T + intercept)
    mse = np.mean(resid**2, axis=0)
    var = np.var(Y, axis=0)
    r2 = np.where(var > 0, 1.0 - mse / np.where(var > 0, var, 1.0), np.nan)
    return {"rows": int(len(X)), "mse": mse.tolist(), "r2": [None if np.isnan(v) else float(v)
                                                             for v in r2],
            "mse_mean": float(mse.mean())}


UNDERFIT_R2 = 0.01  # SGD's train R² this far below the optimum's is "clearly short"
UNDERFIT_MSE = 1.05  # ... or, for a constant target (no R²), its MSE this many times the optimum


def underfit(sgd: dict[str, Any], optimum: dict[str, Any]) -> bool:
    """Whether SGD's train metrics are clearly short of the exact least-squares optimum."""
    for r2, r2_opt, mse, mse_opt in zip(sgd["r2"], optimum["r2"], sgd["mse"], optimum["mse"]):
        if r2 is not None and r2_opt is not None:
            if r2_opt - r2 > UNDERFIT_R2:
                return True
        elif mse > UNDERFIT_MSE * mse_opt + 1e-12:
            return True
    return False


def _write_history(path: Path, result: FitResult) -> None:
    cols = {"epoch": pa.array(np.arange(len(result.history)), pa.int64())}
    for j, name in enumerate(result.history_columns):
        cols[name] = pa.array(result.history[:, j])
    for name, values in result.extras.items():  # lr (schedules), val_cost (early stopping)
        cols[name] = pa.array(values[:len(result.history)])
    pacsv.write_csv(pa.table(cols), path)


def _metrics(data: TrainingData, result: FitResult, config: TrainConfig,
             train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, Any]:
    """Train (and validation) MSE and R², and for SGD how far it got from the exact optimum."""
    X, Y = data.X[train_idx], data.Y[train_idx]
    metrics = {"train": regression_metrics(X, Y, result.coef_, result.intercept_)}
    if len(val_idx):
        metrics["validation"] = regression_metrics(data.X[val_idx], data.Y[val_idx],
                                                   result.coef_, result.intercept_)
    if config.solver == "sgd" and config.loss == "mse":
        # how far SGD got, against the exact optimum of the same objective on the same rows
        weights = None if data.weights is None else data.weights[train_idx]
        exact = least_squares(X, Y, bias=config.bias, weights=weights) \
            if config.penalty == "none" else _exact_penalized(X, Y, config, weights)
        optimum = regression_metrics(X, Y, *exact)
        optimum["sgd_short_of_it"] = underfit(metrics["train"], optimum)
        optimum["coef_"], optimum["intercept_"] = exact[0].tolist(), exact[1].tolist()
        metrics["exact_least_squares"] = optimum
    return metrics


def write_folder(out: Path, *, force: bool, result: FitResult, config: TrainConfig,
                  features: list[str], targets: list[str], columns: Any,
                  encoding: EncodeConfig, warnings: list[str], metrics: dict[str, Any],
                  stats: Any, data: dict[str, Any], training: dict[str, Any] | None = None,
                  plots: Any = None, formula: Any = None,
                  means: np.ndarray | None = None) -> dict[str, Any]:
    """The artifact folder of a fit, however it was trained (in memory, streamed, on many
    ranks): model.pt, history.csv, inference.npz, plots and model.json, built in a temporary
    folder that replaces ``out`` only when all is written. ``means``: the design columns'
    means over the training rows (unweighted), the contributions' reference point. Returns
    the manifest."""
    with atomic_dir(out, force=force, check_replaceable=check_replaceable) as tmp:
        torch.save(result.state_dict, tmp / "model.pt")
        _write_history(tmp / "history.csv", result)
        manifest = _manifest_of(result, config, out.name, features, targets, columns, encoding,
                                warnings, metrics, data, training or {})
        manifest["statistics"] = stats.per_target
        if means is not None:
            manifest["model"]["feature_means"] = np.asarray(means, dtype=np.float64).tolist()
        if formula is not None:  # --formula: its design, which the exporter compiles
            manifest["formula"] = formula.to_json()
        for name in ("model.pt", "history.csv"):
            record_artifact(manifest, tmp, name)
        _write_inference(tmp, manifest, stats)
        if plots is not None:
            from trainer.plots import write_plots

            for name in write_plots(tmp, plots):
                record_artifact(manifest, tmp, name)
        write_manifest(tmp, manifest)
    return manifest


def _manifest_of(result: FitResult, config: TrainConfig, name: str, features: list[str],
                 targets: list[str], columns: Any, encoding: EncodeConfig,
                 warnings: list[str], metrics: dict[str, Any], data: dict[str, Any],
                 training: dict[str, Any]) -> dict[str, Any]:
    """model.json: the one builder of every fit's manifest."""
    std = None
    if result.scale_ is not None:
        std = {"mean": result.mean_.tolist(), "scale": result.scale_.tolist(),
               "folded_into_weights": True}
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "linreg_version": __version__,
        "model": {"type": "linear", "n_features": len(features), "n_targets": len(targets),
                  "bias": config.bias, "dtype": config.dtype, "coef_": result.coef_.tolist(),
                  "intercept_": result.intercept_.tolist()},
        "features": features,
        "targets": targets,
        "columns": specs_json(columns) if columns else None,
        "warnings": warnings,
        "encoding": {**asdict(encoding), "categorical": list(encoding.categorical)}
        if columns else None,
        "normalization": std,
        "data": data,
        "training": {**result.config, **({"huber_scale": result.huber_scale.tolist()}
                                         if result.huber_scale is not None else {}),
                     "device": result.device, "epochs_run": result.epochs_run,
                     "best_epoch": result.best_epoch, "stopped": result.stopped,
                     "seconds": round(result.seconds, 4), "torch_version": torch.__version__,
                     **training},
        "metrics": metrics,
        "history": "history.csv",
        "artifacts": {},
        "exports": {},
    }





