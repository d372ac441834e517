"""The number rule, for every reader: what counts as a number, and the one wording for a cell
that is not one, or is NaN or infinite. numpy only; pyarrow is imported when text is parsed, so
loading a model and predicting from arrays never imports it.

- A text cell is a number when Arrow's float parser takes it, surrounding spaces trimmed: ``12``,
  ``-1.5e3``, ``.5``. Not ``1_000``, ``0x1F``, ``true`` or ``1,5``; ``nan``/``inf`` parse and are
  then refused as NaN/infinite; an empty cell is a missing value.
- A JSON/Python number is itself; an integer beyond float range becomes inf (refused as such).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def parse_numbers(col: Any, *, blanks: bool = False) -> np.ndarray:
    """Text cells as float64 by the one number rule (module docstring); raises ``BadCell``.
    With ``blanks``, an empty or null cell is a missing value, NaN (a tabular model's input)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(col)
    if trimmed.null_count or pc.any(pc.equal(trimmed, "")).as_py():
        missing = pc.or_kleene(pc.is_null(trimmed), pc.equal(trimmed, ""))
        if not blanks:
            raise BadCell(int(np.flatnonzero(missing.to_numpy(zero_copy_only=False))[0]), None)
        trimmed = pc.if_else(missing, pa.scalar("nan", pa.string()), trimmed)
    try:
        return pc.cast(trimmed, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        lo, hi = 0, len(trimmed)  # the first cell that does not parse, by bisection
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                pc.cast(trimmed.slice(lo, mid - lo), pa.float64())
                lo = mid
            except pa.ArrowInvalid:
                hi = mid
        raise BadCell(lo, col[lo].as_py()) from None


def cell_number(value: Any) -> float:
    """One value from JSON or Python as a float by the same rule as a file's cells: numbers as
    they are (an integer beyond float range becomes inf, refused later as such), text parsed
    by :func:`parse_numbers`; anything else raises ValueError."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, complex):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        try:
            import pyarrow as pa

            return float(parse_numbers(pa.array([value]))[0])
        except BadCell:
            raise ValueError(value) from None
    raise ValueError(value)


class BadCell(Exception):
    def __init__(self, row: int, value: Any) -> None:
        self.row, self.value = row, value

    def describe(self) -> str:
        if self.value is None or not str(self.value).strip():
            return "missing value"
        return f"{shown(self.value)} is not a number"


def shown(value: Any, limit: int = 60) -> str:
    """A user's value inside a message: text quoted, anything else as JSON, cut short."""
    try:
        text = repr(str(value)) if isinstance(value, str) else json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def all_numbers(texts: Sequence[str]) -> bool:
    """Whether every text is a number by the one rule (e.g. a CSV "header" that is data).
    A text Python's ``float`` refuses is no number by Arrow's rule either (a test fuzzes it),
    so a header of names is answered without loading pyarrow's compute functions."""
    if not all(_python_float(t) for t in texts):
        return False
    import pyarrow as pa

    try:
        parse_numbers(pa.array(list(texts), pa.string()))
    except BadCell:
        return False
    return True


def _python_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def non_finite_message(values: np.ndarray, columns: Sequence[str], *,
                       source: str | Path | None = None, row_offset: int = 0) -> str | None:
    """The one wording for the first NaN or infinite cell of a 2-D array, or None if none."""
    bad = first_non_finite(values)
    if bad is None:
        return None
    r, c, what = bad
    name = columns[c] if c < len(columns) else str(c)
    beyond = "or a value beyond float32's ±3.4e38; " if what != "NaN" and \
        values.dtype == np.float32 else ""
    where = f"{source}: " if source else ""
    return (f"{where}row {row_offset + r + 1}, column {name!r}: {what} is not allowed "
            f"({beyond}clean or drop the row)")


def first_non_finite(values: np.ndarray) -> tuple[int, int, str] | None:
    """``(row, column, "NaN" | "inf" | "-inf")`` of the first cell of a 2-D array that is not a
    finite number, or None when all are (the common case costs one ``isfinite`` pass)."""
    if np.isfinite(values).all():
        return None
    r, c = np.argwhere(~np.isfinite(values))[0]
    v = values[r, c]
    return int(r), int(c), "NaN" if np.isnan(v) else ("inf" if v > 0 else "-inf")
