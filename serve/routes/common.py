"""The HTTP plumbing every protocol shares: bounded, decompressed bodies; handlers whose
client mistakes become 4xx JSON (never a 500, never a traceback), counted in the metrics."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from serve.errors import ModelError
from serve.protocols import RequestError
from serve.repository import Version
from serve.serving import Serving

log = logging.getLogger("linreg.serve")

# A handler answers its response, the rows it predicted and the model it served ("" if none).
Handler = Callable[..., Awaitable[tuple[Response, int, str]]]


class Http:
    """What a protocol module needs to register its routes: the :class:`Serving` core, and
    the helpers below."""

    def __init__(self, serving: Serving, *, control: bool = True) -> None:
        self.serving = serving
        self.limits = serving.limits
        self.control = control  # repository load/unload allowed (one worker process)

    async def read_body(self, request: Request) -> bytes:
        """The body, at most ``--max-body-bytes`` (also once inflated), within the timeout."""
        limit, timeout = self.limits.max_body_bytes, self.limits.request_timeout
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
            body = await asyncio.wait_for(read(), timeout)
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

    def default(self) -> Version:
        """The model of the routes that name none (``/predict``, ``/invocations``): the only
        one the server holds."""
        names = self.serving.repository.names()
        if len(names) != 1:
            raise RequestError(f"this server serves {len(names)} models "
                               f"({', '.join(names) or 'none yet'}); name one: POST "
                               "/v1/models/NAME:predict or /v2/models/NAME/infer")
        return self.serving.version(names[0])

    def endpoint(self, label: str, *, default_model: bool = False
                 ) -> Callable[[Handler], Callable[..., Awaitable[Response]]]:
        """Turn RequestErrors into 4xx JSON, unexpected errors into 500, and count it all
        under the model the route names (``default_model``: the server's only model)."""
        metrics = self.serving.metrics
        repository = self.serving.repository

        def wrap(handler: Handler):
            @functools.wraps(handler)
            async def run(*args: Any, **kwargs: Any) -> Response:
                start, rows, model = time.perf_counter(), 0, kwargs.get("model") or ""
                if default_model:
                    names = repository.names()
                    model = names[0] if len(names) == 1 else ""
                try:
                    response, rows, model = await handler(*args, **kwargs)
                except RequestError as e:
                    log.warning("%s %s: %s", e.status, label, e.message)
                    response = JSONResponse({"error": e.message}, status_code=e.status,
                                            headers={"Connection": "close"}
                                            if e.status in (408, 413) else None)
                except ModelError as e:  # the model's fault (a foreign graph), not the client's
                    log.error("500 %s: %s", label, e)
                    response = JSONResponse({"error": str(e)}, status_code=500)
                except Exception:  # a bug of ours, not the client's
                    log.exception("internal error on %s", label)
                    response = JSONResponse({"error": "internal server error"}, status_code=500)
                metrics.observe(label, response.status_code, time.perf_counter() - start, rows,
                                model)
                return response
            # FastAPI reads the route's parameters from this signature; the return is ours.
            run.__signature__ = inspect.signature(handler).replace(return_annotation=Response)
            run.__annotations__ = {**handler.__annotations__, "return": Response}
            return run
        return wrap


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


def body_schema(schema: dict[str, Any], *, csv: bool = False) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body itself."""
    content = {"application/json": {"schema": schema}}
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    return {"requestBody": {"required": True, "content": content}}


ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
RECORDS = {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "number"}}}
