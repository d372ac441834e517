"""One training run, end to end: data file in, artifact folder out.

    linreg-train data.csv --target y --epochs 2000 --lr 0.01 --init zeros

Steps: load and split the data, fit, measure, then write ``model.pt`` (state_dict only),
``history.csv``, optional plots and ``model.json`` into a temporary folder that is renamed into
place only when everything is written.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch

from serve.core.atomic import atomic_dir, resolve_output
from serve.core.columns import specs_json
from serve.core.errors import DataError, OutputError, OutputExistsError, first_line
from serve.core.manifest import (
    SCHEMA_VERSION,
    check_replaceable,
    record_artifact,
    sha256_file,
    write_manifest,
)
from serve.version import __version__
from trainer.checkpoint import Checkpoint
from trainer.config import CHOICES, TrainConfig, TrainingError, check_setting
from trainer.data import TrainingData, encode, load_training_data, pick_columns, split_rows
from trainer.encode import EncodeConfig
from trainer.fit import FitResult, fit, resolve_device, saved_values, state_dict_of
from trainer.solvers import least_squares
from trainer.stats import INFERENCE, inference


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
    config.validate()
    encoding = encoding or EncodeConfig()
    encoding.validate()
    if val_fraction:  # None or 0: no validation split
        check_setting("val_fraction", val_fraction)
    check_setting("confidence", confidence)
    if cov not in CHOICES["cov"]:
        raise TrainingError(f"--cov {cov!r}: use one of {', '.join(CHOICES['cov'])}")
    _check_out(out, Path(data_path), force)  # fail before the (possibly long) fit, not after it
    checkpoint = None
    if resume is not None:  # (the CLI read checkpoint_every with the rest of run.json)
        checkpoint = Checkpoint.load(Path(resume) / CHECKPOINT, checkpoint_every or 1)
    elif checkpoint_every:
        checkpoint = _new_checkpoint(out, force, checkpoint_every, _run_record(
            data_path, out=out, config=config, encoding=encoding, targets=targets,
            features=features, exclude=exclude, sample_weight=sample_weight,
            init_from=init_from, val_fraction=val_fraction, cov=cov, confidence=confidence,
            plot=plot, checkpoint_every=checkpoint_every))
    with _checkpoint_scope(checkpoint, resumed=resume is not None):
        data = load_training_data(data_path, targets=targets, features=features, exclude=exclude,
                                  categorical=encoding.categorical, weight=sample_weight,
                                  progress=read_progress)
        train_idx, val_idx = split_rows(data.n_rows, val_fraction, config.seed)
        data = encode(data, train_idx, encoding, bias=config.bias)
        X, Y = data.X[train_idx], data.Y[train_idx]
        weights = None if data.weights is None else data.weights[train_idx]
        if weights is not None and not weights.sum() > 0:
            raise TrainingError("every training row has sample weight 0")
        validation = (data.X[val_idx], data.Y[val_idx]) if len(val_idx) else None
        start = _warm_start(init_from, data.feature_names, data.target_names, config) \
            if init_from is not None else None
        result = fit(X, Y, config, weights=weights, validation=validation, warm_start=start,
                     checkpoint=checkpoint, log=log, progress=progress)

        stats = inference(X, Y, result.coef_, result.intercept_, bias=config.bias,
                          names=data.feature_names, cov_type=cov, confidence=confidence,
                          penalized=_not_least_squares(config), weights=weights)
        pictures = None
        if plot:
            from trainer.plots import PlotData

            pictures = PlotData(result.history, result.history_columns, X, Y, data.X[val_idx],
                                data.Y[val_idx], result.coef_, result.intercept_, config.bias,
                                data.feature_names, data.target_names, result.best_epoch)
        manifest = _write_folder(
            out, force=force, result=result, config=config, features=data.feature_names,
            targets=data.target_names, columns=data.columns, encoding=encoding,
            warnings=data.warnings, metrics=_metrics(data, result, config, train_idx, val_idx),
            stats=stats, data={
                "path": str(Path(data.path).resolve()), "sha256": sha256_file(data.path),
                "rows": data.n_rows, "train_rows": int(len(train_idx)),
                "validation_rows": int(len(val_idx)),
                "validation_indices": val_idx.tolist() if 0 < len(val_idx) <= 10000 else None,
                "sample_weight": sample_weight}, plots=pictures)
    return out, manifest


def _write_inference(folder: Path, manifest: dict[str, Any], stats: Any) -> None:
    """``inference.npz``: the covariance of the estimates and σ̂, for intervals at export."""
    if stats.cov is not None:
        np.savez(folder / INFERENCE, cov=stats.cov, sigma=stats.sigma,
                 df_resid=np.array(stats.per_target[0]["df_resid"]))
        record_artifact(manifest, folder, INFERENCE)


CHECKPOINT, RUN = "checkpoint.pt", "run.json"


@contextlib.contextmanager
def _checkpoint_scope(checkpoint: Checkpoint | None, *, resumed: bool) -> Iterator[None]:
    """A checkpoint folder outlives its run only when a signal stopped the run after a save
    (or it was resumed from): a finished run or a failed one leaves nothing behind."""
    def remove() -> None:  # linreg's own files only, then the folder if nothing else is left
        if checkpoint is None:
            return
        from serve.core.ownership import own_temporary

        folder = checkpoint.path.parent
        for entry in list(folder.iterdir()) if folder.is_dir() else []:
            if entry.name in (CHECKPOINT, RUN) or own_temporary(entry.name, {CHECKPOINT, RUN}):
                entry.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
    try:
        yield
    except KeyboardInterrupt:
        if checkpoint is not None and not resumed and checkpoint.saved_epoch is None:
            remove()
        raise
    except BaseException:
        if not resumed:
            remove()
        raise
    remove()


def checkpoint_dir(out: str | Path) -> Path:
    """Where ``--checkpoint-every`` keeps a run's checkpoint: beside its artifact folder."""
    out = Path(out)
    return out.with_name(out.name + ".checkpoint")


RUN_MARK = {"linreg": "checkpoint"}  # run.json's marker: --force replaces only such folders


def _is_own_run(path: Path) -> bool:
    try:
        run = json.loads(path.read_text()) if not path.is_symlink() else None
    except (OSError, ValueError):
        return False
    return isinstance(run, dict) and run.get("linreg") == RUN_MARK["linreg"]


def _new_checkpoint(out: Path, force: bool, every: int, run: dict[str, Any]) -> Checkpoint:
    from serve.core.atomic import atomic_file
    from serve.core.ownership import check_owned

    folder = checkpoint_dir(out)
    if folder.exists() or folder.is_symlink():
        if folder.is_symlink() or not folder.is_dir():
            raise OutputError(f"{folder}: exists and is not a checkpoint folder; choose another "
                              "--out")
        if (folder / CHECKPOINT).exists() and not force:
            raise OutputExistsError(f"{folder}: holds the checkpoint of an interrupted run; "
                                    f"resume it with linreg-train --resume {folder}, or pass "
                                    "--force to start over")
        check_owned(folder, names={CHECKPOINT, RUN}, marker=RUN, is_marked=_is_own_run,
                    kind="a linreg checkpoint folder", hint="choose another --out")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with atomic_file(folder / RUN) as tmp:
        tmp.write_text(json.dumps({**RUN_MARK, **run}, indent=1))
    return Checkpoint(folder / CHECKPOINT, every)


def _run_record(data_path: str | Path, *, out: Path, config: TrainConfig,
                encoding: EncodeConfig, targets: Sequence[str], features: Sequence[str],
                exclude: Sequence[str], sample_weight: str | None,
                init_from: str | Path | None, val_fraction: float | None, cov: str,
                confidence: float, plot: bool, checkpoint_every: int,
                val_data: str | Path | None = None, batch_rows: int | None = None,
                max_memory: int | None = None, nproc: int = 1) -> dict[str, Any]:
    """run.json: what ``--resume`` needs to run the same training again (streamed runs add
    how they streamed: ``batch_rows``, ``max_memory``, ``val_data``, ``nproc``)."""
    return {"data_path": str(Path(data_path).resolve()) if Path(data_path).exists()
            else str(data_path), "out": str(out), "config": asdict(config),
            "encoding": asdict(encoding), "targets": list(targets), "features": list(features),
            "exclude": list(exclude), "sample_weight": sample_weight,
            "init_from": None if init_from is None else str(init_from),
            "val_fraction": val_fraction, "cov": cov, "confidence": confidence, "plot": plot,
            "checkpoint_every": checkpoint_every,
            "val_data": None if val_data is None else str(val_data), "batch_rows": batch_rows,
            "max_memory": max_memory, "nproc": nproc}


# run.json's fields and their kinds (besides "config" and "encoding", checked as dataclasses).
_RUN_FIELDS: dict[str, str] = {
    "data_path": "str", "out": "str | None", "targets": "tuple[str, ...]",
    "features": "tuple[str, ...]", "exclude": "tuple[str, ...]", "sample_weight": "str | None",
    "init_from": "str | None", "val_fraction": "float | None", "cov": "str",
    "confidence": "float", "plot": "bool", "checkpoint_every": "int",
}
# ... and how a streamed run streamed (absent from an older run.json: it ran in memory).
_STREAM_FIELDS: dict[str, tuple[str, Any]] = {
    "val_data": ("str | None", None), "batch_rows": ("int | None", None),
    "max_memory": ("int | None", None), "nproc": ("int", 1),
}


def _kind_ok(kind: str, value: Any) -> bool:
    """Does ``value`` (read from JSON) have the plain ``kind`` written as a type annotation?"""
    for one in kind.split(" | "):
        if one == "None" and value is None or one == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if one == "int" and isinstance(value, int) or one == "str" and isinstance(value, str) \
                or one == "float" and isinstance(value, (int, float)):
            return True
        if one == "tuple[str, ...]" and isinstance(value, list) and \
                all(isinstance(v, str) for v in value):
            return True
    return False


def resume_settings(folder: str | Path) -> dict[str, Any]:
    """The keyword arguments of :func:`train` for the run checkpointed in ``folder``; a
    ``run.json`` that was edited by hand is checked field by field, as ``model.json`` is."""
    from dataclasses import fields

    folder = Path(folder)

    def bad(why: str) -> TrainingError:
        return TrainingError(f"--resume {folder}: not a checkpoint folder of an interrupted "
                             f"run ({why})")

    try:
        run = json.loads((folder / RUN).read_text())
        if not (folder / CHECKPOINT).is_file():
            raise FileNotFoundError(folder / CHECKPOINT)
    except (OSError, ValueError) as e:
        raise bad(first_line(e)) from None
    if not isinstance(run, dict):
        raise bad(f"{RUN} must hold an object")
    settings: dict[str, Any] = {}
    for key, kind in _RUN_FIELDS.items():
        if key not in run:
            raise bad(f"{RUN} has no {key!r}")
        if not _kind_ok(kind, run[key]):
            raise bad(f"{RUN}: {key!r} must be {kind.replace('tuple[str, ...]', 'a list of names')}"
                      f", not {run[key]!r}"[:200])
        settings[key] = run[key]
    for key, (kind, default) in _STREAM_FIELDS.items():
        settings[key] = run.get(key, default)
        if not _kind_ok(kind, settings[key]):
            raise bad(f"{RUN}: {key!r} must be {kind}, not {settings[key]!r}"[:200])
    for key in ("checkpoint_every", "batch_rows", "max_memory", "nproc"):
        if settings[key] is not None and settings[key] < 1:
            raise bad(f"{RUN}: {key!r} must be 1 or more")
    for key, cls in (("config", TrainConfig), ("encoding", EncodeConfig)):
        values = run.get(key)
        if not isinstance(values, dict):
            raise bad(f"{RUN}: {key!r} must be an object")
        kinds = {f.name: str(f.type) for f in fields(cls)}
        for name, value in values.items():
            if name not in kinds:
                raise bad(f"{RUN}: {key}.{name} is not a setting")
            if not _kind_ok(kinds[name], value):
                raise bad(f"{RUN}: {key}.{name} must be {kinds[name]}, not {value!r}"[:200])
        if key == "encoding" and "categorical" in values:
            values = {**values, "categorical": tuple(values["categorical"])}
        settings[key] = cls(**values)
        try:
            settings[key].validate()
        except TrainingError as e:
            raise bad(f"{RUN}: {e}") from None
    return settings


def _warm_start(folder: str | Path, features: list[str], targets: list[str],
                config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """--init-from: a trained model's raw-unit parameters, checked against this run."""
    from trainer.export import load_trained

    model, manifest = load_trained(folder)
    mine = (features, targets, config.bias, config.dtype)
    theirs = (manifest["features"], manifest["targets"], manifest["model"]["bias"],
              manifest["model"]["dtype"])
    for what, a, b in zip(("features", "targets", "bias", "dtype"), mine, theirs):
        if a != b:
            raise TrainingError(f"--init-from {folder}: its {what} {b} differ from this run's "
                                f"{a}; warm start from a model of the same shape")
    W = model.linear.weight.detach().double().numpy()
    b = model.linear.bias.detach().double().numpy() if model.linear.bias is not None \
        else np.zeros(W.shape[0])
    return W, b


def _not_least_squares(config: TrainConfig) -> str | None:
    """Why the estimates are not (weighted) least squares, for the statistics; or None."""
    if config.penalty != "none":
        return f"--penalty {config.penalty} --alpha {config.alpha:g}"
    if config.weight_decay:
        return f"--weight-decay {config.weight_decay:g}"
    if config.loss != "mse":
        return f"--loss {config.loss}"
    return None


def _check_out(out: Path, data_path: Path, force: bool) -> None:
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
        metrics["exact_least_squares"] = optimum
    return metrics


def _write_folder(out: Path, *, force: bool, result: FitResult, config: TrainConfig,
                  features: list[str], targets: list[str], columns: Any,
                  encoding: EncodeConfig, warnings: list[str], metrics: dict[str, Any],
                  stats: Any, data: dict[str, Any], training: dict[str, Any] | None = None,
                  plots: Any = None) -> dict[str, Any]:
    """The artifact folder of a fit, however it was trained (in memory, streamed, on many
    ranks): model.pt, history.csv, inference.npz, plots and model.json, built in a temporary
    folder that replaces ``out`` only when all is written. Returns the manifest."""
    with atomic_dir(out, force=force, check_replaceable=check_replaceable) as tmp:
        torch.save(result.state_dict, tmp / "model.pt")
        _write_history(tmp / "history.csv", result)
        manifest = _manifest_of(result, config, out.name, features, targets, columns, encoding,
                                warnings, metrics, data, training or {})
        manifest["statistics"] = stats.per_target
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
        "training": {**result.config, "device": result.device, "epochs_run": result.epochs_run,
                     "best_epoch": result.best_epoch, "stopped": result.stopped,
                     "seconds": round(result.seconds, 4), "torch_version": torch.__version__,
                     **training},
        "metrics": metrics,
        "history": "history.csv",
        "artifacts": {},
        "exports": {},
    }


# ------------------------------------------------------------------ streamed and distributed

MEMORY_OVERHEAD = 3  # a chunk in memory: float64 values, their X/Y split, the torch copy


class _Background:
    """``fn(*args)`` run in a daemon thread from now on (hashing releases the GIL, so it
    overlaps the fit); :meth:`result` waits for it."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        import threading

        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn(*args)
            except BaseException as e:  # raised to the caller of result()
                self._error = e
        self._thread = threading.Thread(target=run, daemon=True, name="linreg-background")
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def dataset_sha256(files: Sequence[Path]) -> str:
    """One file's sha256; for several, the sha256 of their names and sha256s, in order."""
    if len(files) == 1:
        return sha256_file(files[0])
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def train_streamed(data_path: str | Path, *, out: str | Path | None = None,
                   config: TrainConfig, targets: Sequence[str] = (),
                   features: Sequence[str] = (), exclude: Sequence[str] = (),
                   val_fraction: float | None = None, val_data: str | Path | None = None,
                   batch_rows: int = 65536, max_memory: int = 4 << 30, force: bool = False,
                   cov: str = "nonrobust", confidence: float = 0.95,
                   sample_weight: str | None = None, encoding: EncodeConfig | None = None,
                   init_from: str | Path | None = None, plot: bool = False,
                   checkpoint_every: int | None = None, resume: str | Path | None = None,
                   log: Callable[[str], None] | None = None,
                   progress: Callable[[float], None] | None = None,
                   group: Any = None) -> tuple[Path, dict[str, Any] | None]:
    """Train from ``data_path`` (a file, folder or glob; :mod:`trainer.dataset`) in chunks of
    ``batch_rows`` rows (:mod:`trainer.stream`), on this rank's share of a distributed run
    (``group``, :func:`trainer.distributed.join`). Only rank 0 writes the artifact folder, when
    every rank is done; other ranks return ``(out, None)``. ``checkpoint_every`` and ``resume``
    are as :func:`train`'s (rank 0 writes the checkpoint; every rank resumes from it)."""
    from serve.core.columns import is_plain
    from trainer.dataset import Dataset
    from trainer.distributed import Group
    from trainer.stream import sgd

    group = group or Group(device=resolve_device(config.device))
    out = Path(out) if out is not None else Path("models") / Path(str(data_path).rstrip("/*")
                                                                  ).stem
    encoding = encoding or EncodeConfig()
    _check_streamed(config, encoding, val_fraction=val_fraction, val_data=val_data, cov=cov,
                    confidence=confidence)
    if group.rank == 0:
        _check_out(out, Path(data_path) if Path(data_path).exists() else Path.cwd() / "_", force)
    checkpoint = None
    if resume is not None:  # every rank reads the same state
        checkpoint = Checkpoint.load(Path(resume) / CHECKPOINT, checkpoint_every or 1)
    elif checkpoint_every and group.rank == 0:
        checkpoint = _new_checkpoint(out, force, checkpoint_every, _run_record(
            data_path, out=out, config=config, encoding=encoding, targets=targets,
            features=features, exclude=exclude, sample_weight=sample_weight,
            init_from=init_from, val_fraction=val_fraction, cov=cov, confidence=confidence,
            plot=plot, checkpoint_every=checkpoint_every, val_data=val_data,
            batch_rows=batch_rows, max_memory=max_memory, nproc=group.world))
    elif checkpoint_every:  # the other ranks take part in each save, rank 0 writes it
        checkpoint = Checkpoint(checkpoint_dir(out) / CHECKPOINT, checkpoint_every)
    with _checkpoint_scope(checkpoint if group.rank == 0 else None, resumed=resume is not None):
        # 1. The dataset, its columns, this rank's share (rank 0 hashes the files meanwhile).
        ds = Dataset.open(data_path)
        digest = _Background(dataset_sha256, ds.files) if group.rank == 0 else None
        targets, raw_features = pick_columns(ds.shown, ds.columns, targets=targets,
                                             features=features, exclude=exclude,
                                             weight=sample_weight)
        if unknown := sorted(set(encoding.categorical) - set(raw_features)):
            raise DataError(f"{ds.shown}: unknown categorical column {unknown[0]!r}; the "
                            f"features are {', '.join(raw_features)}")
        share = _Share(ds, raw_features, targets, group, val_data=val_data,
                       val_fraction=val_fraction, weight=sample_weight, batch_rows=batch_rows,
                       max_memory=max_memory, seed=config.seed)
        # 2. The encoding and the scan (the R factors, counts, means, spreads).
        specs, rows, summary = share.scan(encoding, bias=config.bias)
        _check_scan(summary, len(rows.features) + int(config.bias), val_fraction=val_fraction,
                    weighted=sample_weight is not None)
        features = rows.features
        # 3. The fit: exact from R, or SGD through the one loop.
        start = time.perf_counter()
        exact = _exact_from_r(summary, config, len(features), weighted=sample_weight is not None)
        if config.solver == "lstsq":
            result, sse = _exact_result(exact, summary, config, len(targets), str(group.device))
        else:
            start_at = _warm_start(init_from, features, targets, config) \
                if init_from is not None else None
            result, sse = sgd(rows, summary, config, group, log=log, progress=progress,
                              start=start_at, checkpoint=checkpoint)
        result.seconds = time.perf_counter() - start
        # 4. Metrics and statistics at the saved parameters, from R (HC0-HC3: one more pass).
        metrics = _metrics_from_r(summary, result, sse, exact, config)
        stats = _streamed_statistics(rows, summary, result, sse, config, group, cov=cov,
                                     confidence=confidence)
        passes = ds.reads  # over this rank's share of the files (the encoding's, the scan, ...)
        if group.rank != 0:
            return out, None
        # 5. Rank 0 writes the artifact folder, atomically (--plot: the history, and the data
        # plots drawn from a sample of rank 0's first rows).
        pictures = _streamed_plots(rows, result, config) if plot else None
        columns = specs if specs is not None and not is_plain(specs) else None
        manifest = _write_folder(
            out, force=force, result=result, config=config, features=features, targets=targets,
            columns=columns, encoding=encoding, warnings=[], metrics=metrics, stats=stats, data={
                "path": str(Path(ds.shown).resolve()) if Path(ds.shown).exists() else ds.shown,
                "files": [str(f.resolve()) for f in ds.files], "sha256": digest.result(),
                "rows": int(summary.x.n) + (0 if val_data else summary.val_rows),
                "train_rows": int(summary.x.n), "validation_rows": summary.val_rows,
                "validation": (f"--val-data {val_data}" if val_data else
                               "a seeded hash of (file, row)" if summary.val_rows else None),
                "validation_indices": None, "sample_weight": sample_weight},
            training={"streamed": {"batch_rows": batch_rows, "kept_in_memory": rows.cache,
                                   "passes": passes, "world_size": group.world,
                                   "backend": group.backend,
                                   "rows_per_rank": summary.train_rows}}, plots=pictures)
        return out, manifest


def _check_streamed(config: TrainConfig, encoding: EncodeConfig, *, val_fraction: float | None,
                    val_data: str | Path | None, cov: str, confidence: float) -> None:
    """The settings of a streamed fit, checked before anything is read."""
    config.validate()
    encoding.validate()
    if val_fraction:
        check_setting("val_fraction", val_fraction)
    check_setting("confidence", confidence)
    if cov not in CHOICES["cov"]:
        raise TrainingError(f"--cov {cov!r}: use one of {', '.join(CHOICES['cov'])}")
    if val_fraction and val_data is not None:
        raise TrainingError("--val-fraction and --val-data both pick validation rows; give one")
    if config.early_stopping and not val_fraction and val_data is None:
        raise TrainingError("--early-stopping watches the validation cost: add --val-fraction "
                            "(e.g. 0.2) or --val-data")


class _Share:
    """This rank's share of a dataset (and of ``--val-data``'s), read as numbers or encoded."""

    def __init__(self, ds: Any, features: list[str], targets: list[str], group: Any, *,
                 val_data: str | Path | None, val_fraction: float | None, weight: str | None,
                 batch_rows: int, max_memory: int, seed: int) -> None:
        from trainer.dataset import Dataset

        self.ds, self.features, self.targets, self.group = ds, features, targets, group
        self.val_fraction, self.weight, self.seed = val_fraction, weight, seed
        self.batch_rows, self.max_memory = batch_rows, max_memory
        self.parts = ds.shard(group.rank, group.world)
        self.share_rows = sum(p.rows or 0 for p in self.parts) if ds.format == "parquet" else \
            ds.estimated_rows() // group.world
        self.vds = None
        if val_data is not None:
            self.vds = Dataset.open(val_data)
            pick_columns(self.vds.shown, self.vds.columns, targets=targets, features=features)

    def rows(self, specs: list | None) -> Any:
        """This rank's rows: numbers as they are, or raw columns encoded by ``specs``."""
        from trainer.encode import encoded_names
        from trainer.stream import Rows

        names = self.features if specs is None else encoded_names(specs)
        cache = self.share_rows * (len(names) + len(self.targets)) * 8 * MEMORY_OVERHEAD \
            <= self.max_memory
        kw = dict(batch_rows=self.batch_rows, cache=cache, seed=self.seed, specs=specs)
        group = self.group
        val = None if self.vds is None else Rows(
            self.vds, self.vds.shard(group.rank, group.world), names, self.targets,
            val_fraction=None, **kw)
        return Rows(self.ds, self.parts, names, self.targets, val_fraction=self.val_fraction,
                    val=val, weight=self.weight, **kw)

    def scan(self, encoding: EncodeConfig, *, bias: bool) -> tuple[list | None, Any, Any]:
        """The specs (None: numbers as they are), the rows and their scan: the encoding is
        learned in one pass first when a flag asks for it or a feature cell turns out not to be
        a number (categorical columns, blanks; as in memory)."""
        from trainer.stream import NeedsEncoding, learn_encoding, scan

        specs = None
        if not encoding.plain or self.ds.has_text(self.features):
            specs = learn_encoding(self.rows(None), self.features, encoding, self.group,
                                   bias=bias)
        rows = self.rows(specs)
        try:
            return specs, rows, scan(rows, self.group, bias=bias)
        except NeedsEncoding:
            specs = learn_encoding(rows, self.features, encoding, self.group, bias=bias)
            rows = self.rows(specs)
            return specs, rows, scan(rows, self.group, bias=bias)


def _check_scan(summary: Any, n_params: int, *, val_fraction: float | None,
                weighted: bool) -> None:
    """What the scan found that makes a fit impossible: too few rows, no validation row, no
    weight."""
    if summary.x.n < n_params:
        raise TrainingError(f"{int(summary.x.n)} training rows but the model has {n_params} "
                            f"parameters per target; need at least {n_params} rows (or fewer "
                            "features)")
    if val_fraction and summary.val_rows == 0:
        raise DataError(f"--val-fraction {val_fraction} picks no validation row among "
                        f"{int(summary.x.n):,}; use a larger fraction")
    if weighted and not summary.weight > 0:
        raise TrainingError("every training row has sample weight 0")


def _exact_from_r(summary: Any, config: TrainConfig, n_features: int, *,
                  weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    """The exact optimum of ``config``'s objective from the scan's R: least squares, or the
    penalised objective (weights scaled to sum to n, as scikit-learn: R of √(w·n/Σw)·[X, 1|Y])."""
    from trainer.stream import least_squares_from_r, penalized_from_r, standardization

    if config.penalty == "none":
        return least_squares_from_r(summary.R, n_features, bias=config.bias)
    Rn = summary.R * np.sqrt(summary.x.n / summary.weight) if weighted else summary.R
    mean, scale = standardization(summary, replace(config, solver="lstsq"))
    return penalized_from_r(Rn, summary.x.n, n_features, bias=config.bias,
                            penalty=config.penalty, alpha=config.alpha,
                            l1_ratio=config.l1_ratio, mean=mean, scale=scale)


def _exact_result(exact: tuple[np.ndarray, np.ndarray], summary: Any, config: TrainConfig,
                  n_targets: int, device: str) -> tuple[FitResult, np.ndarray]:
    """An exact fit's result at its saved (dtype-rounded) values, its one-row history the
    (weighted) cost, and its train sums of squared errors per target."""
    from trainer.stream import sse_from_r

    state = state_dict_of(exact[0], exact[1] if config.bias else None, getattr(torch, config.dtype))
    coef, intercept = saved_values(state, n_targets)
    result = FitResult(coef, intercept, state, np.zeros((1, 1)), ["cost"], 0, "exact", device,
                       config=asdict(config))
    result.history[0, 0] = float(sse_from_r(summary.R, coef, intercept, bias=config.bias).sum()
                                 / (summary.weight * n_targets))
    return result, sse_from_r(summary.unweighted_r, coef, intercept, bias=config.bias)


def _metrics_from_r(summary: Any, result: FitResult, sse: np.ndarray,
                    exact: tuple[np.ndarray, np.ndarray], config: TrainConfig) -> dict:
    """Train and validation MSE and R² at the saved parameters (and, for SGD, the exact
    optimum's), from the R factors: no pass over the rows."""
    from trainer.stream import regression_metrics, sse_from_r

    metrics = {"train": regression_metrics(sse, summary.y)}
    if summary.val_rows:
        val_sse = sse_from_r(summary.R_val, result.coef_, result.intercept_, bias=config.bias)
        metrics["validation"] = regression_metrics(val_sse, summary.y_val)
    if config.solver == "sgd" and config.loss == "mse":  # (Huber has no closed form)
        optimum = regression_metrics(sse_from_r(summary.unweighted_r, *exact, bias=config.bias),
                                     summary.y)
        optimum["sgd_short_of_it"] = underfit(metrics["train"], optimum)
        metrics["exact_least_squares"] = optimum
    return metrics


def _streamed_statistics(rows: Any, summary: Any, result: FitResult, sse: np.ndarray,
                         config: TrainConfig, group: Any, *, cov: str, confidence: float) -> Any:
    """The statistics at the saved parameters: the design's R and the residual sums from the
    scan, and (robust covariances only) one more pass for the meat."""
    from trainer.stats import Sufficient, statistics
    from trainer.stream import design_r, meat_pass, sse_from_r

    p, bias = len(rows.features), config.bias

    def gather() -> Sufficient:
        suff = Sufficient(n=int(summary.x.n), R=design_r(summary.R, p, bias=bias), ssr=sse,
                          tss=summary.y.m2)
        if rows.weight is not None:  # weighted least squares: Σw·e² and Σw·(y − ȳ_w)²
            suff.ssr = sse_from_r(summary.R, result.coef_, result.intercept_, bias=bias)
            suff.tss, suff.log_weights = summary.y_w.m2, summary.log_weights
        if cov != "nonrobust":
            suff.meat = meat_pass(rows, result.coef_, result.intercept_, group, bias=bias,
                                  cov_type=cov, pinv=suff.pinv())
        return suff

    return statistics(gather, result.coef_, result.intercept_, bias=bias, names=rows.features,
                      cov_type=cov, confidence=confidence,
                      penalized=_not_least_squares(config), n_targets=len(rows.targets),
                      n_rows=int(summary.x.n))


def _streamed_plots(rows: Any, result: FitResult, config: TrainConfig) -> Any:
    """--plot of a streamed fit: the history, and the data plots from a sample of this rank's
    first rows."""
    from trainer.plots import PlotData

    p, t = len(rows.features), len(rows.targets)
    (X, Y), (Xv, Yv) = (_sample(chunks, PLOT_SAMPLE_ROWS, p, t)
                        for chunks in (rows.train(), rows.validation()))
    return PlotData(result.history, result.history_columns, X, Y, Xv, Yv, result.coef_,
                    result.intercept_, config.bias, rows.features, rows.targets,
                    result.best_epoch)


PLOT_SAMPLE_ROWS = 10_000  # the rows a streamed fit's data plots draw


def _sample(chunks: Any, limit: int, p: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` rows of a stream of (X, Y) chunks."""
    xs, ys, held = [], [], 0
    for X, Y in chunks:
        xs.append(X[:limit - held])
        ys.append(Y[:limit - held])
        held += len(xs[-1])
        if held >= limit:
            break
    return (np.concatenate(xs) if xs else np.empty((0, p)),
            np.concatenate(ys) if ys else np.empty((0, t)))
