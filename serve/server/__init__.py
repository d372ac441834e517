"""linreg-serve: the ASGI app (:mod:`.app`) wiring the HTTP protocols (:mod:`.routes`) and gRPC
(:mod:`.grpc_service`) over one Open Inference Protocol data plane (:mod:`.dataplane`), one
serving core (:mod:`.serving`: the repository, dynamic batching, metrics) and one settings
object (:mod:`.settings`). Needs the ``http`` extra (gRPC: ``grpc``)."""
