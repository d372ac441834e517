"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` (ServerLive,
ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer), as Triton and KServe serve
it, so ``tritonclient.grpc`` works unchanged. Needs the ``grpc`` extra.

A thin converter over :mod:`serve.server.dataplane`, served by ``grpc.aio`` on the HTTP
server's event loop: a ``ModelInferRequest`` becomes the same ``InferRequest`` an HTTP body
does, is checked and predicted the same way (:meth:`Serving.predict`), and the response is
encoded as ``raw_output_contents``, as Triton does; a refusal is a gRPC status
(INVALID_ARGUMENT, NOT_FOUND, ...) whose details are the HTTP message.

The messages live in package ``inference``, as the protocol says, in a descriptor pool of their
own (see ``make proto``), so this module and ``tritonclient.grpc`` (which defines the same
names) can share a process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from serve.core.errors import GRPC_CODES, LinregError
from serve.server import dataplane, metadata
from serve.server.proto import inference_pb2 as pb
from serve.server.proto import inference_pb2_grpc as pb_grpc  # the servicer's base class
from serve.server.serving import Serving

log = logging.getLogger("linreg.serve")

CODES = {status: getattr(grpc.StatusCode, name) for status, name in GRPC_CODES.items()}


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The servicer: each RPC answers from the shared :class:`serve.server.serving.Serving`."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self.serving.version(request.name, request.version or None)
        except LinregError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(**metadata.server_metadata())

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> tuple[Any, int]:
            v = self.serving.version(request.name, request.version or None)
            meta = metadata.model_metadata(v.predictor, request.name,
                                            self.serving.repository.versions(request.name))
            tensors = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                inputs=[tensors(**t) for t in meta["inputs"]],
                outputs=[tensors(**t) for t in meta["outputs"]]), 0
        return await self._call("grpc_model_metadata", request.name, context, answer)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> tuple[Any, int]:
            v = self.serving.version(request.model_name, request.model_version or None)
            asked = dataplane.from_protobuf(request)
            rows = dataplane.request_rows(v.predictor, asked,
                                          max_rows=self.serving.settings.max_rows)
            outputs = await self.serving.predict(v, rows.rows)
            return dataplane.to_protobuf(dataplane.response(
                asked, outputs, request.model_name, v.version, rows.finish(outputs)), pb), \
                len(rows)
        return await self._call("grpc_infer", request.model_name, context, answer)

    async def _call(self, label: str, model: str, context: grpc.aio.ServicerContext,
                    answer: Any) -> Any:
        """Run ``answer``: a :class:`LinregError` aborts with its status's gRPC code and its
        message, anything else is INTERNAL and logged, never a traceback to the client; every
        call is counted as its HTTP twin would be."""
        start, status, rows = time.perf_counter(), 200, 0
        try:
            response, rows = await answer()
            return response
        except LinregError as e:
            status = e.status
            (log.error if status >= 500 else log.warning)("%s %s: %s", status, label, e)
            await context.abort(CODES[status], str(e))
        except Exception:  # a bug of ours, not the client's
            status = 500
            log.exception("internal error on %s", label)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        finally:
            self.serving.metrics.observe(label, status, time.perf_counter() - start, rows,
                                         model)


class _Malformed:
    """A request body that is not the message it should be (the parse error kept)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _handlers(servicer: InferenceService) -> grpc.GenericRpcHandler:
    """The service's methods, as the generated ``add_..._to_server`` registers them, but with
    a request that fails to parse answered INVALID_ARGUMENT (grpc's own deserializer would
    answer INTERNAL and log a traceback for a client's bad bytes)."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    return grpc.method_handlers_generic_handler(service.full_name, {
        m.name: _lenient(getattr(servicer, m.name), getattr(pb, m.input_type.name),
                         getattr(pb, m.output_type.name)) for m in service.methods})


def _lenient(run: Any, request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
    def parse(data: bytes) -> Any:
        try:
            return request_type.FromString(data)
        except Exception as e:  # protobuf's DecodeError, or its C extension's own
            return _Malformed(e)

    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid "
                                f"{request_type.DESCRIPTOR.name} message ({request.error})")
        return await run(request, context)

    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=parse, response_serializer=response_type.SerializeToString)


async def start(serving: Serving, host: str, port: int) -> grpc.aio.Server:
    """A started gRPC server for ``serving`` on ``host:port``, on the running event loop (the
    HTTP server's: a call is served as an HTTP request is, each at most --max-body-bytes)."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length",
                                       serving.settings.max_body_bytes),
                                      ("grpc.max_send_message_length", 1 << 30)])
    server.add_generic_rpc_handlers((_handlers(InferenceService(serving)),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise LinregError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server
