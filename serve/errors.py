"""Typed exceptions shared by the runtime and the trainer.

Library code raises these; only the CLIs turn them into one line on stderr and an exit code.
"""

from __future__ import annotations


class LinregError(Exception):
    """Base class of every error a user can cause (bad file, bad flag, bad model)."""

    exit_code = 1


class DataError(LinregError):
    """A data file or an in-memory input is unusable: missing, malformed, non-numeric, NaN..."""


class CellError(DataError):
    """One cell is missing or not a number; ``column`` names its column."""

    def __init__(self, message: str, column: str) -> None:
        super().__init__(message)
        self.column = column


class ModelError(LinregError):
    """A model folder or file is missing, corrupt, or does not match its manifest."""


class OutputError(LinregError):
    """An output path cannot be written, or is something linreg must not replace."""


class OutputExistsError(OutputError):
    """Refusing to overwrite an existing output without --force."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type's name), for a one-line error."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]
