"""Reading numeric tables from CSV, Parquet, NPY and NPZ files, with errors that say where.

Both sides use this: the trainer to load training data, the runtime to read rows to predict.
A table is read into a ``pyarrow.Table`` (so id columns may be text), then the columns a model
needs are turned into one float matrix by :func:`to_matrix`, which names the row and column of
the first cell that is not a finite number.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from serve.errors import DataError

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz",
            ".jsonl": "jsonl", ".ndjson": "jsonl"}


def file_format(path: str | Path, *, allowed: Sequence[str] | None = None) -> str:
    """The format of ``path`` by extension, or a DataError naming the ones that are accepted."""
    fmt = SUFFIXES.get(Path(path).suffix.lower())
    ok = sorted({s for s, f in SUFFIXES.items() if allowed is None or f in allowed})
    if fmt is None or (allowed is not None and fmt not in allowed):
        raise DataError(f"{path}: unknown file type {Path(path).suffix or '(none)'!r}; "
                        f"use one of {', '.join(ok)}")
    return fmt


def read_table(path: str | Path) -> pa.Table:
    """Read a whole data file into a pyarrow Table (CSV with a header, Parquet, NPY, NPZ)."""
    path = Path(path)
    fmt = file_format(path, allowed=("csv", "parquet", "npy", "npz"))
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    table = {"csv": _read_csv, "parquet": _read_parquet, "npy": _read_npy, "npz": _read_npz}[fmt](path)
    if table.num_columns == 0:
        raise DataError(f"{path}: no columns")
    if table.num_rows == 0:
        raise DataError(f"{path}: has a header but no data rows")
    return table


def csv_header(path: Path) -> list[str]:
    """The column names on the first line of a CSV file."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            header = next(csv.reader(f))
        except StopIteration:
            raise DataError(f"{path}: file is empty") from None
    if not header or all(not h.strip() for h in header):
        raise DataError(f"{path}: the first line must be a header of column names")
    return header


def csv_options(header: Sequence[str], *, as_text: bool = False) -> pacsv.ConvertOptions:
    """Conversion options: only empty cells are nulls (reported as missing); "nan" parses as NaN
    and "NA" as text, so each gets its own message."""
    types = {name: pa.string() for name in header} if as_text else None
    return pacsv.ConvertOptions(column_types=types, null_values=[""],
                                strings_can_be_null=not as_text,
                                quoted_strings_can_be_null=not as_text)


def _read_csv(path: Path) -> pa.Table:
    header = csv_header(path)
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(f"{path}: column {dup!r} appears twice in the header")
    try:
        return pacsv.read_csv(path, convert_options=csv_options(header))
    except pa.ArrowInvalid as e:
        # pyarrow guessed a column's type from the first block and a later cell broke it, or a
        # line has the wrong number of fields: say where in our own words.
        raise _csv_error(path, header, e) from None


_ROW_WIDTH = re.compile(r"Expected (\d+) columns, got (\d+)")


def _csv_error(path: Path, header: list[str], err: Exception) -> DataError:
    msg = str(err)
    if _ROW_WIDTH.search(msg):
        return _locate_ragged_line(path, len(header)) or DataError(f"{path}: {msg.splitlines()[0]}")
    table = pacsv.read_csv(path, convert_options=csv_options(header, as_text=True))
    try:
        to_matrix(table, [c for c in header if c], source=path)
    except DataError as located:
        return located
    return DataError(f"{path}: {msg.splitlines()[0]}")


def _locate_ragged_line(path: Path, width: int) -> DataError | None:
    with open(path, newline="", encoding="utf-8-sig") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if row and len(row) != width:
                return DataError(f"{path}: line {line_no} has {len(row)} fields but the header "
                                 f"has {width}")
    return None


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def _load_numpy(path: Path):
    try:
        return np.load(path, allow_pickle=False)  # never unpickle anything from a data file
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{path}: holds Python objects; only numeric arrays are accepted") from None
        raise DataError(f"{path}: not a readable NumPy file ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable NumPy file ({e})") from None


def _read_npy(path: Path) -> pa.Table:
    return matrix_table(_load_numpy(path), None, path)


def _read_npz(path: Path) -> pa.Table:
    """An .npz holds either ``X`` and ``y``/``Y`` (optionally ``feature_names``/``target_names``)
    or a single 2-D array read like an .npy file."""
    with _load_numpy(path) as z:
        keys = set(z.files)
        if "X" in keys and ({"y", "Y"} & keys):
            X = np.asarray(z["X"])
            Y = np.asarray(z["y"] if "y" in keys else z["Y"])
            X = X.reshape(-1, 1) if X.ndim == 1 else X
            Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
            if X.shape[0] != Y.shape[0]:
                raise DataError(f"{path}: X has {X.shape[0]} rows but y has {Y.shape[0]}")
            fnames = _names(z, "feature_names", X.shape[1], "x", path)
            tnames = _names(z, "target_names", Y.shape[1], "y", path)
            return matrix_table(np.hstack([X, Y]) if X.size or Y.size else X, fnames + tnames, path)
        arrays = [k for k in z.files if k not in ("feature_names", "target_names")]
        if len(arrays) != 1:
            raise DataError(f"{path}: expected arrays 'X' and 'y', or a single 2-D array; "
                            f"found {sorted(keys)}")
        return matrix_table(z[arrays[0]], None, path)


def _names(z, key: str, n: int, prefix: str, path: Path) -> list[str]:
    if key not in z.files:
        return [f"{prefix}{i}" for i in range(n)] if n > 1 else [prefix]
    names = [str(s) for s in np.asarray(z[key]).ravel()]
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
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{path}: array dtype {arr.dtype} is not numeric")
    names = list(names) if names is not None else [f"c{i}" for i in range(arr.shape[1])]
    return pa.table({n: arr[:, i] for i, n in enumerate(names)})


def to_matrix(table: pa.Table | pa.RecordBatch, columns: Sequence[str], *, source: str | Path,
              dtype: np.dtype | type = np.float64, row_offset: int = 0) -> np.ndarray:
    """The named columns as one C-ordered ``(rows, len(columns))`` matrix of ``dtype``.

    Raises a DataError naming the source, the 1-based data row and the column of the first cell
    that is missing, not a number, NaN or infinite. ``row_offset`` is the number of data rows
    before this table, for files read in chunks.
    """
    n = table.num_rows
    out = np.empty((n, len(columns)), dtype=dtype)
    for j, name in enumerate(columns):
        col = table.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        out[:, j] = _column_values(col, name, source, row_offset)
    if bad := first_non_finite(out):
        r, j, what = bad
        raise DataError(f"{source}: row {row_offset + r + 1}, column {columns[j]!r}: {what} is not "
                        "allowed (clean or drop the row)")
    return out


def first_non_finite(values: np.ndarray) -> tuple[int, int, str] | None:
    """``(row, column, "NaN" | "inf" | "-inf")`` of the first cell of a 2-D array that is not a
    finite number, or None when all are (the common case costs one ``isfinite`` pass)."""
    if np.isfinite(values).all():
        return None
    r, c = np.argwhere(~np.isfinite(values))[0]
    v = values[r, c]
    return int(r), int(c), "NaN" if np.isnan(v) else ("inf" if v > 0 else "-inf")


def _column_values(col: pa.Array, name: str, source: str | Path, row_offset: int) -> np.ndarray:
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) \
            or pa.types.is_decimal(t) or pa.types.is_null(t):
        if col.null_count:
            r = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{source}: row {row_offset + r + 1}, column {name!r}: missing value")
        if pa.types.is_decimal(t) or pa.types.is_boolean(t):
            col = col.cast(pa.float64())
        return col.to_numpy(zero_copy_only=False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        values = col.to_pylist()
        for r, v in enumerate(values):
            try:
                float(v)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                shown = "missing value" if v is None or not v.strip() else f"{v!r} is not a number"
                raise DataError(f"{source}: row {row_offset + r + 1}, column {name!r}: {shown}") \
                    from None
        return np.array(values, dtype=np.float64)
    raise DataError(f"{source}: column {name!r} has type {t}, not numbers")
