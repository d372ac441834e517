"""The raw-column contract of a tabular model: the columns it takes, their kinds, and how each
is encoded inside ``model.onnx`` (fill value, missing indicator, levels, reference level,
policy for an unseen level).

A model whose columns are all numeric and need no fill has no column specs and keeps the one
``features`` tensor. Any other model takes **one input per raw column**, named after it, of
shape ``[batch, 1]``: a numeric column in the model's float dtype with NaN for a blank, a
categorical column as strings with ``""`` for a blank. The specs travel in ``model.json``
(``"columns"``) and in the ONNX metadata (``linreg.columns``), where every consumer reads them.

A cell whose text is one of the model's NA tokens (``na_values``, the ``--na-values`` of its
training: by default what R and pandas write, ``NA``, ``N/A``, ``NaN``, ``NULL``, ...) is a blank
too, in every reader, and inside ``model.onnx`` for categorical columns; the tokens travel in
``model.json`` (``encoding.na_values``) and the ONNX metadata (``linreg.na_values``).

The graph gives NaN for a row it cannot predict (a blank where no fill was learned, a level
not seen in training under ``unknown: error``); :func:`check_frame` names that cell.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from serve.core.errors import DataError, ModelError
from serve.core.numbers import BadCell, cell_number, shown

MISSING = ""  # a blank categorical cell, and the level that stands for blanks seen in training
MISSING_NAME = "<missing>"  # how that level is named in coefficient names and messages
KINDS = ("numeric", "categorical")
UNKNOWN = ("error", "reference")
# A cell the model cannot take, at prediction (a level not seen in training, a blank with no
# fill): refused (error), the row's prediction NaN (nan), or the level predicted as the
# column's reference level (reference). None: what the model was trained with (--unknown).
ON_UNKNOWN = ("error", "nan", "reference")
# What R and pandas write for a missing value (pandas' default ``na_values``; the empty cell is
# always a blank): read as a blank, in training and at prediction, unless --na-values says else.
NA_VALUES = ("#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
             "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")


@dataclass(frozen=True)
class ColumnSpec:
    """One raw input column and its encoding (learned at training, see ``trainer.encode``)."""

    name: str
    kind: str  # "numeric" or "categorical"
    fill: float | None = None  # numeric: the value a blank becomes (None: a blank is an error)
    indicator: bool = False  # numeric: a 0/1 column ``name[missing]`` follows the value
    levels: tuple[str, ...] = ()  # categorical: sorted; MISSING last when blanks were seen
    reference: str | None = None  # categorical: the level without an indicator (treatment)
    unknown: str = "error"  # categorical: an unseen level is an error, or the reference
    blanks: int = field(default=0, compare=False)  # blanks seen in the training rows (info)

    @property
    def coded_levels(self) -> list[str]:
        """The levels that get an indicator column, in order."""
        return [lv for lv in self.levels if lv != self.reference]

    def encoded_names(self) -> list[str]:
        """The design-matrix columns this column becomes, named as patsy/statsmodels do:
        ``x``, ``x[missing]``, ``city[T.Paris]`` (treatment) or ``city[Paris]`` (full)."""
        if self.kind == "numeric":
            return [self.name] + ([f"{self.name}[missing]"] if self.indicator else [])
        t = "T." if self.reference is not None else ""
        return [f"{self.name}[{t}{level_name(lv)}]" for lv in self.coded_levels]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["levels"] = list(self.levels)
        if self.kind == "numeric":
            for k in ("levels", "reference", "unknown"):
                d.pop(k)
        else:
            for k in ("fill", "indicator"):
                d.pop(k)
        return d

    @classmethod
    def from_json(cls, d: Any, source: str) -> ColumnSpec:
        """A spec from model.json or the ONNX metadata, checked field by field."""
        bad = f"{source}: column spec {shown(d, 80)}"
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) \
                or d.get("kind") not in KINDS:
            raise ModelError(f"{bad} needs a 'name' and a 'kind' ({' or '.join(KINDS)})")
        if d["kind"] == "numeric":
            fill = d.get("fill")
            if fill is not None and (isinstance(fill, bool) or not isinstance(fill, (int, float))
                                     or not math.isfinite(fill)):
                raise ModelError(f"{bad}: 'fill' must be a finite number or null")
            if not isinstance(d.get("indicator", False), bool):
                raise ModelError(f"{bad}: 'indicator' must be true or false")
            return cls(d["name"], "numeric", None if fill is None else float(fill),
                       d.get("indicator", False), blanks=int(d.get("blanks") or 0))
        levels, ref = d.get("levels"), d.get("reference")
        if not isinstance(levels, list) or not levels or not all(isinstance(v, str)
                                                                 for v in levels) \
                or len(set(levels)) != len(levels):
            raise ModelError(f"{bad}: 'levels' must be a non-empty list of distinct strings")
        if ref is not None and ref not in levels:
            raise ModelError(f"{bad}: 'reference' must be one of its levels or null")
        if d.get("unknown", "error") not in UNKNOWN:
            raise ModelError(f"{bad}: 'unknown' must be {' or '.join(UNKNOWN)}")
        return cls(d["name"], "categorical", levels=tuple(levels), reference=ref,
                   unknown=d.get("unknown", "error"), blanks=int(d.get("blanks") or 0))


def level_name(level: str) -> str:
    return MISSING_NAME if level == MISSING else level


def specs_from_json(value: Any, source: str) -> list[ColumnSpec]:
    """The specs of a model, from a JSON list (model.json) or its text (ONNX metadata)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ModelError(f"{source}: linreg.columns is not JSON") from None
    if not isinstance(value, list) or not value:
        raise ModelError(f"{source}: 'columns' must be a non-empty list of column specs")
    specs = [ColumnSpec.from_json(d, source) for d in value]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ModelError(f"{source}: column names repeat in the column specs")
    return specs


def na_values_from_json(value: Any, source: str) -> frozenset[str]:
    """A model's NA tokens from its ONNX metadata (a JSON list of strings); none if absent."""
    if value is None:
        return frozenset()
    try:
        tokens = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        tokens = None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ModelError(f"{source}: linreg.na_values must be a JSON list of strings")
    return frozenset(tokens)


def na_to_null(col: Any, na: Collection[str]) -> Any:
    """An Arrow text array with its NA tokens (exact cell texts) made null; other arrays as
    they are."""
    import pyarrow as pa

    if not na or not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return col
    import pyarrow.compute as pc

    hit = pc.is_in(col, value_set=pa.array(sorted(na), col.type))
    if not pc.any(hit).as_py():
        return col
    return pc.if_else(hit, pa.scalar(None, col.type), col)


def specs_json(specs: Sequence[ColumnSpec]) -> list[dict[str, Any]]:
    return [s.to_json() for s in specs]


def is_plain(specs: Sequence[ColumnSpec]) -> bool:
    """Whether these columns keep the single ``features`` tensor: all numeric, no fill."""
    return all(s.kind == "numeric" and s.fill is None and not s.indicator for s in specs)


# ------------------------------------------------------------------------- level text

def level_text(value: Any) -> str:
    """One raw value as a level, by one rule for every reader: text as it is, ``None``/NaN as
    MISSING, integers (and integral floats) in plain digits, other floats in their shortest
    form, booleans as ``true``/``false`` (Arrow's own casts give the same text)."""
    if isinstance(value, str):
        return value
    if value is None or is_na(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return MISSING
        if v.is_integer() and abs(v) < 1e16:
            return str(int(v))
        return repr(v)
    raise ValueError(value)


def is_na(value: Any) -> bool:
    """pandas' missing-value markers (``pd.NA``, ``pd.NaT``) without importing pandas."""
    return type(value).__name__ in ("NAType", "NaTType")


# ------------------------------------------------------------------------- frames

class Frame:
    """The inputs of a tabular model: one ``(rows, 1)`` array per column, ready for the graph."""

    def __init__(self, arrays: dict[str, np.ndarray], n_rows: int) -> None:
        self.arrays, self.n_rows = arrays, n_rows

    def __len__(self) -> int:
        return self.n_rows

    def row(self, r: int) -> dict[str, Any]:
        return {k: v[r, 0] for k, v in self.arrays.items()}


class FrameError(DataError, ValueError):
    """A raw value that cannot go into the model (a text where a number belongs, a bad type)."""


def frame_from_values(columns: Mapping[str, Sequence[Any]], specs: Sequence[ColumnSpec],
                      dtype: np.dtype, *, na: Collection[str] = frozenset(), row_offset: int = 0,
                      source: str | None = None) -> Frame:
    """A Frame from Python/numpy/pandas values by column name (JSON bodies, records, dicts);
    a text in ``na`` is a blank."""
    arrays, n = {}, None
    for spec in specs:
        values = columns[spec.name]
        if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):
            values = values.tolist()
        values = list(values) if not isinstance(values, list) else values
        if n is None:
            n = len(values)
        elif len(values) != n:
            raise FrameError(f"columns have different lengths ({n} and {len(values)})")
        arrays[spec.name] = _numeric_values(values, spec, dtype, na, row_offset, source) \
            if spec.kind == "numeric" else _level_values(values, spec, na, row_offset, source)
    return Frame(arrays, n or 0)


def _numeric_values(values: list[Any], spec: ColumnSpec, dtype: np.dtype, na: Collection[str],
                    row_offset: int, source: str | None) -> np.ndarray:
    out = np.empty((len(values), 1), dtype=np.float64)
    for r, v in enumerate(values):
        if v is None or (isinstance(v, str) and (not v.strip() or v in na)) or is_na(v):
            out[r, 0] = math.nan
            continue
        try:
            if isinstance(v, bool):
                raise ValueError(v)
            out[r, 0] = cell_number(v)
        except ValueError:
            raise FrameError(_where(source, row_offset + r, spec.name)
                             + f"{shown(v)} is not a number") from None
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, named by check_frame
        return out.astype(dtype)


def _level_values(values: list[Any], spec: ColumnSpec, na: Collection[str], row_offset: int,
                  source: str | None) -> np.ndarray:
    out = np.empty((len(values), 1), dtype=object)
    for r, v in enumerate(values):
        try:
            out[r, 0] = MISSING if isinstance(v, str) and v in na else level_text(v)
        except ValueError:
            raise FrameError(_where(source, row_offset + r, spec.name)
                             + f"{shown(v)} is not a level (send text or a number)") from None
    return out


def frame_from_arrow(batch: Any, specs: Sequence[ColumnSpec], dtype: np.dtype, *,
                     na: Collection[str] = frozenset(), row_offset: int = 0,
                     source: str | None = None) -> Frame:
    """A Frame from an Arrow table or batch (files read in chunks, CSV bodies); a text in
    ``na`` is a blank (a CSV reader has made them null already)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from serve.core.numbers import parse_numbers

    arrays = {}
    for spec in specs:
        col = batch.column(spec.name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        t = col.type
        if pa.types.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        is_text = pa.types.is_string(t) or pa.types.is_large_string(t)
        if is_text:
            col = na_to_null(col, na)
        if spec.kind == "categorical":
            if is_text:
                values = pc.fill_null(col, MISSING).to_numpy(zero_copy_only=False)
            else:
                values = np.array([level_text(v) for v in col.to_pylist()], dtype=object)
            arrays[spec.name] = values.astype(object).reshape(-1, 1)
            continue
        if is_text:
            try:
                values = parse_numbers(col, blanks=True)
            except BadCell as bad:
                raise FrameError(_where(source, row_offset + bad.row, spec.name)
                                 + bad.describe()) from None
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) \
                or pa.types.is_decimal(t) or pa.types.is_null(t):
            values = pc.fill_null(col.cast(pa.float64(), safe=False), math.nan) \
                .to_numpy(zero_copy_only=False)
        else:
            raise FrameError(f"{source + ': ' if source else ''}column {spec.name!r} has type "
                             f"{t}, not numbers")
        with np.errstate(over="ignore"):
            arrays[spec.name] = values.astype(dtype).reshape(-1, 1)
    return Frame(arrays, batch.num_rows)


def _where(source: str | None, r: int, name: str) -> str:
    return f"{source + ': ' if source else ''}row {r + 1}, column {name!r}: "


def check_frame(frame: Frame, specs: Sequence[ColumnSpec], *, row_offset: int = 0,
                source: str | None = None) -> str | None:
    """The message for the first cell the model cannot take, or None: a blank (or NaN) where
    no fill was learned, an infinite number, a level not seen in training (``unknown: error``).
    Found column by column, then the earliest row wins."""
    first: tuple[int, str, str] | None = None
    for spec in specs:
        values = frame.arrays[spec.name][:, 0]
        if spec.kind == "numeric":
            bad = ~np.isfinite(values)
            if spec.fill is not None:
                bad &= ~np.isnan(values)
        elif spec.unknown == "error":
            bad = ~np.isin(values, np.array(spec.levels, dtype=object))
        else:
            continue
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            if first is None or r < first[0]:
                first = (r, spec.name, _explain(values[r], spec))
    if first is None:
        return None
    r, name, what = first
    return _where(source, row_offset + r, name) + what


def check_on_unknown(policy: str | None) -> None:
    if policy is not None and policy not in ON_UNKNOWN:
        raise FrameError(f"on_unknown {shown(policy)}: use {', '.join(ON_UNKNOWN)}")


def unpredictable_cells(values: np.ndarray, spec: ColumnSpec, *, unseen: bool) -> np.ndarray:
    """Which cells of one input column (``(rows,)``) the model cannot take: a number that is
    infinite, or a blank where no fill was learned; a level not among the spec's levels
    (``unseen``: even when the model predicts it as the reference)."""
    if spec.kind == "numeric":
        bad = ~np.isfinite(values)
        return bad & ~np.isnan(values) if spec.fill is not None else bad
    if not unseen:
        return np.zeros(len(values), dtype=bool)
    return ~np.isin(values, np.array(spec.levels, dtype=object))


def apply_on_unknown(frame: Frame, specs: Sequence[ColumnSpec], policy: str | None, *,
                     row_offset: int = 0, source: str | None = None
                     ) -> tuple[Frame, np.ndarray | None]:
    """``frame`` under a per-call policy for the cells the model cannot take (:data:`ON_UNKNOWN`),
    and the rows whose prediction must then be NaN (``nan``; None when there are none):

    - ``error``: a level not seen in training is refused even if the model was trained to
      predict it as the reference (``--unknown reference``); the message names the cell;
    - ``reference``: such a level becomes the column's reference level (a column without one,
      the first of a model without an intercept, refuses it);
    - ``nan``: every row with a cell the model cannot take (also a blank with no fill, an
      infinite number) gets a harmless value there, and is returned to be set to NaN.

    The caller's arrays are never changed (a changed column is a copy)."""
    check_on_unknown(policy)
    if policy is None:
        return frame, None
    if policy == "error":
        strict = [replace(s, unknown="error") for s in specs]
        if message := check_frame(frame, strict, row_offset=row_offset, source=source):
            raise FrameError(message)
        return frame, None
    arrays, mask = dict(frame.arrays), np.zeros(frame.n_rows, dtype=bool)
    for spec in specs:
        values = arrays[spec.name][:, 0]
        if policy == "reference" and spec.kind == "numeric":
            continue
        bad = unpredictable_cells(values, spec, unseen=True)
        if not bad.any():
            continue
        if policy == "reference" and spec.reference is None:
            r = int(np.flatnonzero(bad)[0])
            raise FrameError(_where(source, row_offset + r, spec.name) + (
                f"{_explain(values[r], spec).split(';')[0]}; on_unknown 'reference' needs a "
                f"reference level, and {spec.name!r} has none (a model without an intercept, "
                "or a formula coding it without one): use on_unknown 'nan' or 'error'"))
        fixed = values.copy()
        fixed[bad] = spec.reference if policy == "reference" else (
            spec.levels[0] if spec.kind == "categorical" else 0.0)
        arrays[spec.name] = fixed.reshape(-1, 1)
        mask |= bad
    return Frame(arrays, frame.n_rows), (mask if policy == "nan" and mask.any() else None)


def _explain(value: Any, spec: ColumnSpec) -> str:
    if spec.kind == "numeric":
        if math.isnan(value):
            return ("missing value; this model was trained without --impute, so every "
                    "row needs a number here (--on-unknown nan gives such a row NaN)")
        return f"{'inf' if value > 0 else '-inf'} is not allowed (clean or drop the row)"
    fix = ("; --on-unknown reference predicts it as the reference level, --on-unknown nan "
           "gives the row NaN")
    if value == MISSING:
        return "missing value; no blanks were seen here in training" + fix
    levels = ", ".join(shown(lv) for lv in spec.levels[:10]) + (
        f" and {len(spec.levels) - 10} more" if len(spec.levels) > 10 else "")
    return f"level {shown(value)} was not seen in training (known: {levels})" + fix


def read_specs(manifest: Mapping[str, Any], source: str | Path) -> list[ColumnSpec] | None:
    """The column specs in a manifest, or None for a plain numeric model."""
    value = manifest.get("columns")
    return None if value is None else specs_from_json(value, str(source))
