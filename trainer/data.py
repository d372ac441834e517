"""Training data: pick features and targets from a data file, and split off a validation set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from serve.core.columns import ColumnSpec, is_plain
from serve.core.errors import CellError, DataError
from serve.core.tables import to_matrix
from trainer.encode import (
    EncodeConfig,
    RawColumns,
    design_matrix,
    encoded_names,
    learn,
    numeric_raw,
    raw_columns,
)
from trainer.files import column_names, read_table


@dataclass
class TrainingData:
    """Features ``X`` (rows, n_features) and targets ``Y`` (rows, n_targets), float64, with names.

    A table with categorical columns or blanks is read as raw columns first (``raw``);
    :func:`encode` then learns ``columns`` (the specs) and builds ``X``, whose
    ``feature_names`` are then the design matrix's (``city[T.Paris]``, ...)."""

    X: np.ndarray | None
    Y: np.ndarray
    feature_names: list[str]
    target_names: list[str]
    path: str
    raw: RawColumns | None = None
    columns: list[ColumnSpec] | None = None
    warnings: list[str] = field(default_factory=list)
    weights: np.ndarray | None = None  # --sample-weight: one weight per row
    dropped: int = 0  # rows left out because their target is blank
    file_rows: np.ndarray | None = None  # each row's 0-based data row in the file (None: same)
    formula: Any = None  # --formula: its design (trainer.formula.FormulaSpec)

    @property
    def n_rows(self) -> int:
        return self.Y.shape[0]

    def rows_in_file(self, idx: np.ndarray) -> np.ndarray:
        """The 0-based data rows in the file of rows ``idx`` (a blank target's row was left
        out, so the two counts differ after it)."""
        return idx if self.file_rows is None else self.file_rows[idx]

    @property
    def input_names(self) -> list[str]:
        """The raw columns a model of this data takes."""
        return [c.name for c in self.columns] if self.columns else self.feature_names


def load_training_data(path: str | Path, *, targets: Sequence[str] = (),
                       features: Sequence[str] = (), exclude: Sequence[str] = (),
                       categorical: Sequence[str] = (), weight: str | None = None,
                       missing_target: str = "drop", na: Sequence[str] = (),
                       progress: Callable[[int], None] | None = None) -> TrainingData:
    """Read ``path`` and select columns: targets default to the last column, features to the
    rest but ``exclude`` (ids, text). All-number features are read as a matrix at once; a
    blank or a text cell (or ``categorical``) reads the features as raw columns instead.
    A row whose target is blank is dropped (``missing_target`` "drop", counted in
    ``warnings``) or refused ("error"). A text cell in ``na`` (NA tokens) is a blank."""
    targets, features = pick_columns(path, column_names(path), targets=targets,
                                     features=features, exclude=exclude, weight=weight)
    _check_names(path, "categorical", categorical, features)
    numbers = targets + ([weight] if weight else [])
    blank_ok = targets if missing_target == "drop" else ()
    data = None
    if not categorical:
        try:  # the fast path: every feature cell a number
            table = read_table(path, features + numbers, blanks=blank_ok, na=na,
                               progress=progress)
            Y = to_matrix(table, targets, source=path, blanks=blank_ok)
            X = to_matrix(table, features, source=path)
            data = TrainingData(X, Y, features, targets, str(path),
                                weights=_weights(table, weight, path))
        except CellError as e:
            if e.column not in features:
                raise  # a target must be numbers: nothing to learn from another read
            # a blank or a text cell in a feature: read the features as they are
    if data is None:
        table = read_table(path, features + numbers, text=features, blanks=blank_ok, na=na,
                           progress=progress)
        Y = to_matrix(table, targets, source=path, blanks=blank_ok)
        weights = _weights(table, weight, path)
        warnings: list[str] = []
        raw = raw_columns(table, features, categorical=categorical, source=str(path),
                          warnings=warnings)
        data = TrainingData(None, Y, features, targets, str(path), raw=raw, warnings=warnings,
                            weights=weights)
    return _without_blank_targets(data)


def _without_blank_targets(data: TrainingData) -> TrainingData:
    """``data`` less its rows whose target is blank (NaN: a written NaN was refused), with a
    warning that counts them."""
    blank = np.isnan(data.Y).any(axis=1)
    if not blank.any():
        return data
    keep, n = ~blank, int(blank.sum())
    if not keep.any():
        raise DataError(f"{data.path}: every row's target is blank; nothing to learn from")
    return replace(
        data, X=None if data.X is None else data.X[keep], Y=data.Y[keep],
        raw=None if data.raw is None else {k: v[keep] for k, v in data.raw.items()},
        weights=None if data.weights is None else data.weights[keep], dropped=n,
        file_rows=np.flatnonzero(keep),
        warnings=[*data.warnings, dropped_message(n, data.target_names)])


def dropped_message(n: int, targets: Sequence[str]) -> str:
    """The one wording of the rows left out for a blank target (console and manifest)."""
    names = ", ".join(repr(t) for t in targets)
    return (f"dropped {n:,} row(s) with a blank target ({names}); --missing-target error "
            "refuses them instead")


def pick_columns(source: str | Path, columns: list[str], *, targets: Sequence[str] = (),
                 features: Sequence[str] = (), exclude: Sequence[str] = (),
                 weight: str | None = None) -> tuple[list[str], list[str]]:
    """The target and feature columns of a table with ``columns``: targets default to the last
    column, features to the rest but ``exclude`` (and the sample weight), each name checked."""
    targets = list(targets) or [columns[-1]]
    _check_names(source, "target", targets, columns)
    _check_names(source, "excluded", exclude, columns)
    if weight is not None:
        _check_names(source, "sample-weight", [weight], columns)
        if weight in targets:
            raise DataError(f"{source}: column {weight!r} is both the sample weight and a target")
    left_out = set(targets) | set(exclude) | ({weight} if weight else set())
    features = list(features) or [c for c in columns if c not in left_out]
    _check_names(source, "feature", features, columns)
    if both := sorted(set(features) & set(targets)):
        raise DataError(f"{source}: column {both[0]!r} is both a feature and a target")
    if weight in features:
        raise DataError(f"{source}: column {weight!r} is both a feature and the sample weight")
    if not features:
        raise DataError(f"{source}: no feature columns left besides the target(s) {targets}")
    return targets, features


def _weights(table, weight: str | None, path: str | Path) -> np.ndarray | None:
    """The --sample-weight column: finite numbers, none negative, not all zero."""
    if weight is None:
        return None
    w = to_matrix(table, [weight], source=path)[:, 0]
    if (w < 0).any():
        r = int(np.flatnonzero(w < 0)[0])
        raise DataError(f"{path}: row {r + 1}, column {weight!r}: the sample weight {w[r]:g} "
                        "is negative; weights must be >= 0")
    if not w.sum() > 0:
        raise DataError(f"{path}: column {weight!r}: every sample weight is 0")
    return w


def encode(data: TrainingData, train_idx: np.ndarray, config: EncodeConfig, *,
           bias: bool) -> TrainingData:
    """Learn the column specs on the training rows and build the design matrix; a plain
    numeric table (no blanks, no categorical column, no --impute) is returned as it is."""
    config.validate()
    if data.raw is None and config.plain:
        return data
    raw = data.raw if data.raw is not None else numeric_raw(data.X, data.feature_names)
    specs = learn(raw, train_idx, config, bias=bias, source=data.path)
    X = design_matrix(raw, specs, source=data.path)
    if is_plain(specs):
        return replace(data, X=X, raw=None)
    return replace(data, X=X, feature_names=encoded_names(specs), raw=raw, columns=specs)


def _check_names(path: str | Path, kind: str, names: Sequence[str], columns: list[str]) -> None:
    present = set(columns)
    for name in names:
        if name not in present:
            raise DataError(f"{path}: unknown {kind} column {name!r}; the columns are "
                            f"{', '.join(columns)}")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: {kind} columns repeat: {', '.join(names)}")


def split_rows(n_rows: int, val_fraction: float | None,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/validation row indices (numpy's RNG, so torch's stream is untouched)."""
    if not val_fraction:
        return np.arange(n_rows), np.arange(0)
    n_val = int(round(n_rows * val_fraction))
    if n_val < 1 or n_val >= n_rows:
        raise DataError(f"--val-fraction {val_fraction} leaves {n_val} of {n_rows} rows for "
                        "validation; need at least one row on each side")
    perm = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_formula_data(path: str | Path, formula: str, train_idx_of: Callable[[int], Any], *,
                      na: Sequence[str] = (), impute: str | None = None,
                      missing_target: str = "drop", unknown: str = "error"
                      ) -> tuple[TrainingData, np.ndarray, np.ndarray]:
    """``--formula``: the columns it reads (numbers by the number rule, else text), the design
    patsy builds on the training rows (``train_idx_of(n_rows)`` gives them and the validation
    rows) and the same design on every row. Blanks as for plain columns: a row whose response
    is blank is dropped (``missing_target``), a blank text cell is a level of its own, and a
    blank number is filled by ``impute`` (learned from the training rows, before the formula
    sees the column) or refused."""
    from trainer.encode import impute_fill
    from trainer.formula import learn, needed_columns

    columns = column_names(path)
    wanted = needed_columns(formula)
    for name in wanted:
        if name not in columns:
            raise DataError(f"{path}: --formula reads column {name!r}, which is not in the file; "
                            f"the columns are {', '.join(columns)}")
    table = read_table(path, wanted, text=wanted, na=na)
    # numbers (NaN for a blank) or level texts ("" for a blank), by the plain columns' rule
    raw = raw_columns(table, wanted, categorical=[], source=str(path))
    for name, values in raw.items():
        if values.dtype == object:
            continue
        whole = np.isfinite(values).all() and (values == np.round(values)).all() \
            and np.abs(values).max(initial=0) < 2**53
        raw[name] = values.astype(np.int64) if whole else values  # 1, 2: as pandas reads them
    # 1. Rows whose response is blank: dropped (counted), or refused.
    response = needed_columns(formula, response_only=True)
    blank = np.zeros(len(next(iter(raw.values()))), dtype=bool)
    for name in response:
        if raw[name].dtype == object:
            raise DataError(f"{path}: the response's column {name!r} holds text; a response "
                            "is numbers")
        blank |= np.isnan(raw[name]) if raw[name].dtype.kind == "f" else False
    file_rows = None
    if blank.any():
        if missing_target == "error":
            r = int(np.flatnonzero(blank)[0])
            raise DataError(f"{path}: row {r + 1}: the response is blank; drop the row (or use "
                            "--missing-target drop)")
        file_rows = np.flatnonzero(~blank)
        raw = {k: v[~blank] for k, v in raw.items()}
    n = len(next(iter(raw.values())))
    train_idx, val_idx = train_idx_of(n)

    def row(r: int) -> int:  # the data row in the file (blank responses were left out)
        return int(r if file_rows is None else file_rows[r]) + 1

    # 2. Blank numbers in the terms' columns: --impute's value from the training rows (every
    #    numeric column gets one, as plain columns do: a blank may come at prediction time).
    fills: dict[str, float] = {}
    for name, values in raw.items():
        if name in response or values.dtype == object:
            continue
        if impute is None and not (values.dtype.kind == "f" and np.isnan(values).any()):
            continue
        values = values.astype(np.float64)
        if impute is None:
            r = int(np.flatnonzero(np.isnan(values))[0])
            raise DataError(f"{path}: row {row(r)}, column {name!r}: missing value; pass "
                            "--impute mean|median|most-frequent|constant:V to fill the column "
                            "before the formula reads it")
        observed = values[train_idx][~np.isnan(values[train_idx])]
        if not len(observed) and not impute.startswith("constant:"):
            raise DataError(f"{path}: column {name!r} has no number in the training rows to "
                            f"learn --impute {impute} from")
        fills[name] = impute_fill(impute, observed)
        if np.isnan(values).any():
            raw[name] = np.where(np.isnan(values), fills[name], values)
    spec, _, patsy_design = learn(formula, {k: v[train_idx] for k, v in raw.items()})
    spec.fills, spec.unknown = fills or None, unknown
    spec.check_unknown()
    spec.ranges = {k: [float(v[train_idx].min()), float(v[train_idx].max())]
                   for k, v in raw.items() if v.dtype != object and k != spec.response}
    y = spec.response_values(raw)
    if not np.isfinite(y).all():
        r = int(np.flatnonzero(~np.isfinite(y))[0])
        raise DataError(f"{path}: row {row(r)}: the response {spec.response} is not a finite "
                        "number there (outside a function's domain, e.g. np.log of 0)")
    X = spec.design(raw)
    mine = X[train_idx]
    if mine.shape != patsy_design.shape or not np.allclose(mine, patsy_design, rtol=1e-9,
                                                           atol=1e-12, equal_nan=True):
        raise DataError(f"--formula {formula!r}: the compiled design differs from patsy's on "
                        "the training rows; please report this formula")
    if not np.isfinite(X).all():
        r, c = np.argwhere(~np.isfinite(X))[0]
        raise DataError(f"{path}: row {row(r)}: the formula's column {spec.names[c]!r} is not a "
                        "finite number there (a level not seen in the training rows, or "
                        "outside a function's domain, e.g. np.log of 0)")
    data = TrainingData(X, y.reshape(-1, 1), spec.names, [spec.response], str(path),
                        columns=spec.column_specs(), formula=spec, dropped=int(blank.sum()),
                        file_rows=file_rows,
                        warnings=[dropped_message(int(blank.sum()), [spec.response])]
                        if blank.any() else [])
    return data, train_idx, val_idx
