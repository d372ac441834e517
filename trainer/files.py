"""Whole training files read into tables: the columns of a file, and all of its rows.

Training-only (prediction streams files in chunks through :mod:`serve.core.tables` and
:mod:`serve.batch.files`): CSV goes through the same streaming reader and number rule as prediction,
Parquet keeps its stored types for :func:`serve.core.tables.to_matrix`, ``.npy`` is a matrix with
columns ``c0, c1, ...`` and ``.npz`` holds ``X`` and ``y`` (with optional names) or one array.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serve.core.errors import DataError, first_line
from serve.core.formats import file_format
from serve.core.tables import (
    check_readable,
    check_unique,
    csv_batches,
    csv_header,
    load_npy,
    na_as_null,
    npy_header,
)


def column_names(path: str | Path) -> list[str]:
    """The columns of a data file, read from its header alone."""
    path = Path(path)
    fmt = file_format(path, allowed=("csv", "parquet", "npy", "npz"))
    check_readable(path)
    if fmt == "csv":
        with open(path, "rb") as f:
            return csv_header(f, path)[0]
    if fmt == "parquet":
        names = _parquet_file(path).schema_arrow.names
        check_unique(names, path)
        return names
    return read_table(path).column_names  # NPY/NPZ: the header decides the names


def read_table(path: str | Path, columns: Sequence[str] | None = None, *,
               text: Sequence[str] = (), blanks: Sequence[str] = (), na: Sequence[str] = (),
               progress: Callable[[int], None] | None = None) -> pa.Table:
    """Read a data file into a Table: all columns, or just ``columns`` (CSV reads those as
    numbers by the one rule, but ``text`` ones as strings; other formats keep their stored
    types; a blank is allowed in ``blanks``; a text cell in ``na`` is a blank, null).
    ``progress(rows read so far)`` is called as a CSV file streams in."""
    path = Path(path)
    fmt = file_format(path, allowed=("csv", "parquet", "npy", "npz"))
    check_readable(path)
    if fmt == "csv":
        if columns is None:
            columns = column_names(path)
        batches = []
        numbers = [c for c in columns if c not in set(text)]
        for batch, first in csv_batches(path, numbers, text=list(text), blanks=blanks, na=na):
            batches.append(batch)
            if progress is not None:
                progress(first + batch.num_rows)
        if not batches:
            raise DataError(f"{path}: has a header but no data rows")
        table = pa.Table.from_batches(batches)
    elif fmt == "parquet":
        pf = _parquet_file(path)
        check_unique(pf.schema_arrow.names, path)
        try:
            table = pf.read(columns=list(columns) if columns is not None else None)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: not a readable Parquet file ({first_line(e)})") from None
        table = na_as_null(table, na)
    else:
        table = _read_npy(path) if fmt == "npy" else _read_npz(path)
        if columns is not None:
            table = table.select(list(columns))
    if table is None or table.num_columns == 0:
        raise DataError(f"{path}: no columns")
    if table.num_rows == 0:
        raise DataError(f"{path}: has a header but no data rows")
    return table


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({first_line(e)})") from None


def _read_npy(path: Path) -> pa.Table:
    return matrix_table(load_npy(path), None, path)


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (a zip of ``.npy`` members), each header checked first."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                key = info.filename.removesuffix(".npy")
                with z.open(info) as f:  # names may be text; data is checked as numbers later
                    npy_header(f, info.file_size, f"{path}[{key}]", text_ok=True)
                with z.open(info) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({first_line(e)})") from None
    return arrays


def _read_npz(path: Path) -> pa.Table:
    """An .npz holds either ``X`` and ``y``/``Y`` (optionally ``feature_names``/``target_names``)
    or a single 2-D array read like an .npy file."""
    z = _npz_arrays(path)
    keys = set(z)
    if "X" in keys and ({"y", "Y"} & keys):
        X, Y = (_as_2d(z[k], path, k) for k in ("X", "y" if "y" in keys else "Y"))
        if X.shape[0] != Y.shape[0]:
            raise DataError(f"{path}: X has {X.shape[0]} rows but y has {Y.shape[0]}")
        fnames = _names(z, "feature_names", X.shape[1], "x", path)
        tnames = _names(z, "target_names", Y.shape[1], "y", path)
        check_unique(fnames + tnames, path, "name (in feature_names and target_names)")
        return matrix_table(np.hstack([X, Y]), fnames + tnames, path)
    arrays = [k for k in z if k not in ("feature_names", "target_names")]
    if len(arrays) != 1:
        raise DataError(f"{path}: expected arrays 'X' and 'y', or a single 2-D array; "
                        f"found {sorted(keys)}")
    return matrix_table(z[arrays[0]], None, path)


def _as_2d(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    if arr.ndim == 1:
        return arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DataError(f"{path}: {key} has shape {arr.shape}; expected 2-D (rows x columns)")
    return arr


def _names(z: dict[str, np.ndarray], key: str, n: int, prefix: str, path: Path) -> list[str]:
    if key not in z:
        return [f"{prefix}{i}" for i in range(n)] if n > 1 else [prefix]
    arr = np.asarray(z[key])
    if arr.dtype.kind not in "US":
        raise DataError(f"{path}: {key} must be text, not {arr.dtype}")
    names = [str(s) for s in arr.ravel()]
    if len(names) != n:
        raise DataError(f"{path}: {key} has {len(names)} names for {n} columns")
    return names


def matrix_table(arr: np.ndarray, names: Sequence[str] | None, path: str | Path) -> pa.Table:
    """A 2-D numeric array as a Table; columns are named ``c0, c1, ...`` unless given names."""
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array (rows x columns), got shape {arr.shape}")
    if arr.dtype.kind == "c":
        raise DataError(f"{path}: holds complex numbers; only real numbers are accepted")
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{path}: array dtype {arr.dtype} is not numeric")
    names = list(names) if names is not None else [f"c{i}" for i in range(arr.shape[1])]
    return pa.table({n: arr[:, i] for i, n in enumerate(names)})
