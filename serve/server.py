"""linreg-serve's application: the models of a folder or repository, over HTTP (and gRPC), in
the protocols existing clients and fleets speak.

    linreg-serve models/example --port 8000
    linreg-serve models/ --poll-seconds 5 --grpc-port 8001
    curl -s 127.0.0.1:8000/v2/models/example/infer -d '{"inputs": [...]}'

The app factory only wires things together: the :class:`serve.repository.Repository` of
models, the :class:`serve.serving.Serving` core (limits, dynamic batching, metrics), each HTTP
protocol's routes from its own module (:mod:`serve.routes`), and, while the app runs, the
repository poller and the gRPC server (:mod:`serve.grpc_service`).

Client mistakes are answered 4xx with ``{"error": "..."}``, never 500; bodies and rows per
request are bounded. Needs the ``http`` extra (FastAPI, uvicorn); gRPC needs ``grpc``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.repository import Repository, model_name
from serve.routes import PROTOCOLS
from serve.routes.common import Http, install
from serve.serving import Limits, Serving
from serve.version import __version__

__all__ = ["Options", "app_from_env", "create_app", "model_name"]

log = logging.getLogger("linreg.serve")


@dataclass(frozen=True)
class Options:
    """What runs beside the routes while the app is up."""

    poll_seconds: float | None = None  # rescan the repository this often
    grpc_host: str = "127.0.0.1"
    grpc_port: int | None = None
    control: bool = True  # repository load/unload over HTTP (one worker process only)


def create_app(repository: Repository, *, limits: Limits | None = None,
               options: Options | None = None) -> FastAPI:
    """The ASGI app serving the models of ``repository`` (:meth:`Repository.open`)."""
    serving = Serving(repository, limits or Limits())
    options = options or Options()
    app = FastAPI(title="linreg-serve", version=__version__, lifespan=_lifespan(serving, options),
                  description="Linear regression predictions over the Open Inference Protocol "
                              "(v2, HTTP and gRPC), a simple v1 style and MLflow's scoring "
                              "format, from a model repository.")
    app.state.serving = serving
    app.state.metrics = serving.metrics

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"},
                            status_code=exc.status_code)

    install(app, serving.metrics)
    http = Http(serving, control=options.control)
    for protocol in PROTOCOLS:
        protocol.register(app, http)
    return app


def _lifespan(serving: Serving, options: Options):
    """Start the poller and the gRPC server with the app; stop them with it."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        poller = None
        if options.poll_seconds:
            poller = threading.Thread(target=_poll, args=(serving.repository,
                                                          options.poll_seconds, stop),
                                      daemon=True, name="linreg-poll")
            poller.start()
        grpc_server = None
        if options.grpc_port is not None:
            from serve import grpc_service

            grpc_server = grpc_service.start(serving, options.grpc_host, options.grpc_port)
        try:
            yield
        finally:
            stop.set()
            if grpc_server is not None:
                grpc_server.stop(grace=1)
            serving.close()
    return lifespan


def _poll(repository: Repository, seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        try:
            repository.poll()
        except Exception:  # a bug of ours must not end polling for the server's lifetime
            log.exception("polling the repository failed")


def _log_to_stderr() -> None:
    """One line per event: ``linreg-serve: 400 predict: <what was wrong>``."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("linreg-serve: %(message)s"))
        log.addHandler(handler)
        quiet = os.environ.get("LINREG_SERVE_QUIET") == "1"
        log.setLevel(logging.ERROR if quiet else logging.INFO)
        log.propagate = False


def app_from_env() -> FastAPI:
    """Factory for uvicorn (``--workers N`` imports the app in each worker process)."""
    _log_to_stderr()
    env = os.environ.get
    threads = env("LINREG_SERVE_THREADS")
    repository = Repository.open(env("LINREG_SERVE_MODEL"), threads=int(threads) if threads
                                 else None, allow_foreign_graph=env("LINREG_SERVE_FOREIGN") == "1",
                                 name=env("LINREG_SERVE_NAME") or None)
    delay = env("LINREG_SERVE_BATCH_DELAY_US")
    limits = Limits(max_body_bytes=int(env("LINREG_SERVE_MAX_BODY", 32 << 20)),
                    max_rows=int(env("LINREG_SERVE_MAX_ROWS", 100_000)),
                    request_timeout=float(env("LINREG_SERVE_TIMEOUT", 30)),
                    max_batch_delay_us=int(delay) if delay else None,
                    max_batch_rows=int(env("LINREG_SERVE_BATCH_ROWS", 4096)))
    poll, grpc_port = env("LINREG_SERVE_POLL"), env("LINREG_SERVE_GRPC_PORT")
    options = Options(poll_seconds=float(poll) if poll else None,
                      grpc_host=env("LINREG_SERVE_HOST", "127.0.0.1"),
                      grpc_port=int(grpc_port) if grpc_port else None,
                      control=env("LINREG_SERVE_WORKERS", "1") == "1")
    return create_app(repository, limits=limits, options=options)
