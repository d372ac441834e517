"""linreg-serve's settings: one typed object, each field's range, default and help written once.

``linreg-serve``'s options are made from the fields (:func:`click_options`); the worker
processes of ``--workers N`` read the same object back from ``LINREG_SERVE_<FIELD>``
environment variables (:meth:`ServerSettings.to_env`, :meth:`ServerSettings.from_env`), each
value checked again by its field's type.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from serve.core.commands import FiniteFloat, ProcessCount
from serve.core.formats import MAX_THREADS

ENV_PREFIX = "LINREG_SERVE_"


def _setting(default: Any, kind: Any, help: str, *, short: str | None = None) -> Any:
    """A field with its click type (its range) and its help; ``kind`` None: a flag."""
    return field(default=default, metadata={"type": kind, "help": help, "short": short})


@dataclass(frozen=True)
class ServerSettings:
    """What one linreg-serve runs with: where the models are, where it listens, and the bounds
    every request is held to, whatever its protocol."""

    path: str = field(default="", metadata={"argument": True})
    host: str = _setting("127.0.0.1", str, "Address to bind (HTTP and gRPC). The default is "
                         "loopback only.")
    port: int = _setting(8000, click.IntRange(0, 65535), "HTTP port.")
    grpc_port: int | None = _setting(None, click.IntRange(0, 65535), "Also serve the Open "
                                     "Inference Protocol over gRPC on this port.")
    workers: int = _setting(1, ProcessCount(), "Worker processes.")
    name: str | None = _setting(None, str, "Model name in URLs, for a single model. Default: "
                                "the folder's name.")
    poll_seconds: float | None = _setting(
        None, FiniteFloat(0, 86400, min_open=True), "Rescan PATH this often and load added or "
        "changed models, drop removed ones. Default: load once at start (and on POST "
        ".../load).")
    max_batch_delay_us: int | None = _setting(
        None, click.IntRange(0, 1_000_000), "Dynamic batching: merge requests for the same "
        "model that arrive within this many microseconds into one run. Default: off.")
    max_batch_rows: int = _setting(4096, click.IntRange(min=1), "Dynamic batching: most rows "
                                   "in one merged run.")
    max_body_bytes: int = _setting(32 << 20, click.IntRange(min=1), "Largest request body "
                                   "accepted (413 above).")
    max_rows: int = _setting(100_000, click.IntRange(min=1), "Most rows per request (413 "
                             "above).")
    max_header_bytes: int = _setting(64 << 10, click.IntRange(1024, 1 << 20), "Largest request "
                                     "line + headers accepted (431 above).")
    request_timeout: float = _setting(30.0, FiniteFloat(0, 3600, min_open=True), "Seconds a "
                                      "client has to send its headers, and a request to be "
                                      "read and predicted (408/503 after).")
    threads: int | None = _setting(None, click.IntRange(0, MAX_THREADS), "onnxruntime threads "
                                   "per worker. Default: picked per batch size.")
    allow_foreign_graph: bool = _setting(False, None, "Serve an ONNX graph linreg did not make "
                                         "(other operators, control flow). Only for files you "
                                         "trust.")
    access_log: bool = _setting(False, None, "Log every request.")
    telemetry: bool = _setting(False, None, "OpenTelemetry traces and metrics of every request, "
                               "through FastAPI's native support (for a server run under "
                               "opentelemetry-instrument). Off: FastAPI skips looking for "
                               "providers on each request.")
    quiet: bool = _setting(False, None, "Print nothing but errors (no start line, no log line "
                           "per bad request).", short="-q")

    @property
    def control(self) -> bool:
        """Repository load/unload over HTTP: only with one worker process (each holds its own
        models)."""
        return self.workers == 1

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, for the worker processes."""
        return {ENV_PREFIX + f.name.upper(): _text(getattr(self, f.name))
                for f in dataclasses.fields(self)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """The settings :meth:`to_env` wrote (a field not there keeps its default)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(raw, f)
        return cls(**values)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return ("1" if value else "0") if isinstance(value, bool) else str(value)


def _parse(raw: str, f: dataclasses.Field) -> Any:
    kind = f.metadata.get("type")
    if f.metadata.get("argument") or kind is str:  # "" is None where None is the default
        return None if raw == "" and f.default is None else raw
    if kind is None:  # a flag
        return raw == "1"
    return None if raw == "" else kind.convert(raw, None, None)


def click_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a click command with one option per setting (the path is its argument)."""
    for f in reversed(dataclasses.fields(ServerSettings)):
        if f.metadata.get("argument"):
            continue
        names = [f"--{f.name.replace('_', '-')}"] + ([f.metadata["short"]]
                                                      if f.metadata["short"] else [])
        if f.metadata["type"] is None:
            command = click.option(*names, is_flag=True, help=f.metadata["help"])(command)
        else:
            command = click.option(*names, type=f.metadata["type"], default=f.default,
                                   show_default=f.default is not None,
                                   help=f.metadata["help"])(command)
    return command
