"""Training data: pick features and targets from a data file, and split off a validation set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve.errors import DataError
from serve.tables import to_matrix
from trainer.files import column_names, read_table


@dataclass
class TrainingData:
    """Features ``X`` (rows, n_features) and targets ``Y`` (rows, n_targets), float64, with names."""

    X: np.ndarray
    Y: np.ndarray
    feature_names: list[str]
    target_names: list[str]
    path: str

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]


def load_training_data(path: str | Path, *, targets: Sequence[str] = (),
                       features: Sequence[str] = (), exclude: Sequence[str] = (),
                       progress: Callable[[int], None] | None = None) -> TrainingData:
    """Read ``path`` and select columns: targets default to the last column, features to the
    rest but ``exclude`` (ids, text)."""
    columns = column_names(path)
    targets = list(targets) or [columns[-1]]
    _check_names(path, "target", targets, columns)
    _check_names(path, "excluded", exclude, columns)
    left_out = set(targets) | set(exclude)
    features = list(features) or [c for c in columns if c not in left_out]
    _check_names(path, "feature", features, columns)
    if both := sorted(set(features) & set(targets)):
        raise DataError(f"{path}: column {both[0]!r} is both a feature and a target")
    if not features:
        raise DataError(f"{path}: no feature columns left besides the target(s) {targets}")
    table = read_table(path, features + targets, progress=progress)
    X = to_matrix(table, features, source=path)
    Y = to_matrix(table, targets, source=path)
    return TrainingData(X, Y, features, targets, str(path))


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
