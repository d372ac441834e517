"""The HTTP plumbing every protocol shares: bounded, decompressed bodies; one exception handler
(a :class:`LinregError` becomes its status with ``{"error": message}``, never a traceback); one
middleware that counts every routed request in the metrics and answers an unexpected
exception with a 500. Routes are plain FastAPI functions: one that predicts sets
``request.state.rows``, one that serves the server's only model ``request.state.model``."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.routing import request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.core.errors import LinregError, RequestError
from serve.server.metrics import Metrics
from serve.server.protocols import on_unknown_of
from serve.server.repository import Version
from serve.server.serving import Serving, within

log = logging.getLogger("linreg.serve")


Endpoint = Callable[[Request], Awaitable[Response]]


class Plain(APIRoute):
    """A route whose endpoint takes the Request and returns a Response: listed in the OpenAPI
    schema like any route, run by Starlette as it is (FastAPI has no parameters to solve or
    body to validate: the data plane reads and checks the body). The predicting routes are
    these: 40 µs less a request (bench/asgi.py)."""

    def __init__(self, path: str, endpoint: Endpoint, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = request_response(endpoint)


class Http:
    """What a protocol module needs to register its routes: the :class:`Serving` core, and
    the helpers below."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.settings = serving.settings

    @staticmethod
    def post(app: FastAPI, *paths: str, **kwargs: Any) -> Callable[[Endpoint], Endpoint]:
        """Register a predicting endpoint ``(Request) -> Response`` at ``paths`` as
        :class:`Plain` routes, ahead of every other route (routes are matched in order). The
        first path is documented; the others (version-qualified) share it."""
        documented = kwargs.pop("include_in_schema", True)

        def register(endpoint: Endpoint) -> Endpoint:
            for i, path in enumerate(paths):
                app.router.add_api_route(path, endpoint, methods=["POST"],
                                         route_class_override=Plain,
                                         include_in_schema=documented and i == 0, **kwargs)
                app.router.routes.insert(_hot_routes(app), app.router.routes.pop())
            return endpoint
        return register

    async def read_body(self, request: Request) -> bytes:
        """The body, at most ``--max-body-bytes`` (also once inflated), within the timeout."""
        limit, timeout = self.settings.max_body_bytes, self.settings.request_timeout
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestError(f"Content-Length {length!r} is not a number")
            if int(length) > limit:
                raise too_large(int(length), limit)

        async def read() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(size, limit)
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            body = await within(timeout, read())
        except asyncio.TimeoutError:
            raise RequestError(f"the request body did not arrive within {timeout:g} s "
                               "(--request-timeout)", status=408) from None
        encoding = (request.headers.get("content-encoding") or "identity").lower()
        if encoding in ("gzip", "deflate"):
            body = _decompress(body, encoding, limit)
        elif encoding != "identity":
            raise RequestError(f"Content-Encoding {encoding!r} is not supported; use gzip, "
                               "deflate or none", status=415)
        return body

    def default(self, request: Request) -> Version:
        """The model of the routes that name none (``/predict``, ``/invocations``): the only
        one the server holds (and the model the metrics count the request under)."""
        names = self.serving.repository.names()
        if len(names) == 1:
            request.state.model = names[0]
        if len(names) != 1:
            raise RequestError(f"this server serves {len(names)} models "
                               f"({', '.join(names) or 'none yet'}); name one: POST "
                               "/v1/models/NAME:predict or /v2/models/NAME/infer")
        return self.serving.version(names[0])


def _hot_routes(app: FastAPI) -> int:
    """How many Plain routes lead the app's routes (where the next one goes)."""
    n = 0
    while n < len(app.router.routes) and isinstance(app.router.routes[n], Plain):
        n += 1
    return n


def install(app: FastAPI, metrics: Metrics) -> None:
    """The error model and the metrics of every route of ``app``."""
    app.add_exception_handler(LinregError, _error_response)
    app.add_middleware(Observed, metrics=metrics)


async def _error_response(request: Request, e: Exception) -> Response:
    status = getattr(e, "status", 400)
    route = request.scope.get("route")
    (log.error if status >= 500 else log.warning)("%s %s: %s", status,
                                                  getattr(route, "name", "?"), e)
    return JSONResponse({"error": str(e)}, status_code=status,
                        headers={"Connection": "close"} if status in (408, 413) else None)


class Observed:
    """ASGI middleware: every request that reached a route is counted under the route's name,
    with its status, time, rows and model; an exception no handler took (a bug of ours, not
    the client's) is logged and answered 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, started = time.perf_counter(), 500, False

        async def sending(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if started:  # nothing more can be said
                raise
            log.exception("internal error on %s", getattr(scope.get("route"), "name", "?"))
            await JSONResponse({"error": "internal server error"}, status_code=500)(
                scope, receive, send)
        route = scope.get("route")
        if route is not None:
            state = scope.get("state") or {}
            model = scope.get("path_params", {}).get("model") or state.get("model", "")
            self.metrics.observe(route.name, status, time.perf_counter() - start,
                                 state.get("rows", 0), model)


def on_unknown_query(request: Request) -> str | None:
    """``?on_unknown=...``, checked (the query string is parsed only when there is one: the
    predicting routes are hot)."""
    if not request.scope.get("query_string"):
        return None
    return on_unknown_of(request.query_params.get("on_unknown"))


def json_response(payload: Any, status: int = 200) -> Response:
    return JSONResponse(payload, status_code=status)


def too_large(size: int, limit: int) -> RequestError:
    return RequestError(f"request body of {size:,} bytes is more than the limit of {limit:,} "
                        "(--max-body-bytes)", status=413)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Inflate a gzip or deflate body, refusing to grow past ``limit`` (no zip bombs)."""
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise RequestError(f"request body is not valid {encoding} data ({e})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise too_large(limit + 1, limit)
    return out


def body_schema(schema: dict[str, Any], *, csv: bool = False,
                path: tuple[str, ...] = ()) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body itself (and the ``path``
    parameters of one that reads them from the Request)."""
    content = {"application/json": {"schema": schema}}
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    extra: dict[str, Any] = {"requestBody": {"required": True, "content": content}}
    if path:
        extra["parameters"] = [{"name": n, "in": "path", "required": True,
                                "schema": {"type": "string"}} for n in path]
    return extra


ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
RECORDS = {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "number"}}}
