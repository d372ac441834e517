"""The Open Inference Protocol v2 over HTTP (KServe, NVIDIA Triton, MLServer clients), with the
binary tensor data extension and Triton's model configuration extension
(``GET /v2/models/NAME/config``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from serve.runtime.triton import model_config
from serve.server import dataplane, metadata
from serve.server.routes.common import Http, body_schema, json_response


def register(app: FastAPI, http: Http) -> None:
    serving = http.serving

    # The hot path: a Plain route, first in line (the model and version are read from the
    # Request's path).
    @http.post(app, "/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer",
               tags=["v2"], summary="Inference (JSON or binary)", name="v2_infer",
               openapi_extra=body_schema(_V2_SCHEMA, path=("model",)))
    async def v2_infer(request: Request) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        v = serving.version(model, version)
        body = await http.read_body(request)
        asked = dataplane.from_json(body, request.headers.get("inference-header-content-length"))
        rows = dataplane.request_rows(v.predictor, asked, max_rows=serving.settings.max_rows)
        outputs = await serving.predict(v, rows.rows)
        request.state.rows = len(rows)
        content, json_length = dataplane.to_json(dataplane.response(
            asked, outputs, model, v.version, rows.finish(outputs)))
        if json_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(json_length)})

    @app.get("/v2", tags=["v2"], summary="Server metadata", name="v2_metadata")
    async def v2_server() -> Response:
        return json_response(metadata.server_metadata())

    @app.get("/v2/health/live", tags=["v2"], summary="Liveness", name="v2_health")
    async def v2_live() -> Response:
        return json_response({"live": True})

    @app.get("/v2/health/ready", tags=["v2"], summary="Readiness", name="v2_health")
    async def v2_ready() -> Response:
        return json_response({"ready": True})

    @app.get("/v2/models/{model}", tags=["v2"], summary="Model metadata",
             name="v2_model_metadata")
    @app.get("/v2/models/{model}/versions/{version}", tags=["v2"], include_in_schema=False,
             name="v2_model_metadata")
    async def v2_model(model: str, version: str | None = None) -> Response:
        v = serving.version(model, version)
        return json_response(metadata.model_metadata(v.predictor, model,
                                                      serving.repository.versions(model)))

    @app.get("/v2/models/{model}/ready", tags=["v2"], summary="Model readiness",
             name="v2_health")
    @app.get("/v2/models/{model}/versions/{version}/ready", tags=["v2"],
             include_in_schema=False, name="v2_health")
    async def v2_model_ready(model: str, version: str | None = None) -> Response:
        serving.version(model, version)
        return json_response({"name": model, "ready": True})

    @app.get("/v2/models/{model}/config", tags=["v2"], summary="Model configuration (Triton)",
             name="v2_model_config")
    @app.get("/v2/models/{model}/versions/{version}/config", tags=["v2"],
             include_in_schema=False, name="v2_model_config")
    async def v2_model_config(model: str, version: str | None = None) -> Response:
        v = serving.version(model, version)
        settings = serving.settings
        return json_response(model_config(v.predictor, model, max_batch_size=settings.max_rows,
                                          max_queue_delay_us=settings.max_batch_delay_us))


_V2_SCHEMA: dict[str, Any] = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"},
    "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape",
                                                                      "datatype"],
               "properties": {"name": {"type": "string"},
                              "shape": {"type": "array", "items": {"type": "integer"}},
                              "datatype": {"type": "string",
                                           "enum": ["FP32", "FP64", "BYTES"]},
                              "data": {"type": "array"},
                              "parameters": {"type": "object"}}}},
    "outputs": {"type": "array", "items": {"type": "object"}},
    "parameters": {"type": "object"}}}
