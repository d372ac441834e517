"""Checkpoints and resumed runs: the checkpoint folder beside the model (``run.json`` records
the run's settings and data; ``--force`` replaces only folders linreg wrote), and what
``--resume`` reads back from it (the settings, the warm start)."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from serve.core.errors import OutputError, OutputExistsError, first_line
from trainer.checkpoint import Checkpoint
from trainer.config import CHOICES, TrainConfig, TrainingError, check_setting
from trainer.encode import EncodeConfig

CHECKPOINT, RUN = "checkpoint.pt", "run.json"


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


@contextlib.contextmanager
def checkpoint_scope(checkpoint: Checkpoint | None, *, resumed: bool) -> Iterator[None]:
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


def new_checkpoint(out: Path, force: bool, every: int, run: dict[str, Any]) -> Checkpoint:
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


def run_record(data_path: str | Path, *, out: Path, config: TrainConfig,
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


def check_run(config: TrainConfig, encoding: EncodeConfig, *, val_fraction: float | None,
              cov: str, confidence: float, val_data: str | Path | None = None) -> None:
    """A run's settings, checked before anything is read (in memory and streamed alike)."""
    config.validate()
    encoding.validate()
    if val_fraction:  # None or 0: no validation split
        check_setting("val_fraction", val_fraction)
    check_setting("confidence", confidence)
    if cov not in CHOICES["cov"]:
        raise TrainingError(f"--cov {cov!r}: use one of {', '.join(CHOICES['cov'])}")
    if val_fraction and val_data is not None:
        raise TrainingError("--val-fraction and --val-data both pick validation rows; give one")


def open_checkpoint(out: Path, *, resume: str | Path | None, every: int | None, force: bool,
                    record: Callable[[], dict[str, Any]], rank: int = 0) -> Checkpoint | None:
    """The run's checkpoint, or None: a resumed run's (every rank reads the same state; the
    CLI read ``every`` with the rest of run.json), or a new folder with ``record()`` as its
    run.json (made by rank 0; the other ranks take part in each save, rank 0 writes it)."""
    if resume is not None:
        return Checkpoint.load(Path(resume) / CHECKPOINT, every or 1)
    if not every:
        return None
    if rank == 0:
        return new_checkpoint(out, force, every, record())
    return Checkpoint(checkpoint_dir(out) / CHECKPOINT, every)


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
        if one == "tuple[float, ...]" and isinstance(value, list) and \
                all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
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
        # JSON lists back to the tuples they were
        values = {**values, **{k: tuple(values[k]) for k in ("categorical", "reference",
                                                            "na_values", "alphas")
                               if k in values}}
        settings[key] = cls(**values)
        try:
            settings[key].validate()
        except TrainingError as e:
            raise bad(f"{RUN}: {e}") from None
    return settings


def warm_start(folder: str | Path, features: list[str], targets: list[str],
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
