"""``linreg-train ... --mlflow``: the saved run, logged to MLflow tracking.

After the artifact folder is written (the fit is never lost to a logging error), one run is
logged: every setting as a parameter; per epoch the cost, the validation cost and the learning
rate (``history.csv``); the final metrics (MSE and R² per target, train and validation, and the
statistics: σ̂, log-likelihood, AIC, BIC, adjusted R²); the artifact folder; tags (the data's
sha256, linreg's version). ``--mlflow-register NAME`` also logs the MLflow Model
(:mod:`trainer.mlflow_export`) and registers it. The tracking URI is MLflow's own setting
(``--mlflow-uri``, else ``MLFLOW_TRACKING_URI``), else a local SQLite store, ``mlruns.db``:
no server needed. The run's id goes into model.json (``mlflow``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve.core.errors import LinregError, first_line
from serve.core.manifest import write_manifest

DEFAULT_URI = "sqlite:///mlruns.db"
MAX_PARAM = 6000  # MLflow's longest parameter value


class TrackingError(LinregError):
    """The run could not be logged (the model itself is saved)."""


@dataclass(frozen=True)
class Tracking:
    """Where and how to log: ``uri`` None is MLFLOW_TRACKING_URI, else :data:`DEFAULT_URI`."""

    uri: str | None = None
    experiment: str = "linreg"
    register: str | None = None

    @property
    def resolved_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def log_run(folder: Path, manifest: dict[str, Any], tracking: Tracking) -> dict[str, Any]:
    """Log the run saved in ``folder``; its record (run id, experiment, URI, registered
    version), also written into model.json. Any failure is a :class:`TrackingError`."""
    # A server that is down must fail in seconds, not after MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    uri = tracking.resolved_uri
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError("--mlflow needs MLflow: pip install 'linreg[mlflow]'") from None
    run_id = None
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        # 1. The experiment and the run, whose id goes into model.json before it is logged.
        exp = client.get_experiment_by_name(tracking.experiment)
        exp_id = exp.experiment_id if exp is not None else \
            client.create_experiment(tracking.experiment, artifact_location=_artifacts(uri))
        data = manifest.get("data") or {}
        tags = {"linreg.version": manifest.get("linreg_version", ""),
                "linreg.data.sha256": str(data.get("sha256", "")),
                "linreg.data.path": str(data.get("path", "")), "linreg.model": folder.name}
        run_id = client.create_run(exp_id, run_name=folder.name, tags=tags).info.run_id
        record = {"run_id": run_id, "experiment_id": exp_id,
                  "experiment": tracking.experiment, "tracking_uri": uri}
        manifest["mlflow"] = record
        write_manifest(folder, manifest)
        # 2. Settings, per-epoch and final metrics, in batches MLflow accepts.
        params = [Param(k, v) for k, v in _params(manifest).items()]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i:i + 100])
        metrics = [Metric(k, v, 0, step) for k, v, step in _metrics(folder, manifest)]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        client.log_batch(run_id, tags=[RunTag("linreg.run_id", run_id)])
        # 3. The artifact folder; with --mlflow-register, the MLflow Model, registered.
        if tracking.register:
            record["registered"] = _register(client, folder, run_id, tracking.register)
            write_manifest(folder, manifest)
        client.log_artifacts(run_id, str(folder))
        client.set_terminated(run_id)
    except LinregError:
        _forget(folder, manifest, client if run_id else None, run_id)
        raise
    except Exception as e:  # MLflow's, requests', SQLAlchemy's: one line, the model is kept
        _forget(folder, manifest, client if run_id else None, run_id)
        raise TrackingError(f"MLflow at {uri}: {first_line(e, 300)}") from None
    return record


def _artifacts(uri: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: ``mlruns/`` beside the
    database file (MLflow's own default is the working folder's, wherever the store is); the
    server's choice for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return str(Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns")


def _forget(folder: Path, manifest: dict[str, Any], client: Any, run_id: str | None) -> None:
    """A run that could not be logged: model.json does not name it; it is marked failed."""
    if manifest.pop("mlflow", None) is not None:
        write_manifest(folder, manifest)
    if client is not None:
        try:
            client.set_terminated(run_id, status="FAILED")
        except Exception:  # the server is gone: nothing more to tell it
            pass


def _register(client: Any, folder: Path, run_id: str, name: str) -> dict[str, Any]:
    """Log the MLflow Model of ``folder`` (exported to ONNX first if it is not) under the
    run's ``model`` artifacts and register it as a new version of ``name``."""
    from trainer.export import export
    from trainer.mlflow_export import write_mlflow_model

    if not (folder / "model.onnx").is_file():
        export(folder, formats=("onnx",))
    with tempfile.TemporaryDirectory() as tmp:
        write_mlflow_model(folder, Path(tmp) / "model")
        client.log_artifacts(run_id, str(Path(tmp) / "model"), "model")
    try:
        client.create_registered_model(name)
    except Exception as e:  # it exists already: a new version of it
        if "RESOURCE_ALREADY_EXISTS" not in str(e) and "already exists" not in str(e):
            raise
    run = client.get_run(run_id)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run_id)
    return {"name": name, "version": str(version.version)}


def _params(manifest: dict[str, Any]) -> dict[str, str]:
    """Every setting of the run (training, encoding, data's selection), as MLflow strings."""
    out: dict[str, str] = {}
    training = manifest.get("training") or {}
    skip = {"epochs_run", "best_epoch", "stopped", "seconds", "torch_version", "streamed",
            "cv", "huber_scale", "device"}
    for k, v in training.items():
        if k not in skip:
            out[k] = _text(v)
    for k, v in (manifest.get("encoding") or {}).items():
        if k != "na_values":
            out[f"encoding.{k}"] = _text(v)
    out["targets"] = _text(manifest.get("targets"))
    out["features"] = _text(manifest.get("features"))
    if manifest.get("formula"):
        out["formula"] = manifest["formula"]["formula"]
    if "streamed" in training:
        out["streamed.world_size"] = _text(training["streamed"].get("world_size"))
    return out


def _metrics(folder: Path, manifest: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(key, value, step): per epoch from history.csv (cost, val_cost, lr), then the final
    metrics and statistics at step 0."""
    out: list[tuple[str, float, int]] = []
    history = folder / "history.csv"
    if history.is_file():
        with history.open() as f:
            for row in csv.DictReader(f):
                step = int(float(row["epoch"]))
                for key in ("cost", "val_cost", "lr"):
                    if row.get(key) not in (None, ""):
                        out.append((key, float(row[key]), step))
    targets = manifest.get("targets") or []
    for split, m in (manifest.get("metrics") or {}).items():
        if split not in ("train", "validation"):
            continue
        for j, t in enumerate(targets):
            for key in ("mse", "r2"):
                values = m.get(key) or []
                if j < len(values) and values[j] is not None:
                    out.append((f"{split}_{key}" + (f".{t}" if len(targets) > 1 else ""),
                                float(values[j]), 0))
    for j, entry in enumerate(manifest.get("statistics") or []):
        suffix = f".{targets[j]}" if len(targets) > 1 else ""
        for key in ("sigma", "log_likelihood", "aic", "bic", "r2", "adj_r2", "f_stat"):
            value = entry.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out.append((key + suffix, float(value), 0))
    return out


def _text(value: Any) -> str:
    """A parameter's value as MLflow keeps it: text (lists and dicts as JSON), bounded."""
    if isinstance(value, str):
        return value[:MAX_PARAM]
    return (json.dumps(value) if isinstance(value, (list, tuple, dict)) else repr(value)
            )[:MAX_PARAM]
