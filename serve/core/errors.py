"""Typed exceptions shared by the runtime, the server and the trainer: one error model.

Every error a user can cause is a :class:`LinregError`. Library code raises them; the CLIs turn
them into one line on stderr and an exit code; the server answers them with their ``status``
(HTTP) or its gRPC twin (:data:`GRPC_CODES`), the message as the error, and never a traceback.
"""

from __future__ import annotations


class LinregError(Exception):
    """Base class of every error a user can cause (bad file, bad flag, bad model, bad
    request)."""

    exit_code = 1
    status = 400  # what the server answers it with


class DataError(LinregError):
    """A data file or an in-memory input is unusable: missing, malformed, non-numeric, NaN..."""


class CellError(DataError):
    """One cell is missing or not a number; ``column`` names its column."""

    def __init__(self, message: str, column: str) -> None:
        super().__init__(message)
        self.column = column


class ModelError(LinregError):
    """A model folder or file is missing, corrupt, or does not match its manifest (served: the
    model's fault, not the client's)."""

    status = 500


class UnknownModel(LinregError):
    """A request named a model or version the server does not have."""

    status = 404


class NotReady(LinregError):
    """The model exists but no version of it is ready."""

    status = 503


class RequestError(LinregError):
    """A request the server cannot answer as sent: ``status`` says how (400, 408, 409, 413,
    415, 422, 503)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# The gRPC status of each HTTP one (the names of grpc.StatusCode: grpc is an optional extra).
GRPC_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED",
              409: "FAILED_PRECONDITION", 413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT",
              422: "INVALID_ARGUMENT", 500: "INTERNAL", 503: "UNAVAILABLE"}


class OutputError(LinregError):
    """An output path cannot be written, or is something linreg must not replace."""


class OutputExistsError(OutputError):
    """Refusing to overwrite an existing output without --force."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type's name), for a one-line error."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]
