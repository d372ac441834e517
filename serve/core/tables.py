"""Reading numeric tables from CSV, Parquet and NPY, with errors that say where.

Both sides use this, so training and prediction read every cell the same way:

- Cells follow the one number rule of :mod:`serve.core.numbers`.
- Column names must be unique; text must be UTF-8; ``.npy`` headers are checked against the
  file's size before anything is allocated, and nothing is ever unpickled.
- Every error is one :class:`DataError` line naming the file, the 1-based data row and the
  column where there is one.

CSV is read by one streaming reader, :func:`csv_batches` (files and stdin alike, memory bounded
by the block size); training reads the same batches and concatenates them.
"""

from __future__ import annotations

import csv
import io
import math
import os
import stat
import sys
from collections import Counter, deque
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from serve.core.errors import CellError, DataError, first_line
from serve.core.numbers import BadCell, all_numbers, first_non_finite, non_finite_message, parse_numbers

CSV_MAX_BLOCK = 1 << 20
NPY_MAX_HEADER = 1 << 16
STDIN = "<stdin>"


def check_readable(path: str | Path) -> None:
    """Raise a DataError unless ``path`` is a non-empty regular file this process can read."""
    try:
        st = os.stat(path)
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a data file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file; to stream from a pipe, give - and use "
                        "standard input")
    if st.st_size == 0:
        raise DataError(f"{path}: file is empty")


def check_unique(names: Sequence[str], source: str | Path, what: str = "column") -> None:
    """Column names must be unique: a repeated name would make 'the column x' ambiguous."""
    if len(set(names)) != len(names):
        dup = next(n for n, c in Counter(names).items() if c > 1)
        raise DataError(f"{source}: {what} {dup!r} appears twice; column names must be unique")


def check_columns(source: str | Path, present: Sequence[str], features: Sequence[str],
                  keep: Sequence[str] = ()) -> None:
    """The model's feature columns and the ``--keep`` columns must all be in ``present``."""
    have = set(present)
    if missing := [f for f in features if f not in have]:
        raise DataError(f"{source}: missing feature column(s) {_listed(missing)}; the model "
                        f"needs {_listed(features)}")
    if unknown := [k for k in keep if k not in have]:
        raise DataError(f"{source}: --keep {unknown[0]}: no such column; the columns are "
                        f"{_listed(present)}")


def _listed(names: Sequence[str], most: int = 20) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most
                                      else "")


# ---------------------------------------------------------------------------------- numbers

def to_matrix(table: pa.Table | pa.RecordBatch, columns: Sequence[str], *, source: str | Path,
              dtype: np.dtype | type = np.float64, row_offset: int = 0,
              finite: bool = True, blanks: bool | Collection[str] = False,
              order: str = "C") -> np.ndarray:
    """The named columns as one ``(rows, len(columns))`` matrix of ``dtype``, C-ordered, or
    column-major with ``order="F"`` (each column then one contiguous copy: what a streamed QR
    wants).

    Raises a DataError naming the source, the 1-based data row and the column of the first cell
    that is missing or not a number, and (with ``finite``) NaN or infinite. ``row_offset`` is
    the number of data rows before this table, for files read in chunks. Prediction passes
    ``finite=False``: the model's output check finds NaN and inf in one pass, then names them.
    ``blanks`` (True, or the names of the columns it applies to): a missing cell is NaN, not an
    error (a tabular model's numeric columns; a target whose blank rows are dropped); with
    ``finite``, only the NaN that is written in a cell is refused.
    """
    n = table.num_rows
    out = np.empty((n, len(columns)), dtype=dtype, order=order)
    blank_cells = []  # (column, rows) of the blanks read as NaN, when ``finite`` checks
    for j, name in enumerate(columns):
        col = table.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        may_be_blank = blanks if isinstance(blanks, bool) else name in blanks
        try:
            values = _column_values(col, name, source, may_be_blank)
        except BadCell as bad:
            raise CellError(f"{source}: row {row_offset + bad.row + 1}, column {name!r}: "
                            f"{bad.describe()}", name) from None
        with np.errstate(over="ignore"):  # beyond the dtype's range becomes inf, named below
            out[:, j] = values
        if finite and may_be_blank and (rows := _blank_rows(col)) is not None:
            blank_cells.append((j, rows))
    if finite:
        checked = out
        if blank_cells:
            checked = out.copy()
            for j, rows in blank_cells:
                checked[rows, j] = 0.0
        if message := non_finite_message(checked, columns, source=source,
                                         row_offset=row_offset):
            raise CellError(message, columns[first_non_finite(checked)[1]])
    return out


def na_as_null(table: pa.Table | pa.RecordBatch, na: Collection[str]) -> pa.Table | pa.RecordBatch:
    """A table (or batch) whose text cells equal to an NA token are null, as the CSV reader
    reads them (for Parquet, whose text cells are stored as written)."""
    from serve.core.columns import na_to_null

    if not na:
        return table
    arrays = [na_to_null(c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c, na)
              for c in table.columns]
    return type(table).from_arrays(arrays, names=table.column_names)


def _blank_rows(col: pa.Array) -> np.ndarray | None:
    """Where a column's cells are blank (null, or text that is empty once trimmed), or None."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        import pyarrow.compute as pc

        empty = pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(col), ""))
        rows = np.flatnonzero(pc.fill_null(empty, True).to_numpy(zero_copy_only=False))
    elif col.null_count:
        rows = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
    else:
        return None
    return rows if len(rows) else None


def _column_values(col: pa.Array, name: str, source: str | Path, blanks: bool) -> np.ndarray:
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) \
            or pa.types.is_decimal(t) or pa.types.is_null(t):
        if col.null_count and not blanks:
            raise BadCell(int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0]),
                           None)
        if col.null_count:
            import pyarrow.compute as pc

            col = pc.fill_null(col.cast(pa.float64(), safe=False), np.nan)
        if pa.types.is_decimal(t) or pa.types.is_boolean(t) or pa.types.is_integer(t):
            col = col.cast(pa.float64(), safe=False)
        return col.to_numpy(zero_copy_only=False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return parse_numbers(col, blanks=blanks)
    raise DataError(f"{source}: column {name!r} has type {t}, not numbers")


# ---------------------------------------------------------------------------------- tables

def estimate_rows(path: Path) -> int:
    """Rows in the file, for a progress bar: exact for Parquet and NPY, estimated for text from
    its first 64 KiB; 0 when it cannot tell (the reader will then say what is wrong)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        with open(path, "rb") as f:
            if suffix == ".npy":
                shape = npy_header(f, os.fstat(f.fileno()).st_size, path)[0]
                return int(shape[0]) if shape else 1
            sample = f.read(1 << 16)
        return max(1, path.stat().st_size * max(1, sample.count(b"\n")) // max(1, len(sample)))
    except (DataError, pa.ArrowException, OSError):
        return 0


# ---------------------------------------------------------------------------------- CSV

def csv_header(stream: BinaryIO, source: str | Path) -> tuple[list[str], bytes]:
    """The column names on the first line of a CSV stream, and that line's bytes."""
    line = stream.readline()
    if not line:
        raise DataError(f"{source}: file is empty")
    if line.startswith(b"\x1f\x8b"):
        raise DataError(f"{source}: is gzip-compressed; decompress it first (gunzip)")
    if line.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{source}: is UTF-16 text; save it as UTF-8")
    try:
        text = line.decode("utf-8-sig")
        header = next(csv.reader([text.rstrip("\r\n")]), [])
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: line 1 is not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
                        "save the file as UTF-8") from None
    except csv.Error as e:
        raise DataError(f"{source}: line 1: {e}") from None
    if not header or all(not h.strip() for h in header):
        raise DataError(f"{source}: the first line must be a header of column names")
    if text.lstrip().startswith(("{", "[")):
        raise DataError(f"{source}: the first line looks like JSON, not a CSV header; for one "
                        "JSON object per line use --input-format jsonl (or a .jsonl file)")
    if all_numbers(header):
        raise DataError(f"{source}: the first line holds numbers, not column names; add a "
                        "header row naming the columns (e.g. " + ",".join(
                            f"x{i}" for i in range(min(len(header), 3))) + "...)")
    check_unique(header, source)
    return header, line


class _Tape:
    """A byte stream read through for pyarrow that remembers the lines it has not yet seen
    delivered as rows, so a bad cell is found by its row even on a pipe (error path only)."""

    def __init__(self, raw: BinaryIO, header_line: bytes) -> None:
        self.raw = raw
        self.chunks: deque[tuple[bytes, int]] = deque([(header_line, 1)])
        self.lines_before = 0  # newlines before chunks[0]
        self.pending = header_line  # pyarrow reads the header line first, from here
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        data = self.raw.read(n)
        if data:
            self.chunks.append((data, data.count(b"\n")))
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def forget_before(self, line: int) -> None:
        """Drop what lies wholly before 0-based ``line``."""
        while len(self.chunks) > 1 and self.lines_before + self.chunks[0][1] < line:
            self.lines_before += self.chunks.popleft()[1]

    def since(self, line: int) -> bytes:
        """The bytes from the start of 0-based ``line`` to what has been read so far."""
        blob = b"".join(c for c, _ in self.chunks)
        pos = 0
        for _ in range(line - self.lines_before):
            pos = blob.find(b"\n", pos) + 1
            if pos == 0:
                return b""
        return blob[pos:]


def csv_batches(source: str | Path | BinaryIO, columns: Sequence[str], *,
                keep: Sequence[str] = (), text: Sequence[str] = (),
                blanks: bool | Collection[str] = False, na: Collection[str] = (),
                block_size: int = CSV_MAX_BLOCK,
                name: str | None = None) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Stream CSV as record batches of ``columns`` (as float64, by the one number rule),
    ``text`` (strings as written, blanks null: a tabular model's raw columns) and ``keep``
    (types inferred), each with its first 0-based data row. ``source``: a path, ``-`` for
    stdin, or a binary stream (an HTTP body) shown in errors as ``name``. ``blanks`` (True,
    or the columns it applies to): an empty number cell is allowed (null), as a tabular model
    takes it. A cell whose text is one of ``na`` (NA tokens: ``NA``, ``N/A``, ...) is read as
    an empty one."""
    if hasattr(source, "read"):
        raw, name = source, name or "<stream>"
    elif str(source) == "-":
        raw, name = sys.stdin.buffer, STDIN
    else:
        raw, name = open(source, "rb"), str(source)  # noqa: SIM115
    is_file = not hasattr(source, "read") and str(source) != "-"
    reader = None
    try:
        header, line = csv_header(raw, name)
        check_columns(name, header, [*columns, *text], keep)
        if not line.endswith(b"\n"):  # a header with no final newline is the whole file
            return
        block = max(block_size, min(4 * len(line), 64 << 20))  # a wide header: wide rows
        # A file is read by pyarrow natively (its own read-ahead thread) and re-read only to
        # name a bad cell; a pipe or body goes through a tape that keeps the unread lines.
        tape = None if is_file else _Tape(raw, line)
        wanted = list(dict.fromkeys([*columns, *text, *keep]))
        types = {c: pa.float64() for c in columns} | {c: pa.string() for c in text}
        convert = pacsv.ConvertOptions(column_types=types,
                                       include_columns=wanted, null_values=["", *na],
                                       strings_can_be_null=True)
        first = 0
        while True:
            try:
                if reader is None:
                    reader = pacsv.open_csv(str(source) if is_file else tape,
                                            read_options=pacsv.ReadOptions(block_size=block),
                                            convert_options=convert)
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as e:
                since = tape.since(first + 1) if tape is not None else \
                    _file_lines_from(Path(source), first + 1, 8 * block)
                raise _csv_error(name, header, columns, since, first, block, e,
                                 blanks, na) from None
            yield batch, first
            first += batch.num_rows
            if tape is not None:
                tape.forget_before(first + 1)
    finally:
        if reader is not None:  # stop pyarrow's read-ahead thread now, not at interpreter exit
            reader.close()
        if is_file:
            raw.close()


def _file_lines_from(path: Path, line: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``path`` from the start of 0-based ``line`` (error path)."""
    with open(path, "rb") as f:
        seen = 0
        while True:
            block = f.read(1 << 20)
            if not block:
                return b""
            count = block.count(b"\n")
            if seen + count >= line:
                pos = 0
                for _ in range(line - seen):
                    pos = block.find(b"\n", pos) + 1
                return (block[pos:] + f.read(limit))[:limit]
            seen += count


def _csv_error(name: str, header: list[str], columns: Sequence[str], blob: bytes, first: int,
               block: int, err: Exception, blanks: bool | Collection[str] = False,
               na: Collection[str] = ()) -> DataError:
    """The first bad cell or line in ``blob``, the text from data row ``first + 1`` on."""
    msg = first_line(err)
    if "straddl" in msg:
        return DataError(f"{name}: a line after row {first} is longer than {block:,} bytes; "
                         "lines that long are not supported")
    # The blob may end inside a line (a block read ahead): look at its complete lines first,
    # then, if nothing is found there, at all of it (the file's last line has no newline).
    complete = blob[:blob.rfind(b"\n") + 1]
    for text in dict.fromkeys([complete, blob]):
        found = _locate(name, header, columns, text, first, block, blanks, na)
        if found is not None:
            return found
    return DataError(f"{name}: after row {first}: {msg}")


def _locate(name: str, header: list[str], columns: Sequence[str], blob: bytes, first: int,
            block: int, blanks: bool | Collection[str],
            na: Collection[str]) -> DataError | None:
    """The earliest bad line or cell of ``blob``: not UTF-8, a wrong field count, or a cell
    that is missing or not a number (by :func:`to_matrix`); None when all of it reads."""
    try:
        lines = blob.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line_no = first + 2 + blob[:e.start].count(b"\n")
        return DataError(f"{name}: line {line_no} is not UTF-8 text (byte "
                         f"0x{blob[e.start]:02x}); save the file as UTF-8")
    ragged = next((i for i, row in enumerate(csv.reader(lines))
                   if row and len(row) != len(header)), None)
    cells = "\n".join(lines[:ragged]).encode() + b"\n"
    try:
        table = pacsv.read_csv(io.BytesIO(",".join(_quoted(h) for h in header).encode() + b"\n"
                                          + cells),
                               read_options=pacsv.ReadOptions(block_size=max(block,
                                                                             len(cells) + 1)),
                               convert_options=pacsv.ConvertOptions(
                                   column_types={c: pa.string() for c in columns},
                                   include_columns=list(columns),
                                   null_values=["", *na], strings_can_be_null=True))
        to_matrix(table, list(columns), source=name, row_offset=first, blanks=blanks)
    except DataError as located:
        return located
    except pa.ArrowException:
        pass
    if ragged is not None:
        row = next(r for i, r in enumerate(csv.reader(lines)) if i == ragged)
        return DataError(f"{name}: row {first + ragged + 1} has {len(row)} fields but the "
                         f"header has {len(header)}")
    return None


def csv_write_options(names: list[str]) -> pacsv.WriteOptions:
    """Plain header names (``y0,y1``, not ``"y0","y1"``) unless a name needs quotes."""
    plain = all(not set(n) & set(',"\r\n') for n in names)
    return pacsv.WriteOptions(quoting_header="none" if plain else "needed")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------------------------- NumPy

def npy_header(f: BinaryIO, size: int, source: str | Path, *,
               text_ok: bool = False) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Shape, dtype and Fortran order of an ``.npy`` stream of ``size`` bytes, checked before
    anything is allocated: numeric dtype (or text, with ``text_ok``), and exactly as many bytes
    as the header claims."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = reader(f, max_header_size=NPY_MAX_HEADER)
    except Exception as e:  # numpy parses the header text itself and may raise anything
        raise DataError(f"{source}: not a readable .npy array ({first_line(e)})") from None
    if dtype.hasobject:
        raise DataError(f"{source}: holds Python objects; only numeric arrays are accepted")
    if dtype.kind == "c":
        raise DataError(f"{source}: holds complex numbers; only real numbers are accepted")
    if dtype.kind not in "fiub" and not (text_ok and dtype.kind in "US"):
        raise DataError(f"{source}: array dtype {dtype} is not numeric")
    need = math.prod(shape) * dtype.itemsize
    have = size - f.tell()
    if need != have:
        raise DataError(f"{source}: the header says shape {shape} ({need:,} bytes of data) but "
                        f"the file holds {max(have, 0):,}; the file is truncated or damaged")
    return shape, dtype, fortran


def load_npy(path: str | Path, *, mmap: bool = False) -> np.ndarray:
    """An ``.npy`` file's array, its header checked first (see :func:`npy_header`)."""
    with open(path, "rb") as f:
        npy_header(f, os.fstat(f.fileno()).st_size, path)
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
