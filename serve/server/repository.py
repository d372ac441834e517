"""The models a server holds: one model, or a repository of them, with versions, loaded,
unloaded and reloaded while requests run.

    repo = Repository.open("models/")          # a folder of model folders
    version = repo.get("homes")                # the highest ready version, or repo.get("homes", "2")
    version.predictor.predict(rows)

What ``PATH`` may be (``linreg-serve PATH``):

- a model folder (``model.onnx`` inside) or a ``.onnx`` file: one model, version ``1``;
- a versioned model folder, Triton's layout (``1/model.onnx``, ``2/model.onnx``, ...);
- a **repository**: a folder of those, each model served under its folder's name. Hidden
  entries (``.NAME...``: linreg's own temporary folders) and training checkpoints are skipped.

Every version is loaded and addressable; a request without a version gets the highest ready one.
A model that cannot be loaded is listed as unavailable with its reason and harms no other.

Swaps are atomic: a new version is loaded completely beside the old one, then replaces it in
one assignment under the lock; a request holds the :class:`Version` it started with, so it never
sees a half-loaded model. :meth:`Repository.poll` compares what is on disk with what is loaded
(file identity, size and mtime) and loads what was added or changed; a model or version that
disappears is dropped only when two polls in a row miss it, so a folder replaced by rename (gone
for an instant) is never seen as removed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.core.errors import LinregError, ModelError, NotReady, UnknownModel
from serve.core.jsontext import text_problem
from serve.core.manifest import MANIFEST
from serve.runtime.predictor import Predictor
from serve.runtime.triton import version_folders

log = logging.getLogger("linreg.serve")

READY, UNAVAILABLE = "READY", "UNAVAILABLE"  # the states Triton's repository index reports
UNLOADED = "unloaded"  # the reason of a model unloaded through the API


@dataclass
class Version:
    """One loaded version: its predictor and what it was loaded from. Never mutated after it
    is published, so a request may keep using it while a newer one replaces it."""

    name: str
    version: str
    path: Path
    predictor: Predictor
    stamp: tuple
    extras: dict[str, Any] = field(default_factory=dict)  # per version state (the batcher)


@dataclass
class _Model:
    """What the repository knows of one model name."""

    versions: dict[str, Version] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # version ("" for the model): reason
    failed_stamps: dict[str, tuple] = field(default_factory=dict)  # do not retry an unchanged failure
    unloaded: bool = False
    missing: set[str] = field(default_factory=set)  # versions one poll did not find


def model_name(path: str | os.PathLike) -> str:
    """A model's name on the wire: its folder's name, or the .onnx file's stem."""
    p = Path(path).resolve()
    return p.name if p.is_dir() else p.name.removesuffix(".onnx")


def _is_model_folder(path: Path) -> bool:
    return (path / "model.onnx").exists() or (path / MANIFEST).exists()


def _stamp(path: Path) -> tuple:
    """What changes when a model is replaced or rewritten: each file's identity, size, mtime
    and ctime (which no copy preserves)."""
    files = [path] if path.is_file() else [path / "model.onnx", path / MANIFEST]
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((f.name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            out.append((f.name, None))
    return tuple(out)


class Repository:
    """Model name -> versions, thread-safe. ``loader`` builds a Predictor from a path."""

    def __init__(self, root: Path, *, kind: str, loader: Callable[[Path], Predictor],
                 name: str | None = None) -> None:
        self.root, self.kind, self._loader = root, kind, loader
        self._single = name  # the one model's name, when root is a model
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._warned: set[str] = set()  # entries skipped, said once
        self.on_swap: Callable[[Version], None] | None = None  # called with a replaced version

    @classmethod
    def open(cls, path: str | os.PathLike, *, threads: int | None = None,
             allow_foreign_graph: bool = False, name: str | None = None) -> Repository:
        """Scan ``path`` and load every model in it (see the module's docstring)."""
        root = Path(path)
        if not root.exists():
            raise ModelError(f"{path}: no such model file, model folder or repository")
        if root.is_file() or _is_model_folder(root):
            kind = "model"
        elif version_folders(root):
            kind = "versioned"
        elif root.is_dir():
            kind = "repository"
            if name is not None:
                raise ModelError(f"--name {name}: {path} is a repository; its models are named "
                                 "after their folders")
        else:
            raise ModelError(f"{path}: expected a model folder, a .onnx file or a repository")

        def loader(p: Path) -> Predictor:
            return Predictor.load(p, threads=threads, allow_foreign_graph=allow_foreign_graph)
        single = None if kind == "repository" else name or model_name(root)
        if single is not None and text_problem(single):
            raise ModelError(f"{ascii(single)}: a model's name must be Unicode text (it is "
                             "not UTF-8); rename the folder or give --name")
        repo = cls(root, kind=kind, loader=loader, name=single)
        for model in repo._names_on_disk():
            try:
                repo.load(model, quiet=True)
            except ModelError:
                if kind != "repository":
                    raise  # one model that cannot load: nothing to serve
        return repo

    # ------------------------------------------------------------------ what is on disk

    def _names_on_disk(self) -> list[str]:
        if self._single is not None:
            return [self._single]
        try:
            entries = sorted(self.root.iterdir())
        except OSError as e:
            log.error("cannot read the repository %s: %s", self.root, e.strerror)
            return []
        names = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")
                 and not (p.name.endswith(".checkpoint") and (p / "run.json").exists())]
        for bad in [n for n in names if text_problem(n)]:
            if bad not in self._warned:  # once, not at every poll
                self._warned.add(bad)
                log.error("skipping %s in %s: a model's name must be Unicode text (the "
                          "folder name is not UTF-8); rename the folder", ascii(bad), self.root)
            names.remove(bad)
        return names

    def _folder(self, name: str) -> Path:
        return self.root if self._single is not None else self.root / name

    def _versions_on_disk(self, name: str) -> dict[str, Path]:
        """Version -> path; {} when the folder holds no model."""
        folder = self._folder(name)
        if self.kind == "model":
            return {"1": folder} if folder.exists() else {}
        if not folder.is_dir():
            return {}
        if _is_model_folder(folder):
            return {"1": folder}
        return version_folders(folder)

    # ------------------------------------------------------------------ loading

    def load(self, name: str, *, quiet: bool = False) -> None:
        """(Re)load every version of ``name`` from disk, as Triton's load request does: the
        versions that load replace the old ones; raises :class:`ModelError` when none loads."""
        if name not in self._names_on_disk():
            raise UnknownModel(f"no model folder {name!r} in {self.root}")
        paths = self._versions_on_disk(name)
        loaded: dict[str, Version] = {}
        errors: dict[str, str] = {}
        for version, path in sorted(paths.items(), key=lambda kv: int(kv[0])):
            try:
                loaded[version] = self._load_version(name, version, path)
            except (LinregError, OSError) as e:
                errors[version] = str(e)
        if not paths:
            errors[""] = (f"{self._folder(name)}: no model.onnx and no version folders (1/, "
                          "2/, ...); export a model into it (linreg-export)")
        with self._lock:
            old = self._models.get(name, _Model())
            self._models[name] = _Model(versions=loaded, errors=errors)
        self._retire(old.versions.values(), keep=loaded)
        for version, reason in errors.items() if not quiet else ():
            log.error("model %s%s is unavailable: %s", name,
                      f" version {version}" if version else "", reason)
        if not loaded:
            reason = next(iter(errors.values()))
            raise ModelError(reason if self.kind == "model" else
                             f"failed to load {name!r}: {reason}")
        if not quiet:
            log.info("loaded model %s (versions %s)", name, ", ".join(loaded))

    def _load_version(self, name: str, version: str, path: Path) -> Version:
        stamp = _stamp(path)
        return Version(name, version, path, self._loader(path), stamp)

    def unload(self, name: str) -> None:
        """Stop serving ``name`` until it is loaded again (polling leaves it unloaded)."""
        with self._lock:
            old = self._models.get(name)
            if old is None:
                raise UnknownModel(f"unknown model {name!r}")
            self._models[name] = _Model(errors={"": UNLOADED}, unloaded=True)
        self._retire(old.versions.values(), keep={})
        log.info("unloaded model %s", name)

    def _retire(self, versions: Any, keep: dict[str, Version]) -> None:
        if self.on_swap is None:
            return
        kept = {id(v) for v in keep.values()}
        for v in versions:
            if id(v) not in kept:
                self.on_swap(v)

    def poll(self) -> None:
        """Bring the loaded models in line with the disk: load what was added or changed
        (beside the old version, then swap), drop what two polls in a row did not find.
        An unchanged failure is not retried; a changed version that fails keeps the old one."""
        on_disk = set(self._names_on_disk())
        with self._lock:
            known = dict(self._models)
        for name in sorted(on_disk - set(known)):
            try:
                self.load(name)
            except LinregError:
                pass  # listed as unavailable with its reason
        for name, model in known.items():
            if model.unloaded:
                continue
            if name not in on_disk:
                self._missing(name, model, "")
                continue
            self._poll_model(name, model)

    def _missing(self, name: str, model: _Model, version: str) -> None:
        """Drop a model ("") or a version the second time in a row it is not found."""
        with self._lock:
            current = self._models.get(name)
            if current is not model:
                return
            if version not in model.missing:
                model.missing.add(version)
                return
            if version == "":
                del self._models[name]
                gone = list(model.versions.values())
            else:
                gone = [v for v in [model.versions.pop(version, None)] if v is not None]
                model.errors.pop(version, None)
                model.missing.discard(version)
        self._retire(gone, keep={})
        log.info("removed model %s%s (gone from disk)", name,
                 f" version {version}" if version else "")

    def _poll_model(self, name: str, model: _Model) -> None:
        paths = self._versions_on_disk(name)
        model.missing.discard("")
        for version in set(model.versions) - set(paths):
            self._missing(name, model, version)
        for version, path in paths.items():
            model.missing.discard(version)
            stamp = _stamp(path)
            current = model.versions.get(version)
            if current is not None and current.stamp == stamp:
                if version in model.failed_stamps:  # the disk is back to what is served
                    with self._lock:
                        model.failed_stamps.pop(version, None)
                        model.errors.pop(version, None)
                continue
            if model.failed_stamps.get(version) == stamp:
                continue
            try:
                new = self._load_version(name, version, path)
            except (LinregError, OSError) as e:
                with self._lock:
                    model.failed_stamps[version] = stamp
                    model.errors[version] = str(e) if current is None else \
                        f"reloading failed, still serving the version loaded before: {e}"
                log.error("model %s version %s: %s", name, version, e)
                continue
            with self._lock:
                if self._models.get(name) is not model:
                    continue  # loaded or unloaded through the API meanwhile
                model.versions = dict(sorted({**model.versions, version: new}.items(),
                                             key=lambda kv: int(kv[0])))  # the swap
                model.errors.pop(version, None)
                model.errors.pop("", None)
                model.failed_stamps.pop(version, None)
            if current is not None:
                self._retire([current], keep={})
            log.info("%s model %s version %s", "reloaded" if current else "loaded", name,
                     version)

    # ------------------------------------------------------------------ lookups

    def get(self, name: str, version: str | None = None) -> Version:
        """The version to serve: ``version``, or the highest ready one."""
        with self._lock:
            model = self._models.get(name)
            versions = model.versions if model is not None else {}
        if model is None:
            raise UnknownModel(f"unknown model {name!r}; this server serves "
                               f"{_listed(self.names())}")
        if not versions:
            raise NotReady(f"model {name!r} is not ready: "
                           f"{next(iter(model.errors.values()), 'no version loaded')}")
        if version in (None, ""):
            return versions[max(versions, key=int)]
        if version not in versions:
            raise UnknownModel(f"unknown version {version!r} of model {name!r}; it has "
                               f"{', '.join(repr(v) for v in versions)}")
        return versions[version]

    def versions(self, name: str) -> list[str]:
        """The ready versions of ``name``, lowest first."""
        with self._lock:
            model = self._models.get(name)
            return list(model.versions) if model is not None else []

    def has(self, name: str) -> bool:
        """Does the repository know ``name`` (ready or not)?"""
        return name in self._models  # one dict lookup: atomic under the GIL

    def names(self) -> list[str]:
        """Every model name, ready or not."""
        with self._lock:
            return sorted(self._models)

    def ready(self) -> list[Version]:
        """The default (highest) version of every ready model."""
        with self._lock:
            models = list(self._models.values())
        return [m.versions[max(m.versions, key=int)] for m in models if m.versions]

    def all_versions(self) -> list[Version]:
        with self._lock:
            return [v for m in self._models.values() for v in m.versions.values()]

    def index(self, *, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: one entry per version (or per model with none)."""
        with self._lock:
            models = sorted(self._models.items())
        out = []
        for name, model in models:
            versions = sorted(set(model.versions) | {v for v in model.errors if v},
                              key=int)
            for v in versions:
                entry = {"name": name, "version": v,
                         "state": READY if v in model.versions else UNAVAILABLE}
                if v in model.errors:
                    entry["reason"] = model.errors[v]
                out.append(entry)
            if not versions:
                out.append({"name": name, "state": UNAVAILABLE,
                            "reason": model.errors.get("", "no version loaded")})
        return [e for e in out if e["state"] == READY] if ready_only else out


def _listed(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "no models"
