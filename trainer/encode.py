"""Categorical columns and blanks: what is learned at training time, and the design matrix.

    linreg-train homes.csv --target price --impute mean --missing-indicator --exclude id

1. Classify each feature column: numeric when every non-blank cell is a number by the one
   number rule (``--categorical`` forces text codes such as zip codes to be categorical).
2. Learn from the training rows only: per numeric column the fill value for blanks
   (``--impute``), whether it gets a missing indicator; per categorical column its levels
   (sorted: numerically when they all read as numbers, as patsy sorts them; a blank is a level
   of its own, last), the reference level and the policy for an unseen level.
3. Build the design matrix in float64: numeric values (blanks filled) and indicators,
   treatment-coded levels (statsmodels' ``C(col)``: the first level is the reference when the
   model has a bias; without a bias the first categorical column gets every level, as patsy
   does, so the matrix keeps full rank).

The learned :class:`serve.core.columns.ColumnSpec` list goes into the manifest and, by the
exporter, into ``model.onnx``, which repeats step 3 on raw values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.core.columns import MISSING, NA_VALUES, ColumnSpec, level_text
from serve.core.errors import DataError
from serve.core.numbers import BadCell, parse_numbers, shown
from trainer.config import CHOICES, TrainingError, check_impute, check_setting

# A raw column: float64 with NaN for blanks (numeric) or level texts, MISSING for blanks.
RawColumns = dict[str, np.ndarray]


@dataclass(frozen=True)
class EncodeConfig:
    """How raw columns become the design matrix; plain values, saved in the manifest."""

    categorical: tuple[str, ...] = ()
    impute: str | None = None  # mean, median, most-frequent or constant:V; None: blanks refused
    missing_indicator: bool = False
    max_levels: int = 1000
    unknown: str = "error"  # or "reference"
    missing_target: str = "drop"  # a row whose target is blank: dropped (counted), or "error"
    reference: tuple[str, ...] = ()  # "column=level": that column's reference level
    na_values: tuple[str, ...] = NA_VALUES  # cell texts read as a blank (besides the empty one)
    formula: str | None = None  # --formula 'y ~ ...': the design, by patsy (trainer.formula)

    @property
    def references(self) -> dict[str, str]:
        """``--reference`` as {column: level}."""
        return dict(r.split("=", 1) for r in self.reference)

    def validate(self) -> None:
        if self.impute is not None:
            check_impute(self.impute)
        check_setting("max_levels", self.max_levels)
        for name in ("unknown", "missing_target"):
            if getattr(self, name) not in CHOICES[name]:
                raise TrainingError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: use "
                                    f"one of {', '.join(CHOICES[name])}")
        for r in self.reference:
            if "=" not in r or not r.split("=", 1)[0]:
                raise TrainingError(f"--reference {r!r}: write COLUMN=LEVEL, e.g. city=Paris")
        if len(self.references) < len(self.reference):
            raise TrainingError("--reference names a column twice; give one level per column")
        if self.formula is not None and (self.categorical or self.reference):
            raise TrainingError("--formula says how every column enters the model: drop "
                                "--categorical and --reference (write C(x) or "
                                "C(x, Treatment(reference='...')) in the formula)")
        if self.formula is not None and self.missing_indicator:
            raise TrainingError("--missing-indicator does not go with --formula: --impute fills "
                                "a column's blanks before the formula reads it")
        if self.missing_indicator and self.impute is None:
            raise TrainingError("--missing-indicator needs --impute: the indicator marks the "
                                "blanks that --impute fills")

    @property
    def plain(self) -> bool:
        """No setting that asks for the tabular contract by itself (a --reference is checked
        against the learned columns, so it asks for them too)."""
        return not self.categorical and self.impute is None and not self.reference \
            and self.formula is None


def manifest_na_values(manifest: Mapping[str, Any]) -> list[str]:
    """The NA tokens a tabular model was trained with (none for a model from before them)."""
    return list((manifest.get("encoding") or {}).get("na_values") or ())


def id_like(specs: Sequence[ColumnSpec] | None, n_rows: int) -> list[str]:
    """A warning per categorical column with about as many levels as training rows: more
    likely an id or free text than a category (each level would be fitted by a row or two)."""
    return [f"column {c.name!r} has {len(c.levels):,} levels for {n_rows:,} training rows: an "
            f"id or free text rather than a category? (--exclude {c.name})"
            for c in specs or () if c.kind == "categorical" and len(c.levels) > 10
            and len(c.levels) >= n_rows / 2]


def impute_fill(how: str, observed: np.ndarray) -> float:
    """The fill value for ``how`` from a column's observed (non-blank) training values."""
    check_impute(how)
    if how.startswith("constant:"):
        return float(how.removeprefix("constant:"))
    if how == "mean":
        return float(np.mean(observed))
    if how == "median":
        return float(np.median(observed))
    values, counts = np.unique(observed, return_counts=True)  # ties: the smallest value
    return float(values[np.argmax(counts)])


# ------------------------------------------------------------------------ 1. classify

def raw_columns(table, names: Sequence[str], *, categorical: Sequence[str], source: str,
                warnings: list[str] | None = None) -> RawColumns:
    """The feature columns of an Arrow table as raw columns (see ``RawColumns``). A column
    made categorical by a few text cells among numbers (a typo?) adds a line to ``warnings``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: RawColumns = {}
    for name in names:
        col = table.column(name)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        t = col.type
        if pa.types.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        text = pa.types.is_string(t) or pa.types.is_large_string(t)
        number = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) \
            or pa.types.is_decimal(t) or pa.types.is_null(t)
        if not (text or number):
            raise DataError(f"{source}: column {name!r} has type {t}; linreg takes numbers and "
                            "text (pass --exclude " + name + " to leave it out)")
        if name not in categorical:
            if number:
                out[name] = pc.fill_null(col.cast(pa.float64(), safe=False), math.nan) \
                    .to_numpy(zero_copy_only=False)
                continue
            try:
                out[name] = parse_numbers(col, blanks=True)
                continue
            except BadCell:
                pass  # a cell that is not a number: the column is categorical
        if text:
            texts = pc.fill_null(col, MISSING).to_numpy(zero_copy_only=False)
            if warnings is not None and name not in categorical:
                warnings.extend(_mostly_numbers(name, texts, source))
        else:
            texts = np.array([level_text(v) for v in col.to_pylist()], dtype=object)
        out[name] = texts.astype(object)
    return out


def _mostly_numbers(name: str, texts: np.ndarray, source: str) -> list[str]:
    """A warning when most of a text column's cells are numbers: one stray cell (``1_000``,
    ``?``) would otherwise turn a numeric column into levels without a word."""
    uniques, inverse = factorize(texts[texts != MISSING])
    if len(uniques) > 10_000:
        return []
    counts = np.bincount(inverse, minlength=len(uniques))
    number = np.array([_is_number(u) for u in uniques], dtype=bool)
    if counts[number].sum() <= counts[~number].sum():
        return []
    odd = set(uniques[~number].tolist())
    r = next(i for i, v in enumerate(texts.tolist()) if v in odd)
    return [f"{source}: column {name!r} is categorical because of text cells, though "
            f"{counts[number].sum():,} of its {counts.sum():,} values are numbers (row {r + 1} "
            f"holds {shown(texts[r])}); if it is numeric, clean those cells; to keep it "
            f"categorical, say --categorical {name}"]


def factorize(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct values, index of each value among them)`` of a text array, by Arrow's hash
    table (numpy's unique sorts Python strings: ~10x slower on a million rows)."""
    import pyarrow as pa

    encoded = pa.array(texts, pa.string()).dictionary_encode()
    return (np.asarray(encoded.dictionary.to_pylist(), dtype=object),
            encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64))


def _is_number(text: str) -> bool:
    import pyarrow as pa

    try:
        parse_numbers(pa.array([text]))
        return True
    except BadCell:
        return False


def numeric_raw(X: np.ndarray, names: Sequence[str]) -> RawColumns:
    """Raw columns of an all-numeric matrix (the fast read path)."""
    return {n: X[:, j] for j, n in enumerate(names)}


# ------------------------------------------------------------------------ 2. learn

def learn(raw: RawColumns, train_idx: np.ndarray, config: EncodeConfig, *, bias: bool,
          source: str) -> list[ColumnSpec]:
    """Each column's spec, learned from the training rows ``train_idx`` only."""
    specs, full_rank_used = [], bias
    for name, values in raw.items():
        seen = values[train_idx]
        if values.dtype != object:
            specs.append(_learn_numeric(name, values, seen, config, source))
            continue
        levels = learned_levels(name, seen, config.max_levels, source)
        reference = reference_level(name, levels, config, coded=full_rank_used)
        full_rank_used = True
        specs.append(ColumnSpec(name, "categorical", levels=tuple(levels), reference=reference,
                                unknown=config.unknown, blanks=int(np.sum(seen == MISSING))))
    check_references(specs, config)
    return specs


def reference_level(name: str, levels: Sequence[str], config: EncodeConfig, *,
                    coded: bool) -> str | None:
    """A categorical column's reference level: ``--reference``'s, else the first in sorted
    order (patsy's Treatment); None for the first column of a fit without an intercept, which
    gets every level (``coded`` False)."""
    chosen = config.references.get(name)
    if not coded:
        if chosen is not None:
            raise TrainingError(f"--reference {name}={chosen}: without an intercept (--no-bias) "
                                f"the first categorical column, {name!r}, gets every level and "
                                "has no reference")
        return None
    if chosen is None:
        return levels[0]
    if chosen not in levels:
        raise TrainingError(f"--reference {name}={chosen}: {chosen!r} is not a level of {name!r} "
                            f"in the training rows (its levels: "
                            f"{', '.join(repr(v) for v in levels[:10])}"
                            f"{', ...' if len(levels) > 10 else ''})")
    return chosen


def check_references(specs: Sequence[ColumnSpec], config: EncodeConfig) -> None:
    """Every ``--reference`` column is one of the categorical columns."""
    categorical = {c.name for c in specs if c.kind == "categorical"}
    for name, level in config.references.items():
        if name not in categorical:
            numeric = any(c.name == name for c in specs)
            raise TrainingError(f"--reference {name}={level}: " + (
                f"column {name!r} is numeric; add --categorical {name}" if numeric else
                f"{name!r} is not a feature column"))


def _learn_numeric(name: str, values: np.ndarray, seen: np.ndarray, config: EncodeConfig,
                   source: str) -> ColumnSpec:
    inf = np.isinf(values)
    if inf.any():
        r = int(np.flatnonzero(inf)[0])
        raise DataError(f"{source}: row {r + 1}, column {name!r}: "
                        f"{'inf' if values[r] > 0 else '-inf'} is not allowed (clean or drop "
                        "the row)")
    blank = np.isnan(values)
    if config.impute is None:
        if blank.any():
            r = int(np.flatnonzero(blank)[0])
            raise DataError(f"{source}: row {r + 1}, column {name!r}: missing value (blank or "
                            "NaN); pass --impute mean (or median, most-frequent, constant:V) to fill "
                            "blanks, or clean or drop the row")
        return ColumnSpec(name, "numeric")
    observed = seen[~np.isnan(seen)]
    if not observed.size and not config.impute.startswith("constant:"):
        raise DataError(f"{source}: column {name!r} has no values in the training rows to "
                        f"learn --impute {config.impute} from; use --impute constant:V or "
                        f"--exclude {name}")
    blanks = int(np.isnan(seen).sum())
    return ColumnSpec(name, "numeric", fill=impute_fill(config.impute, observed),
                      indicator=config.missing_indicator and blanks > 0, blanks=blanks)


def learned_levels(name: str, seen: np.ndarray, max_levels: int, source: str) -> list[str]:
    distinct = set(seen.tolist())
    has_missing = MISSING in distinct
    distinct.discard(MISSING)
    if len(distinct) > max_levels:
        raise DataError(f"{source}: column {name!r} has {len(distinct):,} levels, more than "
                        f"--max-levels {max_levels:,}; pass --exclude {name} if it is an id "
                        "or free text, or raise --max-levels")
    return sorted(distinct, key=_level_key) + ([MISSING] if has_missing else [])


def _level_key(level: str) -> tuple[float, str]:
    try:
        number = float(level)  # numeric codes sort as numbers (patsy: 2 before 10)
    except ValueError:
        number = math.nan
    return (number if math.isfinite(number) else math.inf, level)


# ------------------------------------------------------------------------ 3. encode

def design_matrix(raw: Mapping[str, np.ndarray], specs: Sequence[ColumnSpec], *,
                  source: str, rows: np.ndarray | None = None) -> np.ndarray:
    """The float64 design matrix of raw values (1-D arrays by column name), in the order of
    ``encoded_names``. A blank with no fill, or an unseen level under ``unknown: error``, is a
    DataError naming its row (``rows`` maps positions back to data rows)."""
    blocks = []
    for spec in specs:
        values = raw[spec.name]
        if spec.kind == "numeric":
            blank = np.isnan(values)
            filled = values if spec.fill is None else np.where(blank, spec.fill, values)
            blocks.append(filled.reshape(-1, 1))
            if spec.indicator:
                blocks.append(blank.astype(np.float64).reshape(-1, 1))
            continue
        index = {lv: j for j, lv in enumerate(spec.coded_levels)}
        uniques, inverse = factorize(values)
        for u in uniques:
            if u not in spec.levels and spec.unknown == "error":
                r = int(np.flatnonzero(values == u)[0])
                raise _unseen(spec, u, int(rows[r]) if rows is not None else r, source)
        codes = np.array([index.get(u, -1) for u in uniques], dtype=np.int64)[inverse]
        blocks.append(_one_hot(codes, len(index)))
    X = np.hstack(blocks) if blocks else np.empty((0, 0))
    return np.ascontiguousarray(X, dtype=np.float64)


def _unseen(spec: ColumnSpec, level: str, row: int, source: str) -> DataError:
    return DataError(f"{source}: row {row + 1} (a validation row), column {spec.name!r}: level "
                     f"{shown(level)} is not in the training rows; pass --unknown reference to "
                     "predict it as the reference level, or train without --val-fraction")


def _one_hot(codes: np.ndarray, width: int) -> np.ndarray:
    """Indicator columns of level codes (-1: no indicator, the reference level's row)."""
    onehot = np.zeros((len(codes), width))
    hit = codes >= 0
    onehot[np.flatnonzero(hit), codes[hit]] = 1.0
    return onehot


def table_design(table, specs: Sequence[ColumnSpec], *, source: str, rows: np.ndarray,
                 out: np.ndarray) -> None:
    """:func:`design_matrix` of an Arrow table's raw columns, written into ``out`` (rows,
    encoded columns): a text column of a categorical spec stays in Arrow (its cells are looked
    up among the levels by Arrow's hash table, no Python string per cell); other columns go
    through :func:`raw_columns` and :func:`design_matrix`, as in memory. ``rows`` are the
    table's data rows (for messages)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    at = 0
    for spec in specs:
        col = table.column(spec.name)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        width = len(spec.encoded_names())
        if spec.kind == "categorical" and (pa.types.is_string(col.type) or
                                           pa.types.is_large_string(col.type)):
            cells = pc.fill_null(col, MISSING)
            if spec.unknown == "error":
                known = pc.is_in(cells, value_set=pa.array(list(spec.levels), col.type))
                if not pc.all(known).as_py():
                    r = int(np.flatnonzero(~known.to_numpy(zero_copy_only=False))[0])
                    raise _unseen(spec, cells[r].as_py(), int(rows[r]), source)
            codes = pc.index_in(cells, value_set=pa.array(spec.coded_levels, col.type))
            codes = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            out[:, at:at + width] = _one_hot(codes, width)
        else:
            raw = raw_columns(table.select([spec.name]), [spec.name], source=source,
                              categorical=[spec.name] if spec.kind == "categorical" else [])
            out[:, at:at + width] = design_matrix(raw, [spec], source=source, rows=rows)
        at += width


def encoded_names(specs: Sequence[ColumnSpec]) -> list[str]:
    return [n for s in specs for n in s.encoded_names()]


# ------------------------------------------------------------------------ 2'. learn, streamed


