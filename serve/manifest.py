"""The manifest, ``model.json``: what a model folder holds and how it was made.

Written by the trainer and the exporter, read by the runtime. Values are plain JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from serve.atomic import atomic_file
from serve.errors import ModelError

SCHEMA_VERSION = 1
MANIFEST = "model.json"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a model folder, or a ModelError saying what is wrong with it."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ModelError(f"{path}: no manifest; is {folder} a model folder made by linreg-train?")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        raise ModelError(f"{path}: unsupported manifest (schema_version "
                         f"{manifest.get('schema_version') if isinstance(manifest, dict) else None}"
                         f", expected {SCHEMA_VERSION})")
    return manifest


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
