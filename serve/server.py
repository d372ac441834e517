"""linreg-serve's application: one model over HTTP, in the protocols existing clients speak.

    linreg-serve models/example --port 8000
    curl -s 127.0.0.1:8000/predict -d '{"instances": [[1.0, 2.0, 3.0]]}'

Routes (NAME is the model folder's name, or the .onnx file's stem):
- Open Inference Protocol v2: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/NAME[/versions/1]``, ``.../ready``, ``POST .../infer`` (JSON or binary tensors).
- v1: ``POST /v1/models/NAME:predict``, ``POST /predict``, ``GET /health``, ``GET /metadata``.
- MLflow: ``POST /invocations``, ``GET /ping``.
- ``GET /metrics`` (Prometheus), ``GET /openapi.json``, ``GET /docs``.

Client mistakes are answered 4xx with ``{"error": "..."}``, never 500; bodies and rows per
request are bounded. Needs the ``http`` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve import protocols as proto
from serve.errors import DataError, ModelError
from serve.metrics import Metrics
from serve.predictor import Cancel, Predictor
from serve.protocols import RequestError
from serve.version import __version__

log = logging.getLogger("linreg.serve")


def model_name(path: str | os.PathLike) -> str:
    """The model's name on the wire: its folder's name, or the .onnx file's stem."""
    p = Path(path).resolve()
    return p.name if p.is_dir() else p.name.removesuffix(".onnx")


def create_app(predictor: Predictor, name: str, *, max_body_bytes: int = 32 << 20,
               max_rows: int = 100_000, request_timeout: float = 30.0) -> FastAPI:
    """The ASGI app serving ``predictor`` as ``name``.

    Every prediction runs on a worker thread, never on the event loop, so ``/health`` answers
    whatever a request is doing; a request that takes longer than ``request_timeout`` seconds
    (reading its body and predicting) is answered 503 and its run is cancelled."""
    app = FastAPI(title=f"linreg-serve: {name}", version=__version__,
                  description="Linear regression predictions over the Open Inference Protocol "
                              "(v2), a simple v1 style and MLflow's scoring format.")
    metrics = Metrics()
    app.state.metrics = metrics
    pool = ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 1)),
                              thread_name_prefix="linreg-predict")

    # 1. Shared plumbing: bounded bodies, predictions off the loop for big batches, metrics.
    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestError(f"Content-Length {length!r} is not a number")
            if int(length) > max_body_bytes:
                raise _too_large(int(length), max_body_bytes)
        async def read() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    raise _too_large(size, max_body_bytes)
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            body = await asyncio.wait_for(read(), request_timeout)
        except asyncio.TimeoutError:
            raise RequestError(f"the request body did not arrive within {request_timeout:g} s "
                               "(--request-timeout)", status=408) from None
        encoding = (request.headers.get("content-encoding") or "identity").lower()
        if encoding in ("gzip", "deflate"):
            body = _decompress(body, encoding, max_body_bytes)
        elif encoding != "identity":
            raise RequestError(f"Content-Encoding {encoding!r} is not supported; use gzip, "
                               "deflate or none", status=415)
        return body

    run = predictor.predict_intervals if predictor.intervals is not None else \
        (lambda rows, cancel: {proto.OUTPUT_NAME: predictor.predict(rows, cancel=cancel)})

    async def predict(rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name: the prediction, and its intervals when the model has them."""
        cancel = Cancel()
        future = asyncio.get_running_loop().run_in_executor(
            pool, functools.partial(run, rows, cancel=cancel))
        try:
            return await asyncio.wait_for(asyncio.shield(future), request_timeout)
        except asyncio.TimeoutError:
            cancel.cancel()
            raise RequestError(f"the prediction took longer than {request_timeout:g} s "
                               "(--request-timeout)", status=503) from None
        except asyncio.CancelledError:  # the server is shutting down, or the client left
            cancel.cancel()
            raise
        except DataError as e:  # e.g. a prediction that overflows the model's dtype
            raise RequestError(str(e), status=422) from None

    def check_name(requested: str, version: str | None = None) -> None:
        if requested != name:
            raise RequestError(f"unknown model {requested!r}; this server serves {name!r}", 404)
        if version not in (None, "1"):
            raise RequestError(f"unknown version {version!r} of model {name!r}; it has '1'", 404)

    Handler = Callable[..., Awaitable[tuple[Response, int]]]

    def endpoint(label: str) -> Callable[[Handler], Callable[..., Awaitable[Response]]]:
        """Turn RequestErrors into 4xx JSON, unexpected errors into 500, and count it all."""
        def wrap(handler: Handler):
            @functools.wraps(handler)
            async def run(*args: Any, **kwargs: Any) -> Response:
                start, rows = time.perf_counter(), 0
                try:
                    response, rows = await handler(*args, **kwargs)
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
                metrics.observe(label, response.status_code, time.perf_counter() - start, rows)
                return response
            # FastAPI reads the route's parameters from this signature; the return is ours.
            run.__signature__ = inspect.signature(handler).replace(return_annotation=Response)
            run.__annotations__ = {**handler.__annotations__, "return": Response}
            return run
        return wrap

    def json_response(payload: Any, status: int = 200) -> Response:
        return JSONResponse(payload, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"},
                            status_code=exc.status_code)

    @app.get("/", tags=["ops"], summary="Index of the endpoints")
    @endpoint("index")
    async def index() -> tuple[Response, int]:
        return json_response({
            "server": "linreg-serve", "version": __version__, "model": name,
            "features": predictor.feature_names, "targets": predictor.target_names,
            "endpoints": {
                "predict": ["POST /predict", f"POST /v1/models/{name}:predict",
                            f"POST /v2/models/{name}/infer", "POST /invocations"],
                "metadata": ["GET /metadata", f"GET /v2/models/{name}", "GET /v2"],
                "health": ["GET /health", "GET /v2/health/live", "GET /v2/health/ready",
                           f"GET /v2/models/{name}/ready", "GET /ping"],
                "ops": ["GET /metrics", "GET /openapi.json", "GET /docs"]},
            "example": {"POST /predict": {"instances": [proto.example_row(predictor)]}}}), 0

    # 2. Open Inference Protocol v2.
    @app.get("/v2", tags=["v2"], summary="Server metadata")
    @endpoint("v2_metadata")
    async def v2_server() -> tuple[Response, int]:
        return json_response({"name": "linreg", "version": __version__,
                              "extensions": ["binary_tensor_data"]}), 0

    @app.get("/v2/health/live", tags=["v2"], summary="Liveness")
    @endpoint("v2_health")
    async def v2_live() -> tuple[Response, int]:
        return json_response({"live": True}), 0

    @app.get("/v2/health/ready", tags=["v2"], summary="Readiness")
    @endpoint("v2_health")
    async def v2_ready() -> tuple[Response, int]:
        return json_response({"ready": True}), 0

    @app.get("/v2/models/{model}", tags=["v2"], summary="Model metadata")
    @app.get("/v2/models/{model}/versions/{version}", tags=["v2"], include_in_schema=False)
    @endpoint("v2_model_metadata")
    async def v2_model(model: str, version: str | None = None) -> tuple[Response, int]:
        check_name(model, version)
        return json_response(proto.v2_model_metadata(predictor, name)), 0

    @app.get("/v2/models/{model}/ready", tags=["v2"], summary="Model readiness")
    @app.get("/v2/models/{model}/versions/{version}/ready", tags=["v2"],
             include_in_schema=False)
    @endpoint("v2_health")
    async def v2_model_ready(model: str, version: str | None = None) -> tuple[Response, int]:
        check_name(model, version)
        return json_response({"name": name, "ready": True}), 0

    @app.post("/v2/models/{model}/infer", tags=["v2"], summary="Inference (JSON or binary)",
              openapi_extra=_body_schema(_V2_SCHEMA))
    @app.post("/v2/models/{model}/versions/{version}/infer", tags=["v2"],
              include_in_schema=False)
    @endpoint("v2_infer")
    async def v2_infer(request: Request, model: str,
                       version: str | None = None) -> tuple[Response, int]:
        check_name(model, version)
        body = await read_body(request)
        header, rows = proto.v2_parse(predictor, body,
                                      request.headers.get("inference-header-content-length"),
                                      max_rows=max_rows)
        content, json_length = proto.v2_response(header, await predict(rows), name)
        if json_length is None:
            return Response(content, media_type="application/json"), len(rows)
        return Response(content, media_type="application/octet-stream", headers={
            "Inference-Header-Content-Length": str(json_length)}), len(rows)

    # 3. The simple v1 style.
    async def v1(request: Request) -> tuple[Response, int]:
        rows = proto.v1_parse(predictor, await read_body(request), max_rows=max_rows)
        pred = await predict(rows)
        return json_response(proto.predictions_body(pred)), len(rows)

    @app.post("/v1/models/{model}:predict", tags=["v1"], summary="Predict (v1)",
              openapi_extra=_body_schema(_V1_SCHEMA))
    @endpoint("v1_predict")
    async def v1_predict(request: Request, model: str) -> tuple[Response, int]:
        check_name(model)
        return await v1(request)

    @app.post("/predict", tags=["v1"], summary="Predict", openapi_extra=_body_schema(_V1_SCHEMA))
    @endpoint("predict")
    async def plain_predict(request: Request) -> tuple[Response, int]:
        return await v1(request)

    @app.get("/health", tags=["v1"], summary="Health")
    @endpoint("health")
    async def health() -> tuple[Response, int]:
        return json_response({"status": "ok", "model": name}), 0

    @app.get("/metadata", tags=["v1"], summary="The model's contract and manifest facts")
    @endpoint("metadata")
    async def metadata() -> tuple[Response, int]:
        return json_response({
            "name": name, "features": predictor.feature_names,
            "targets": predictor.target_names, "dtype": str(predictor.dtype),
            "input": {"name": proto.INPUT_NAME, "shape": [-1, predictor.n_features]}
            if predictor.columns is None else
            {"columns": proto.v2_model_metadata(predictor, name)["inputs"]},
            "output": {"name": proto.OUTPUT_NAME, "shape": [-1, predictor.n_targets]},
            "limits": {"max_body_bytes": max_body_bytes, "max_rows": max_rows},
            "metadata": predictor.metadata}), 0

    # 4. MLflow's scoring server.
    @app.post("/invocations", tags=["mlflow"], summary="Predict (MLflow scoring format)",
              openapi_extra=_body_schema(_MLFLOW_SCHEMA, csv=True))
    @endpoint("invocations")
    async def invocations(request: Request) -> tuple[Response, int]:
        rows = proto.mlflow_parse(predictor, await read_body(request),
                                  request.headers.get("content-type", ""), max_rows=max_rows)
        pred = await predict(rows)
        return json_response(proto.predictions_body(pred)), len(rows)

    @app.get("/ping", tags=["mlflow"], summary="Health (MLflow)")
    @endpoint("health")
    async def ping() -> tuple[Response, int]:
        return json_response({"status": "ok"}), 0

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


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
    path = os.environ["LINREG_SERVE_MODEL"]
    threads = os.environ.get("LINREG_SERVE_THREADS")
    predictor = Predictor.load(path, threads=int(threads) if threads else None,
                               allow_foreign_graph=os.environ.get("LINREG_SERVE_FOREIGN") == "1")
    return create_app(predictor, os.environ.get("LINREG_SERVE_NAME") or model_name(path),
                      max_body_bytes=int(os.environ.get("LINREG_SERVE_MAX_BODY", 32 << 20)),
                      max_rows=int(os.environ.get("LINREG_SERVE_MAX_ROWS", 100_000)),
                      request_timeout=float(os.environ.get("LINREG_SERVE_TIMEOUT", 30)))


def _too_large(size: int, limit: int) -> RequestError:
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
        raise _too_large(limit + 1, limit)
    return out


def _body_schema(schema: dict[str, Any], *, csv: bool = False) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    return {"requestBody": {"required": True, "content": content}}


_ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
_RECORDS = {"type": "array", "items": {"type": "object",
                                       "additionalProperties": {"type": "number"}}}
_V1_SCHEMA = {"type": "object", "properties": {
    "instances": {"oneOf": [_ROWS, _RECORDS]},
    "inputs": {"oneOf": [_ROWS, {"type": "object", "additionalProperties": {
        "type": "array", "items": {"type": "number"}}}]}}}
_V2_SCHEMA = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"},
    "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape",
                                                                      "datatype"],
               "properties": {"name": {"type": "string", "enum": ["features"]},
                              "shape": {"type": "array", "items": {"type": "integer"}},
                              "datatype": {"type": "string", "enum": ["FP32", "FP64"]},
                              "data": {"type": "array"},
                              "parameters": {"type": "object"}}}},
    "outputs": {"type": "array", "items": {"type": "object"}},
    "parameters": {"type": "object"}}}
_MLFLOW_SCHEMA = {"type": "object", "properties": {
    "dataframe_split": {"type": "object", "properties": {
        "columns": {"type": "array", "items": {"type": "string"}}, "data": _ROWS}},
    "dataframe_records": _RECORDS, "instances": _ROWS, "inputs": _ROWS}}
