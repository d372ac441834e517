"""MLflow's scoring server: ``POST /invocations`` (``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs``, or ``text/csv``) and ``GET /ping``, for the server's only model."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from serve.server import protocols as proto
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

    @http.post(app, "/invocations", tags=["mlflow"], summary="Predict (MLflow scoring format)",
               openapi_extra=body_schema(_MLFLOW_SCHEMA, csv=True), name="invocations")
    async def invocations(request: Request) -> Response:
        v = http.default(request)
        rows = proto.mlflow_parse(v.predictor, await http.read_body(request),
                                  request.headers.get("content-type", ""),
                                  max_rows=serving.settings.max_rows,
                                  on_unknown=on_unknown_query(request))
        pred = await serving.predict(v, rows.rows)
        request.state.rows = len(rows)
        return json_response(proto.predictions_body(pred, rows.finish(pred), v.predictor))

    @app.get("/ping", tags=["mlflow"], summary="Health (MLflow)", name="health")
    async def ping() -> Response:
        return json_response({"status": "ok"})


_MLFLOW_SCHEMA: dict[str, Any] = {"type": "object", "properties": {
    "dataframe_split": {"type": "object", "properties": {
        "columns": {"type": "array", "items": {"type": "string"}}, "data": ROWS}},
    "dataframe_records": RECORDS, "instances": ROWS, "inputs": ROWS}}
