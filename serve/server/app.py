"""linreg-serve's application: the models of a folder or repository, over HTTP (and gRPC), in
the protocols existing clients and fleets speak.

    linreg-serve models/example --port 8000
    linreg-serve models/ --poll-seconds 5 --grpc-port 8001
    curl -s 127.0.0.1:8000/v2/models/example/infer -d '{"inputs": [...]}'

The app factory only wires things together: the :class:`serve.server.repository.Repository` of
models, the :class:`serve.server.serving.Serving` core (limits, dynamic batching, metrics), each HTTP
protocol's routes from its own module (:mod:`serve.server.routes`), and, while the app runs, the
repository poller and the gRPC server (:mod:`serve.server.grpc_service`).

Client mistakes are answered 4xx with ``{"error": "..."}``, never 500; bodies and rows per
request are bounded. Needs the ``http`` extra (FastAPI, uvicorn); gRPC needs ``grpc``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.server.repository import Repository, model_name
from serve.server.routes import PROTOCOLS
from serve.server.routes.common import Http, install
from serve.server.serving import Serving
from serve.server.settings import ServerSettings
from serve.version import __version__

__all__ = ["app_from_env", "create_app", "log_to_stderr", "model_name"]

log = logging.getLogger("linreg.serve")


def create_app(repository: Repository, settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app serving the models of ``repository`` (:meth:`Repository.open`) under
    ``settings`` (its bounds, batching, polling and gRPC port)."""
    settings = settings or ServerSettings()
    serving = Serving(repository, settings)
    otel = settings.telemetry
    app = FastAPI(title="linreg-serve", version=__version__, lifespan=_lifespan(serving),
                  telemetry={"tracing": otel, "metrics": otel, "logs": otel},
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
    http = Http(serving)
    for protocol in PROTOCOLS:
        protocol.register(app, http)
    return app


def _lifespan(serving: Serving):
    """Start the poller and the gRPC server with the app; stop them with it."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        poller = None
        settings = serving.settings
        if settings.poll_seconds:
            poller = threading.Thread(target=_poll, args=(serving.repository,
                                                          settings.poll_seconds, stop),
                                      daemon=True, name="linreg-poll")
            poller.start()
        grpc_server = None
        if settings.grpc_port is not None:
            from serve.server import grpc_service

            grpc_server = await grpc_service.start(serving, settings.host, settings.grpc_port)
        try:
            yield
        finally:
            stop.set()
            if grpc_server is not None:
                await grpc_server.stop(grace=1)
            serving.close()
    return lifespan


def _poll(repository: Repository, seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        try:
            repository.poll()
        except Exception:  # a bug of ours must not end polling for the server's lifetime
            log.exception("polling the repository failed")


def log_to_stderr(quiet: bool) -> None:
    """One line per event: ``linreg-serve: 400 predict: <what was wrong>``."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("linreg-serve: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.ERROR if quiet else logging.INFO)
        log.propagate = False


def app_from_env() -> FastAPI:
    """Factory for uvicorn's worker processes (``--workers N``): the settings linreg-serve
    put in the environment, the models loaded by each process."""
    settings = ServerSettings.from_env()
    log_to_stderr(settings.quiet)
    repository = Repository.open(settings.path, threads=settings.threads,
                                 allow_foreign_graph=settings.allow_foreign_graph,
                                 name=settings.name)
    return create_app(repository, settings)
