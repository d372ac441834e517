"""Synthetic data like the tutorial's ``make_dataset``: x ~ N(0, 5²), y = 23.4·x + N(3, 10²).

Generalised to D features and T targets with known coefficients, written to a file so it can be
reused; the true coefficients go to ``<file>.truth.json`` beside it.

    linreg-synth data/synth.csv --samples 1000 --features 8 --targets 2 --seed 0
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from serve.core.atomic import output_file
from serve.core.errors import DataError, OutputError
from serve.core.formats import file_format
from serve.core.tables import csv_write_options


@dataclass
class SyntheticData:
    """Rows ``X`` and ``Y`` and the coefficients that made them (before noise)."""

    X: np.ndarray
    Y: np.ndarray
    coef: np.ndarray  # (n_targets, n_features)
    intercept: np.ndarray  # (n_targets,)
    feature_names: list[str]
    target_names: list[str]


def make_dataset(n_samples: int, n_features: int = 1, n_targets: int = 1, *, seed: int = 0,
                 x_scale: float = 5.0, noise: float = 10.0, intercept: float = 3.0) -> SyntheticData:
    """The tutorial's generator; the first coefficient is 23.4, the others are seeded draws."""
    if n_samples < 1 or n_features < 1 or n_targets < 1:
        raise DataError("--samples, --features and --targets must be at least 1")
    _check_memory(n_samples, n_features + n_targets)
    rng = np.random.default_rng(seed)
    coef = np.round(rng.uniform(-30, 30, size=(n_targets, n_features)), 1)
    coef[0, 0] = 23.4
    intercepts = np.full(n_targets, intercept) + np.arange(n_targets)
    X = rng.normal(0.0, x_scale, size=(n_samples, n_features))
    Y = X @ coef.T + intercepts + rng.normal(0.0, noise, size=(n_samples, n_targets))
    fnames = ["x"] if n_features == 1 else [f"x{i}" for i in range(n_features)]
    tnames = ["y"] if n_targets == 1 else [f"y{i}" for i in range(n_targets)]
    return SyntheticData(X, Y, coef, intercepts, fnames, tnames)


def _check_memory(rows: int, columns: int) -> None:
    """Refuse, before allocating, a data set that cannot fit in this machine's memory."""
    need = rows * columns * 8 * 3  # X and Y, their stacked copy, and the table being written
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > total:
        raise DataError(f"--samples {rows:,} x {columns} columns needs about {need / 2**30:,.1f} "
                        f"GiB of memory; this machine has {total / 2**30:,.1f} GiB")


def write_dataset(data: SyntheticData, path: str | Path, *, force: bool = False) -> Path:
    """Write the rows as CSV, Parquet, NPY (features then targets) or NPZ (X, y, names), and
    the truth beside them; existing files are replaced only with ``force``."""
    path = Path(path)
    fmt = file_format(path, allowed=("csv", "parquet", "npy", "npz"))
    names = data.feature_names + data.target_names
    both = np.hstack([data.X, data.Y])
    truth_path = path.with_name(path.name + ".truth.json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # `make demo` writes into a new data/
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    with output_file(path, force=force) as f:
        if fmt == "csv":
            pacsv.write_csv(pa.table({n: both[:, i] for i, n in enumerate(names)}), f,
                            write_options=csv_write_options(names))
        elif fmt == "parquet":
            pq.write_table(pa.table({n: both[:, i] for i, n in enumerate(names)}), f)
        elif fmt == "npy":
            np.save(f, both)
        else:
            np.savez(f, X=data.X, y=data.Y, feature_names=np.array(data.feature_names),
                     target_names=np.array(data.target_names))
    truth = {"coef": data.coef.tolist(), "intercept": data.intercept.tolist(),
             "feature_names": data.feature_names, "target_names": data.target_names,
             "rows": int(data.X.shape[0])}
    with output_file(truth_path, force=True) as f:  # it belongs to the data file just written
        f.write((json.dumps(truth, indent=2) + "\n").encode())
    return path
