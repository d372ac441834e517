"""The index page (what this server serves, and how to call it) and Prometheus ``/metrics``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response

from serve.server import protocols as proto
from serve.server.routes.common import Http, json_response
from serve.version import __version__


def register(app: FastAPI, http: Http) -> None:
    serving = http.serving

    @app.get("/", tags=["ops"], summary="Index of the endpoints", name="index")
    async def index() -> Response:
        ready = serving.repository.ready()
        models = {v.name: {"version": v.version, "features": v.predictor.feature_names,
                           "targets": v.predictor.target_names} for v in ready}
        page = {"server": "linreg-serve", "version": __version__,
                "models": models, "repository": serving.repository.index()}
        if len(ready) == 1:  # the one-model page of before, for people and scripts reading it
            name, p = ready[0].name, ready[0].predictor
            page.update({"model": name, "features": p.feature_names,
                         "targets": p.target_names})
            page["example"] = {"POST /predict": {"instances": [proto.example_row(p)]}}
        name = ready[0].name if len(ready) == 1 else "NAME"
        page["endpoints"] = {
            "predict": ["POST /predict", f"POST /v1/models/{name}:predict",
                        f"POST /v2/models/{name}/infer", "POST /invocations"],
            "metadata": ["GET /metadata", f"GET /v2/models/{name}",
                         f"GET /v2/models/{name}/config", "GET /v2"],
            "health": ["GET /health", "GET /v2/health/live", "GET /v2/health/ready",
                       f"GET /v2/models/{name}/ready", "GET /ping"],
            "repository": ["POST /v2/repository/index",
                           f"POST /v2/repository/models/{name}/load",
                           f"POST /v2/repository/models/{name}/unload"],
            "ops": ["GET /metrics", "GET /openapi.json", "GET /docs"]}
        return json_response(page)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", name="metrics")
    async def prometheus() -> Response:
        return PlainTextResponse(serving.metrics.render(),
                                 media_type="text/plain; version=0.0.4")
