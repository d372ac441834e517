"""The manifest, ``model.json``: what a model folder holds and how it was made.

Written by the trainer and the exporter, read by the runtime. Values are plain JSON. A manifest
is checked when it is read (a hand-edited or hostile one ends in one line naming the field), and
so is every artifact against the sha256 it records.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from serve.core.atomic import atomic_file
from serve.core.errors import ModelError
from serve.core.jsontext import JSONTextError, loads, text_problem
from serve.core.ownership import check_owned

SCHEMA_VERSION = 1
MANIFEST = "model.json"
MAX_MANIFEST_BYTES = 64 << 20
# Every file linreg-train and linreg-export write into a model folder.
ARTIFACT_NAMES = frozenset({MANIFEST, "model.pt", "history.csv", "theta.png", "loss.png",
                            "fit.png", "pred_vs_actual.png", "residuals.png", "model.onnx",
                            "model.torchscript.pt", "model.pt2", "inference.npz"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def names_problem(names: Any) -> str | None:
    """Why ``names`` (a model's feature or target names) cannot name its columns, or None:
    each must be a non-empty string of Unicode text, and none may repeat (a repeated name would
    feed one column into two slots)."""
    if not isinstance(names, list) or not names:
        return "must be a non-empty list of names"
    for n in names:
        if not isinstance(n, str) or not n:
            return f"holds {n!r}, not a name"
        problem = text_problem(n)
        if problem:
            return f"name {n!r} {problem}"
    if len(set(names)) != len(names):
        repeated = next(n for n in names if names.count(n) > 1)
        return f"repeats the name {repeated!r}"
    return None


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The checked manifest of a model folder, or a ModelError saying what is wrong with it."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ModelError(f"{path}: no manifest; is {folder} a model folder made by linreg-train?")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ModelError(f"{path}: {path.stat().st_size:,} bytes is too large for a manifest")
    try:
        manifest = loads(path.read_bytes())
    except JSONTextError as e:
        raise ModelError(f"{path}: {e}") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror})") from None
    check_manifest(manifest, path)
    return manifest


def check_manifest(m: Any, path: str | Path) -> None:
    """Raise a ModelError naming the first field of ``m`` that is missing or of the wrong kind.

    Only what linreg reads is checked; unknown extra fields are left alone (newer writers)."""
    def fail(field: str, what: str) -> None:
        raise ModelError(f"{path}: field {field!r} {what}; the file is not a manifest this "
                         "linreg can use (retrain, or restore it)")

    if not isinstance(m, dict):
        fail("(top level)", "must be an object")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ModelError(f"{path}: unsupported manifest (schema_version "
                         f"{m.get('schema_version')!r}, expected {SCHEMA_VERSION})")
    for key in ("features", "targets"):
        problem = names_problem(m.get(key))
        if problem:
            fail(key, problem)
    if set(m["features"]) & set(m["targets"]):
        fail("targets", "names a feature")
    model = m.get("model")
    if not isinstance(model, dict):
        fail("model", "must be an object")
    if model.get("n_features") != len(m["features"]) or model.get("n_targets") != len(m["targets"]):
        fail("model.n_features", "and model.n_targets must count the feature and target names")
    if not isinstance(model.get("bias"), bool):
        fail("model.bias", "must be true or false")
    if model.get("dtype") not in ("float32", "float64"):
        fail("model.dtype", "must be float32 or float64")
    for key in ("name", "created", "linreg_version"):
        if key in m and not isinstance(m[key], str):
            fail(key, "must be a string")
    for key in ("training", "metrics", "exports", "artifacts", "data"):
        if m.get(key) is not None and not isinstance(m[key], dict):
            fail(key, "must be an object")
    for name, info in (m.get("artifacts") or {}).items():
        if name not in ARTIFACT_NAMES or not isinstance(info, dict) \
                or not isinstance(info.get("sha256"), str) or not _SHA256.match(info["sha256"]):
            fail(f"artifacts.{name}", "must be a linreg file name with its sha256")
    norm = m.get("normalization")
    if norm is not None:
        n = len(m["features"])
        if not isinstance(norm, dict) or not all(_numbers(norm.get(k), n) for k in ("mean",
                                                                                    "scale")):
            fail("normalization", f"must hold 'mean' and 'scale', {n} finite numbers each")
    if m.get("columns") is not None:
        from serve.core.columns import specs_from_json

        specs = specs_from_json(m["columns"], f"{path}: field 'columns'")
        formula = m.get("formula")
        if formula is not None:  # the columns are the formula's inputs; its design names them
            if not isinstance(formula, dict) or [c.get("name") for c in formula.get(
                    "columns") or [] if isinstance(c, dict)] != m["features"]:
                fail("formula", "must hold the design's columns, named as the features")
        elif [n for s in specs for n in s.encoded_names()] != m["features"]:
            fail("columns", "must encode to the feature names, in order")
    data = m.get("data") or {}
    idx = data.get("validation_indices")
    if idx is not None:
        rows = data.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or not isinstance(idx, list) or \
                not all(type(i) is int and 0 <= i < rows for i in idx):
            fail("data.validation_indices", "must be row numbers below data.rows")
    for key in ("path", "sha256"):
        if data.get(key) is not None and not isinstance(data[key], str):
            fail(f"data.{key}", "must be a string")


def _numbers(values: Any, n: int) -> bool:
    return isinstance(values, list) and len(values) == n and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in values)


def verify_artifact(manifest: dict[str, Any], folder: str | Path, name: str,
                    data: bytes | None = None) -> None:
    """Raise a ModelError when ``name`` differs from the sha256 the manifest recorded for it
    (files the manifest does not list are not checked). ``data``: the bytes already read."""
    info = (manifest.get("artifacts") or {}).get(name)
    if info is None:
        return
    path = Path(folder) / name
    digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
    if digest != info["sha256"]:
        raise ModelError(f"{path}: its sha256 differs from the one in model.json; the file was "
                         "changed or damaged after linreg wrote it (export or train again)")


def is_manifest(path: Path) -> bool:
    """Is ``path`` a ``model.json`` that reads and checks as a linreg manifest? Never raises."""
    if path.name != MANIFEST or path.is_symlink():
        return False
    try:
        read_manifest(path.parent)
    except (ModelError, OSError):
        return False
    return True


def check_replaceable(folder: Path, *, names: frozenset[str] = ARTIFACT_NAMES,
                      hint: str = "choose another --out") -> None:
    """Raise unless ``--force`` may replace ``folder``: it is empty, or a model folder whose
    ``model.json`` is a linreg manifest and which holds only ``names`` (the files linreg writes
    there). Anything else (notes, data, sub-folders) is never deleted."""
    check_owned(folder, names=names, marker=MANIFEST, is_marked=is_manifest,
                kind="a linreg model folder", hint=hint)


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``model.json`` atomically (temporary file, then rename)."""
    path = Path(folder) / MANIFEST
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def record_artifact(manifest: dict[str, Any], folder: str | Path, name: str) -> None:
    """Add or refresh ``artifacts[name]`` with the file's sha256 and size."""
    path = Path(folder) / name
    manifest.setdefault("artifacts", {})[name] = {"sha256": sha256_file(path),
                                                 "bytes": path.stat().st_size}
