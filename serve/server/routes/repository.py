"""Triton's model repository extension: ``POST /v2/repository/index`` lists every model
version with its state (``READY``/``UNAVAILABLE``) and reason; ``.../models/NAME/load`` loads
or reloads a model from disk (the new versions are swapped in only once loaded);
``.../models/NAME/unload`` stops serving it. With ``--workers N`` > 1 each worker process holds
its own repository, so load and unload are refused there: use ``--poll-seconds``."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import Response

from serve.core.errors import ModelError, RequestError
from serve.server import protocols as proto
from serve.server.routes.common import Http, json_response


def register(app: FastAPI, http: Http) -> None:
    repo = http.serving.repository

    async def options(request: Request) -> dict:
        """The optional JSON object of a repository request (``{}`` when the body is empty)."""
        body = await http.read_body(request)
        if not body.strip():
            return {}
        payload = proto.parse_json(body)
        if not isinstance(payload, dict):
            raise RequestError("expected a JSON object (or no body)")
        return payload

    @app.post("/v2/repository/index", tags=["repository"], summary="Models and their state",
              name="repository_index")
    async def index(request: Request) -> Response:
        ready = (await options(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise RequestError("'ready' must be true or false")
        return json_response(repo.index(ready_only=ready))

    async def control(request: Request, model: str, action) -> Response:
        """Load or unload ``model``: off the event loop (loading builds onnxruntime
        sessions); an unknown model is a 404, one that does not load a 400 (the request
        asked for it)."""
        if not http.settings.control:
            raise RequestError("load and unload are refused with --workers above 1: each "
                               "worker holds its own models; use --poll-seconds instead", 409)
        await options(request)
        try:
            await asyncio.get_running_loop().run_in_executor(None, action, model)
        except ModelError as e:
            raise RequestError(str(e), 400) from None
        return json_response({})

    @app.post("/v2/repository/models/{model}/load", tags=["repository"],
              summary="Load or reload a model from the repository", name="repository_load")
    async def load(request: Request, model: str) -> Response:
        return await control(request, model, repo.load)

    @app.post("/v2/repository/models/{model}/unload", tags=["repository"],
              summary="Stop serving a model", name="repository_unload")
    async def unload(request: Request, model: str) -> Response:
        return await control(request, model, repo.unload)
