"""The encoding learned from a stream (:class:`StreamLearner`): one pass over a rank's chunks
gathers each column's levels, blanks and what its fill needs, merged across ranks in rank
order, so the column specs — and so ``model.onnx`` — equal the in-memory ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serve.core.columns import MISSING, ColumnSpec
from serve.core.errors import DataError
from trainer.encode import (
    EncodeConfig,
    check_references,
    factorize,
    impute_fill,
    learned_levels,
    raw_columns,
    reference_level,
)

# A raw column: float64 with NaN for blanks (numeric) or level texts, MISSING for blanks.
RawColumns = dict[str, np.ndarray]


@dataclass
class _Seen:
    """What one column's chunks showed so far (this rank's rows; merged rank by rank)."""

    numbers: bool = True  # every cell read as a number (or a blank)
    texts: dict | None = None  # level text -> count among the train rows (None: over the cap)
    first_blank: tuple[str, int] | None = None  # (file, 1-based row) of the first blank
    first_inf: tuple[str, int, float] | None = None
    n_obs: int = 0  # train rows with a value
    total: float = 0.0
    blanks: int = 0  # train blanks
    kept: list | None = None  # the observed train values (median, most-frequent)

    def merge(self, other: _Seen, cap: int) -> _Seen:
        texts = None
        if self.texts is not None and other.texts is not None:
            texts = dict(self.texts)
            for k, v in other.texts.items():
                texts[k] = texts.get(k, 0) + v
            if len(texts) > cap:
                texts = None
        return _Seen(self.numbers and other.numbers, texts, self.first_blank or other.first_blank,
                     self.first_inf or other.first_inf, self.n_obs + other.n_obs,
                     self.total + other.total, self.blanks + other.blanks,
                     None if self.kept is None else self.kept + (other.kept or []))


class StreamLearner:
    """The column specs of :func:`learn`, learned chunk by chunk (one pass over the rows, then
    merged across ranks), so a dataset of any size is encoded exactly as in memory:

    - a column is numeric when every cell of every chunk (train and validation rows, as in
      memory) reads as a number or a blank, else categorical (``--categorical`` forces it);
    - levels are the distinct texts of the train rows; a column is refused as soon as it has
      more than ``--max-levels`` (a numeric column's texts stop being counted there);
    - fills: mean (sum and count), constant, and median / most-frequent from the observed
      values (kept: 8 bytes a train row of that column); exact in every case.
    """

    def __init__(self, features: Sequence[str], config: EncodeConfig) -> None:
        self.features, self.config = list(features), config
        keep = config.impute in ("median", "most-frequent")
        self.seen = {n: _Seen(texts={}, kept=[] if keep else None) for n in self.features}

    def add(self, table, train: np.ndarray, source: str, first_row: int) -> None:
        """One chunk: ``table`` holds the raw feature columns, ``train`` marks its train rows."""
        import pyarrow as pa
        import pyarrow.compute as pc

        cap = self.config.max_levels
        raw = raw_columns(table, self.features, categorical=self.config.categorical,
                          source=source)
        for name, values in raw.items():
            s = self.seen[name]
            if values.dtype == object:
                s.numbers = False
                texts = values[train]
            else:
                col = table.column(name)
                t = col.type
                is_text = pa.types.is_string(t) or pa.types.is_large_string(t) or \
                    pa.types.is_dictionary(t)
                texts = None
                if is_text and s.texts is not None:  # its texts, should a later chunk hold words
                    texts = pc.fill_null(col.cast(pa.string()), MISSING).to_numpy(
                        zero_copy_only=False)[train]
                blank = np.isnan(values)
                if blank.any() and s.first_blank is None:
                    s.first_blank = (source, first_row + int(np.flatnonzero(blank)[0]) + 1)
                inf = np.isinf(values)
                if inf.any() and s.first_inf is None:
                    r = int(np.flatnonzero(inf)[0])
                    s.first_inf = (source, first_row + r + 1, float(values[r]))
                seen = values[train]
                observed = seen[~np.isnan(seen)]
                s.n_obs += len(observed)
                s.total += float(observed.sum()) if len(observed) else 0.0
                s.blanks += int(np.isnan(seen).sum())
                if s.kept is not None:
                    s.kept.append(observed)
            if texts is not None and s.texts is not None:
                uniques, inverse = factorize(np.asarray(texts, dtype=object))
                counts = np.bincount(inverse, minlength=len(uniques))
                for u, c in zip(uniques.tolist(), counts.tolist()):
                    s.texts[u] = s.texts.get(u, 0) + c
                if len(s.texts) > cap:
                    if not s.numbers:
                        raise DataError(f"{source}: column {name!r} has more than {cap:,} "
                                        f"levels (--max-levels {cap:,}); pass --exclude {name} "
                                        "if it is an id or free text, or raise --max-levels")
                    s.texts = None  # a numeric column's values: no longer worth counting

    def specs(self, others: Sequence[StreamLearner], *, bias: bool,
              source: str) -> list[ColumnSpec]:
        """The specs, from this rank's learner merged with ``others`` (every rank's, in rank
        order: the same specs everywhere)."""
        cap = self.config.max_levels
        merged = {n: _Seen(texts={}, kept=[] if self.seen[n].kept is not None else None)
                  for n in self.features}
        for learner in others:
            for n in self.features:
                merged[n] = merged[n].merge(learner.seen[n], cap)
        specs, full_rank_used = [], bias
        for name in self.features:
            s = merged[name]
            if not s.numbers:
                if s.texts is None:
                    raise DataError(f"{source}: column {name!r} has more than {cap:,} levels "
                                    f"(--max-levels {cap:,}); pass --exclude {name} if it is "
                                    "an id or free text, or raise --max-levels")
                levels = learned_levels(name, np.array(list(s.texts), dtype=object), cap, source)
                reference = reference_level(name, levels, self.config, coded=full_rank_used)
                full_rank_used = True
                specs.append(ColumnSpec(name, "categorical", levels=tuple(levels),
                                        reference=reference, unknown=self.config.unknown,
                                        blanks=s.texts.get(MISSING, 0)))
                continue
            specs.append(self._numeric(name, s))
        check_references(specs, self.config)
        return specs

    def _numeric(self, name: str, s: _Seen) -> ColumnSpec:
        how = self.config.impute
        if s.first_inf is not None:
            where, row, v = s.first_inf
            raise DataError(f"{where}: row {row}, column {name!r}: {'inf' if v > 0 else '-inf'} "
                            "is not allowed (clean or drop the row)")
        if how is None:
            if s.first_blank is not None:
                where, row = s.first_blank
                raise DataError(f"{where}: row {row}, column {name!r}: missing value (blank or "
                                "NaN); pass --impute mean (or median, most-frequent, constant:V) "
                                "to fill blanks, or clean or drop the row")
            return ColumnSpec(name, "numeric")
        if not s.n_obs and not how.startswith("constant:"):
            raise DataError(f"column {name!r} has no values in the training rows to learn "
                            f"--impute {how} from; use --impute constant:V or --exclude {name}")
        if how == "mean":
            fill = s.total / s.n_obs
        elif how in ("median", "most-frequent"):
            fill = impute_fill(how, np.concatenate(s.kept))
        else:
            fill = impute_fill(how, np.empty(0))
        return ColumnSpec(name, "numeric", fill=fill,
                          indicator=self.config.missing_indicator and s.blanks > 0,
                          blanks=s.blanks)
