"""The simple v1 style: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out, as TF
Serving and KServe v1 clients send it. ``/predict``, ``/health`` and ``/metadata`` name no model:
they serve the server's only one."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from serve.core.graph import FEATURES, PREDICTION
from serve.server import protocols as proto
from serve.server.metadata import model_metadata
from serve.server.repository import Version
from serve.server.routes.common import (
    RECORDS,
    ROWS,
    Http,
    body_schema,
    json_response,
    on_unknown_query,
)


def register(app: FastAPI, http: Http) -> None:
    serving = http.serving

    async def v1(request: Request, v: Version) -> Response:
        rows = proto.v1_parse(v.predictor, await http.read_body(request),
                              max_rows=serving.settings.max_rows,
                              on_unknown=on_unknown_query(request))
        pred = await serving.predict(v, rows.rows)
        request.state.rows = len(rows)
        return json_response(proto.predictions_body(pred, rows.finish(pred), v.predictor))

    @http.post(app, "/v1/models/{model}:predict", tags=["v1"], summary="Predict (v1)",
               openapi_extra=body_schema(_V1_SCHEMA, path=("model",)), name="v1_predict")
    async def v1_predict(request: Request) -> Response:
        return await v1(request, serving.version(request.path_params["model"]))

    @http.post(app, "/predict", tags=["v1"], summary="Predict (the only model)",
               openapi_extra=body_schema(_V1_SCHEMA), name="predict")
    async def plain_predict(request: Request) -> Response:
        return await v1(request, http.default(request))

    @app.get("/health", tags=["v1"], summary="Health", name="health")
    async def health() -> Response:
        names = serving.repository.names()
        if len(names) == 1:
            return json_response({"status": "ok", "model": names[0]})
        return json_response({"status": "ok", "models": names})

    @app.get("/metadata", tags=["v1"], summary="The model's contract and manifest facts",
             name="metadata")
    async def metadata(request: Request) -> Response:
        v = http.default(request)
        p = v.predictor
        return json_response({
            "name": v.name, "version": v.version, "features": p.feature_names,
            "targets": p.target_names, "dtype": str(p.dtype),
            "input": {"name": FEATURES, "shape": [-1, p.n_features]}
            if p.columns is None else
            {"columns": model_metadata(p, v.name)["inputs"]},
            "output": {"name": PREDICTION, "shape": [-1, p.n_targets]},
            "limits": {"max_body_bytes": serving.settings.max_body_bytes,
                       "max_rows": serving.settings.max_rows},
            "metadata": p.metadata})


_V1_SCHEMA: dict[str, Any] = {"type": "object", "properties": {
    "instances": {"oneOf": [ROWS, RECORDS]},
    "inputs": {"oneOf": [ROWS, {"type": "object", "additionalProperties": {
        "type": "array", "items": {"type": "number"}}}]}}}
