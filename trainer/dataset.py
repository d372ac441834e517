"""Training data as a dataset: one file, a folder, or a glob of Parquet or CSV files with one
schema, read in chunks of a bounded number of rows, so memory stays flat whatever the size.

    ds = Dataset.open("data/shards/")            # or "data/part-*.parquet", or "data/one.csv"
    for chunk in ds.chunks(ds.parts(), ["x0", "x1", "y"], batch_rows=65536):
        chunk.values                              # (rows, 3) float64
        chunk.file, chunk.first_row               # where the rows come from

Files and row groups come from pyarrow's dataset API (``pyarrow.dataset``): a **part** is one
Parquet row group or one CSV file, the unit each rank of a distributed run reads a disjoint share
of. Parquet parts are read by the dataset's fragments; CSV files by the runtime's streaming
reader, whose cell errors name the file, row and column. Every row keeps its place — (file,
row in file) — so a seeded hash of it picks validation rows the same way in every run and for
every number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serve.core.errors import DataError
from serve.core.formats import files_of, is_many
from serve.core.tables import na_as_null, to_matrix

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class Part:
    """One Parquet row group (``row_group``) or one whole CSV file (``row_group`` None)."""

    file: int  # index into Dataset.files
    row_group: int | None
    first_row: int  # the part's first row within its file
    rows: int | None  # known for Parquet; None for CSV (counted as it is read)


@dataclass
class Chunk:
    """Rows of one part: ``values`` (rows, columns) float64, from ``file`` at ``first_row``."""

    values: np.ndarray
    file: int
    first_row: int

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class RawChunk:
    """Rows of one part as read: ``table`` the raw feature columns (text as text, for the
    encoding), ``values`` the number columns (targets, weight) as float64."""

    table: Any
    values: np.ndarray
    file: int
    first_row: int

    def __len__(self) -> int:
        return len(self.values)


class Dataset:
    """Files of one format and one set of columns."""

    def __init__(self, files: list[Path], fmt: str, columns: list[str], shown: str,
                 na: Sequence[str] = ()) -> None:
        self.files, self.format, self.columns, self.shown = files, fmt, columns, shown
        self.na = tuple(na)  # text cells read as a blank (NA tokens), in every reader below
        self._fragments: list | None = None
        self.reads = 0  # passes started over the files (a streamed fit reports its count)

    @classmethod
    def open(cls, path: str | Path, *, na: Sequence[str] = ()) -> Dataset:
        """``path``: a Parquet or CSV file, a folder (its .parquet/.pq/.csv files) or a glob
        pattern, listed by :func:`serve.core.formats.files_of` as linreg-predict lists parts.
        A text cell in ``na`` (NA tokens) is read as a blank."""
        text = str(path)
        if is_many(text):
            files = files_of(text)
            if Path(text).is_dir():
                files = [f for f in files if f.suffix.lower() in SUFFIXES]
            if not files:
                raise DataError(f"{text}: no .parquet or .csv files in this folder"
                                if Path(text).is_dir() else f"{text}: no file matches this pattern")
        elif Path(text).is_file():
            files = [Path(text)]
        else:
            raise DataError(f"{text}: no such file or folder")
        formats = {SUFFIXES.get(f.suffix.lower()) for f in files}
        if None in formats:
            bad = next(f for f in files if f.suffix.lower() not in SUFFIXES)
            raise DataError(f"{bad}: a dataset is Parquet or CSV files; this one is neither")
        if len(formats) != 1:
            raise DataError(f"{text}: mixes Parquet and CSV files; a dataset has one format")
        fmt = formats.pop()
        columns = _columns(files[0], fmt)
        for f in files[1:]:
            other = _columns(f, fmt)
            if other != columns:
                missing = [c for c in columns if c not in other]
                extra = [c for c in other if c not in columns]
                what = (f"lacks {', '.join(missing)}" if missing else
                        f"adds {', '.join(extra)}" if extra else "orders the columns otherwise")
                raise DataError(f"{f}: its columns differ from {files[0]}'s ({what}); every file "
                                "of a dataset needs the same columns")
        return cls(files, fmt, columns, text, na)

    def parts(self) -> list[Part]:
        """Every part, in file order then row-group order."""
        if self.format == "csv":
            return [Part(i, None, 0, None) for i in range(len(self.files))]
        out = []
        for i, f in enumerate(self.files):
            meta = _parquet_metadata(f)
            first = 0
            for g in range(meta.num_row_groups):
                rows = meta.row_group(g).num_rows
                out.append(Part(i, g, first, rows))
                first += rows
        return out

    def shard(self, rank: int, world: int) -> list[Part]:
        """Rank ``rank``'s disjoint share of the parts (every ``world``-th, from ``rank``)."""
        return self.parts()[rank::world]

    def estimated_rows(self) -> int:
        """Rows in the dataset: exact for Parquet (its metadata), estimated for CSV."""
        if self.format == "parquet":
            return sum(p.rows or 0 for p in self.parts())
        from serve.core.tables import estimate_rows

        return sum(estimate_rows(f) for f in self.files)

    def chunks(self, parts: Sequence[Part], columns: Sequence[str], *,
               batch_rows: int, blanks: Sequence[str] = ()) -> Iterator[Chunk]:
        """The rows of ``parts``, as float64 chunks of at most ``batch_rows`` rows; a missing or
        non-numeric cell is a DataError naming the file, its row and the column (a blank in
        one of ``blanks`` is NaN instead)."""
        columns = list(columns)
        self.reads += 1
        for part in parts:
            path = self.files[part.file]
            if part.row_group is None:
                yield from self._csv_chunks(part, path, columns, batch_rows, blanks)
                continue
            row = part.first_row
            for batch in self._fragment(part.file).subset(row_group_ids=[part.row_group]) \
                    .to_batches(columns=columns, batch_size=batch_rows):
                if batch.num_rows:
                    values = to_matrix(na_as_null(batch, self.na), columns, source=path, row_offset=row,
                                       order="F", blanks=blanks)
                    yield Chunk(values, part.file, row)
                    row += batch.num_rows

    def has_text(self, columns: Sequence[str]) -> bool:
        """Whether a Parquet dataset stores one of ``columns`` as text (a CSV's types are
        known only by reading its cells)."""
        if self.format != "parquet":
            return False
        import pyarrow as pa

        schema = _parquet_metadata(self.files[0]).schema.to_arrow_schema()
        return any(not (pa.types.is_integer(t) or pa.types.is_floating(t)
                        or pa.types.is_boolean(t) or pa.types.is_decimal(t)
                        or pa.types.is_null(t))
                   for t in (schema.field(c).type for c in columns))

    def raw_chunks(self, parts: Sequence[Part], features: Sequence[str],
                   numbers: Sequence[str], *, batch_rows: int,
                   blanks: Sequence[str] = ()) -> Iterator[RawChunk]:
        """The rows of ``parts`` in chunks of at most ``batch_rows``: ``features`` as they are
        stored (a CSV's as text), ``numbers`` by the number rule (a bad cell names its row; a
        blank in one of ``blanks`` is NaN)."""
        features, numbers = list(features), list(numbers)
        self.reads += 1
        for part in parts:
            path = self.files[part.file]
            if part.row_group is None:
                from serve.core.tables import csv_batches

                batches = csv_batches(path, numbers, text=features, name=str(path),
                                      blanks=blanks, na=self.na)
            else:
                fragment = self._fragment(part.file).subset(row_group_ids=[part.row_group])
                batches = ((na_as_null(b, self.na), None) for b in fragment.to_batches(
                    columns=features + numbers, batch_size=batch_rows))
            row = part.first_row
            for batch, start in batches:
                row = row if start is None else start
                for at in range(0, batch.num_rows, batch_rows):
                    piece = batch.slice(at, batch_rows)
                    yield RawChunk(piece, to_matrix(piece, numbers, source=path,
                                                    row_offset=row + at, order="F",
                                                    blanks=blanks), part.file, row + at)
                row += batch.num_rows

    def _fragment(self, file: int):
        """File ``file`` as a pyarrow dataset fragment, opened once (its footer read once)."""
        if self._fragments is None:
            import pyarrow.dataset as pads

            dataset = pads.dataset([str(f) for f in self.files], format="parquet")
            self._fragments = list(dataset.get_fragments())
        return self._fragments[file]

    def _csv_chunks(self, part: Part, path: Path, columns: list[str],
                    batch_rows: int, blanks: Sequence[str]) -> Iterator[Chunk]:
        from serve.core.tables import csv_batches

        pending: list[np.ndarray] = []
        held, first = 0, 0
        for batch, start in csv_batches(path, columns, name=str(path), blanks=blanks,
                                        na=self.na):
            values = to_matrix(batch, columns, source=path, row_offset=start, order="F",
                               blanks=blanks)
            while len(values):
                take = values[:batch_rows - held]
                values = values[len(take):]
                pending.append(take)
                held += len(take)
                if held == batch_rows:
                    yield Chunk(np.concatenate(pending), part.file, first)
                    first += held
                    pending, held = [], 0
        if held:
            yield Chunk(np.concatenate(pending), part.file, first)


def _columns(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        return list(_parquet_metadata(path).schema.names)
    from serve.core.tables import csv_header

    try:
        with open(path, "rb") as f:
            return csv_header(f, path)[0]
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _parquet_metadata(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path)
    except OSError as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    except Exception as e:  # pyarrow's ArrowInvalid for a damaged footer
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None


def validation_mask(seed: int, fraction: float, file: int, first_row: int,
                    n: int) -> np.ndarray:
    """Which of ``n`` rows (of ``file``, from ``first_row``) are validation rows: a seeded
    hash (splitmix64) of (file, row) below ``fraction``, so the same rows are picked by every
    run and every number of processes, however the rows are chunked."""
    return row_hash(seed, file, np.arange(first_row, first_row + n)) < fraction


def row_hash(seed: int, file: int, rows: np.ndarray, *, stream: int = 0) -> np.ndarray:
    """A uniform number in [0, 1) per row (0-based ``rows`` of ``file``): splitmix64 of
    (seed, stream, file, row). ``stream`` 1 draws the --cv folds, independent of the
    validation rows (stream 0)."""
    with np.errstate(over="ignore"):
        z = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
             + np.uint64(stream) * np.uint64(0xA0761D6478BD642F)
             + np.uint64(file) * np.uint64(0xD1B54A32D192ED03)
             + np.asarray(rows, dtype=np.uint64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
