"""Fitting from a stream of chunks: data past a memory budget, or shared among the ranks of a
torch.distributed run. Memory holds one chunk (``--batch-rows`` rows) at a time, or every chunk
when the rank's share fits ``--max-memory`` (read once, then kept).

1. **The scan**: one pass factors the train and validation rows by a tall-skinny QR in
   float64: each chunk [X, 1 | Y] is stacked under the running R factor and factored again
   (LAPACK on a column-major block, while a reader thread parses the next chunk), so R stays
   (p + 1 + targets) square; the ranks' factors are gathered and factored once more. The row
   counts, means and sums of squared deviations come from R (:mod:`trainer.tsqr`).
2. **Exact least squares** (``--solver lstsq``) from R alone: R₁₁ β = R₁₂ (the normal
   equations are never formed: they square the condition number); penalties from R too.
3. **SGD** (:mod:`trainer.streamed_sgd`), through the one loop of :func:`trainer.fit.sgd_loop`
   (:class:`Streamed` is its source): full batch (``--batch-size 0``) is the exact gradient of
   all rows, accumulated chunk by chunk (each chunk's loss is its sum of squares over the
   global row count) and, across ranks, summed by DistributedDataParallel in one all-reduce an
   epoch, so an update equals the in-memory one up to summation order. Mini-batches come from
   a bounded shuffle buffer over chunks taken in a seeded order; every rank runs the same
   number of steps, each rank's loss weighted by its share of the step's rows.
4. **Metrics** at any parameters from the R factors (the residuals' norm is ‖R·M‖): no pass.
   The statistics read the rows once more, at the saved parameters: the residual diagnostics
   (moments, Durbin–Watson, Cook's distance) and, for HC0-HC3, their per-row weights.

This module holds the rows (:class:`Rows`), the scan and its :class:`Summary`, the encoding
pass and the metrics; the R factor's arithmetic is :mod:`trainer.tsqr`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.core.errors import DataError
from trainer.config import TrainConfig
from trainer.dataset import Dataset, Part, validation_mask
from trainer.distributed import Group
from trainer.tsqr import Moments, Tsqr, moments_from_r, without_constant

Pair = tuple[np.ndarray, np.ndarray]  # X (rows, features), Y (rows, targets), float64
# One chunk: train rows, validation rows, the train rows' weights, (file, their rows in it)
Item = tuple[Pair, Pair, "np.ndarray | None", tuple[int, np.ndarray]]


class Rows:
    """This rank's rows of a dataset, split into train and validation rows, chunk by chunk;
    kept in memory after the first pass when ``cache`` (the share fits the budget)."""

    def __init__(self, ds: Dataset, parts: list[Part], features: list[str], targets: list[str],
                 *, batch_rows: int, cache: bool, val_fraction: float | None, seed: int,
                 val: Rows | None = None, weight: str | None = None,
                 specs: list | None = None, missing_target: str = "drop",
                 formula: Any = None, reads: list[str] | None = None) -> None:
        self.ds, self.parts, self.features, self.targets = ds, parts, features, targets
        # A tabular fit: the raw columns ``specs`` name are read and encoded chunk by chunk
        # (``features`` are then the encoded columns' names); with ``formula`` (a
        # trainer.formula.FormulaSpec) the design is the formula's, and the target its
        # response, computed from the columns ``reads``.
        self.specs, self.formula = specs, formula
        self.reads = list(reads if reads is not None else targets)
        self.batch_rows, self.cache, self.val_fraction, self.seed = batch_rows, cache, \
            val_fraction, seed
        self.val = val  # --val-data: another dataset's rows are the validation rows
        self.weight = weight  # --sample-weight: a column of the train rows' weights
        # --missing-target drop: a row whose target is blank is left out (and counted, per pass)
        self.blanks = self.reads if missing_target == "drop" else []
        self.dropped = 0
        self._kept: list[Item] | None = None

    def split(self, order: list[Part] | None = None) -> Iterator[Item]:
        """(train rows, validation rows, the train rows' weights or None, where the train rows
        are: their file and 0-based rows in it) chunk by chunk."""
        p, t = len(self.features), len(self.targets)
        if self._kept is not None:
            yield from self._kept
            return
        kept: list[Item] = []
        numbers = self.reads + ([self.weight] if self.weight else [])
        if self.specs is None:
            chunks = self.ds.chunks(order or self.parts, self.features + numbers,
                                    batch_rows=self.batch_rows, blanks=self.blanks)
        else:
            chunks = self.ds.raw_chunks(order or self.parts, [c.name for c in self.specs],
                                        numbers, batch_rows=self.batch_rows, blanks=self.blanks)
        self.dropped = 0
        for chunk in chunks:
            is_val = validation_mask(self.seed, self.val_fraction, chunk.file, chunk.first_row,
                                     len(chunk)) if self.val_fraction else None
            if self.weight:
                self._check_weights(chunk)
            keep = self._with_target(chunk)
            where = np.arange(chunk.first_row, chunk.first_row + len(chunk))
            if keep is not None:
                where = where[keep]
                if is_val is not None:
                    is_val = is_val[keep]
            if self.specs is not None:
                v = self._encoded(chunk, keep)
            else:
                v = chunk.values if keep is None else chunk.values[keep]
            if is_val is not None:
                train, val, where = v[~is_val], v[is_val], where[~is_val]
            else:
                train, val = v, v[:0]
            item = ((train[:, :p], train[:, p:p + t]), (val[:, :p], val[:, p:p + t]),
                    train[:, p + t] if self.weight else None, (chunk.file, where))
            if self.cache and order is None:
                kept.append(item)
            yield item
        if self.cache and order is None:
            self._kept = kept

    def _with_target(self, chunk: Any) -> np.ndarray | None:
        """Which rows of ``chunk`` have their targets (a blank one is NaN, counted in
        ``dropped``), or None when all do."""
        if not self.blanks:
            return None
        at = 0 if self.specs is not None else len(self.features)  # the targets' columns
        blank = np.isnan(chunk.values[:, at:at + len(self.reads)]).any(axis=1)
        if not blank.any():
            return None
        self.dropped += int(blank.sum())
        return ~blank

    def _encoded(self, chunk: Any, keep: np.ndarray | None = None) -> np.ndarray:
        """[design matrix | numbers] of a raw chunk's rows (those of ``keep``), by the learned
        specs (an unseen level in a validation row is named by its file and row, as in
        memory)."""
        import pyarrow as pa

        from trainer.encode import table_design

        p = len(self.features)
        table, values = chunk.table, chunk.values
        rows = np.arange(chunk.first_row, chunk.first_row + len(chunk))
        if keep is not None:
            table, values, rows = table.filter(pa.array(keep)), values[keep], rows[keep]
        if self.formula is not None:
            return self._formula_rows(table, values, rows, str(self.ds.files[chunk.file]))
        out = np.empty((len(values), p + values.shape[1]), order="F")
        table_design(table, self.specs, source=str(self.ds.files[chunk.file]), rows=rows,
                     out=out[:, :p])
        out[:, p:] = values
        return out

    def _formula_rows(self, table: Any, values: np.ndarray, rows: np.ndarray,
                      source: str) -> np.ndarray:
        """[the formula's design | its response] of a raw chunk's rows (a blank number is
        filled as learned; a cell the formula gives no number for is named)."""
        from trainer.formula import raw_of

        raw = raw_of(table, self.specs, source=source)
        X = self.formula.design(raw)
        y = self.formula.response_values({n: values[:, k] for k, n in enumerate(self.reads)})
        for what, bad in (("the response", ~np.isfinite(y)),
                          ("a column of the formula", ~np.isfinite(X).all(axis=1))):
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise DataError(f"{source}: row {int(rows[r]) + 1}: {what} is not a finite "
                                "number there (a level not seen in the training rows, or "
                                "outside a function's domain, e.g. np.log of 0)")
        return np.asfortranarray(np.column_stack([X, y]))

    def _check_weights(self, chunk: Any) -> None:
        w = chunk.values[:, -1]
        if (w < 0).any():
            r = int(np.flatnonzero(w < 0)[0])
            raise DataError(f"{self.ds.files[chunk.file]}: row {chunk.first_row + r + 1}, column "
                            f"{self.weight!r}: the sample weight {w[r]:g} is negative; weights "
                            "must be >= 0")

    def train(self, order: list[Part] | None = None) -> Iterator[Pair]:
        for pair, *_ in self.split(order):
            if len(pair[0]):
                yield pair

    def weighted_train(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The train rows with their weights (ones without ``--sample-weight``)."""
        for (X, Y), _, w, _ in self.split():
            if len(X):
                yield X, Y, np.ones(len(X)) if w is None else w

    def located_train(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, int,
                                              np.ndarray]]:
        """The train rows with their weights (ones without ``--sample-weight``), their file
        and their 0-based rows in it."""
        for (X, Y), _, w, (file, rows) in self.split():
            if len(X):
                yield X, Y, np.ones(len(X)) if w is None else w, file, rows

    def validation(self) -> Iterator[Pair]:
        if self.val is not None:
            yield from self.val.train()
            return
        if not self.val_fraction:  # no split: no pass
            return
        for _, pair, *_ in self.split():
            if len(pair[0]):
                yield pair

    def shuffled_train(self, rng: np.random.Generator) -> Iterator[Pair]:
        """The train rows in a seeded order of chunks (kept) or parts (re-read); with
        ``--sample-weight`` each Y carries the rows' weights as its last column."""
        if self._kept is not None:
            items = (self._kept[i] for i in rng.permutation(len(self._kept)))
        else:
            items = self.split([self.parts[i] for i in rng.permutation(len(self.parts))])
        for (X, Y), _, w, _ in items:
            if len(X):
                yield (X, Y) if w is None else (X, np.column_stack([Y, w]))


# ------------------------------------------------------------------ 1. the scan

@dataclass
class Summary:
    """What the one scan of the rows learned, merged over every rank."""

    x: Moments  # train features
    y: Moments  # train targets
    y_val: Moments
    train_rows: list[int]  # per rank
    val_rows: int
    R: np.ndarray  # TSQR's R of [X, 1 | Y] over the train rows (scaled by √w with weights)
    R_val: np.ndarray  # ... of the validation rows (unweighted)
    R_plain: np.ndarray | None = None  # with --sample-weight: the unweighted train rows'
    y_w: Moments | None = None  # with --sample-weight: the targets' weighted moments
    log_weights: float = 0.0  # Σ log w (NaN when a weight is 0, as statsmodels)
    dropped: int = 0  # rows left out because their target is blank (--missing-target drop)

    @property
    def weight(self) -> float:
        """The train rows' total --sample-weight (their count without one)."""
        return self.y_w.n if self.y_w is not None else self.x.n

    @property
    def unweighted_r(self) -> np.ndarray:
        return self.R_plain if self.R_plain is not None else self.R


class NeedsEncoding(Exception):
    """A feature cell is not a number (or is blank): the rows must be read as raw columns and
    encoded (every rank raises it together, after the scan's one collective)."""


def scan(rows: Rows, group: Group, *, bias: bool) -> Summary:
    """The one pass a streamed fit starts with: TSQR's R factors of the train and validation
    rows, each chunk [X, 1 | Y] stacked under the running factor; then, from R alone, row
    counts, means and spreads (the standardisation, R², the weights of later steps), the exact
    fit, its metrics and its statistics, with no further pass. On the numeric path, a feature
    cell that is text or blank ends it early: every rank then raises :class:`NeedsEncoding`
    (as in memory, such a column is categorical, or needs --impute: the encoding says
    which)."""
    from serve.core.errors import CellError

    p, t = len(rows.features), len(rows.targets)
    width = p + 1 + t
    train, val, plain = Tsqr(width), Tsqr(width), Tsqr(width)
    log_w, zeros, switch = 0.0, 0, False
    try:
        for (X, Y), (Xv, Yv), w, _ in read_ahead(rows.split()):
            if w is None:
                train.add(X, Y)
            elif len(X):  # weighted least squares: rows scaled by √w (as statsmodels' WLS)
                plain.add(X, Y)
                train.add(X, Y, np.sqrt(w))
                log_w += float(np.log(w[w > 0]).sum())
                zeros += int((w == 0).sum())
            val.add(Xv, Yv)
        if rows.val is not None:  # --val-data: another dataset's rows
            for Xv, Yv in rows.val.train():
                val.add(Xv, Yv)
    except CellError as e:
        if rows.specs is not None or e.column not in rows.features:
            raise
        switch = True
    counted = plain if rows.weight else train
    dropped = rows.dropped + (rows.val.dropped if rows.val is not None else 0)
    everyone = group.gather_object((switch, counted.rows, val.rows, train.R, val.R, plain.R,
                                    log_w, zeros, dropped))
    if any(e[0] for e in everyone):
        raise NeedsEncoding()

    def merged(i: int) -> np.ndarray:  # the ranks' factors, in rank order
        return np.linalg.qr(np.vstack([e[i] for e in everyone]), mode="r")

    R, R_val = merged(3), merged(4)
    R_plain = merged(5) if rows.weight else None
    x, y = moments_from_r(R if R_plain is None else R_plain, p)
    y_w = moments_from_r(R, p)[1] if rows.weight else None
    # exact counts (the moments' n is a float from R)
    x.n = y.n = float(sum(e[1] for e in everyone))
    y_val = moments_from_r(R_val, p)[1]
    y_val.n = float(sum(e[2] for e in everyone))
    if not bias:
        R, R_val = without_constant(R, p), without_constant(R_val, p)
        R_plain = None if R_plain is None else without_constant(R_plain, p)
    return Summary(x, y, y_val, [int(e[1]) for e in everyone], int(y_val.n), R, R_val,
                   R_plain, y_w, float(sum(e[6] for e in everyone))
                   if not sum(e[7] for e in everyone) else float("nan"),
                   int(sum(e[8] for e in everyone)))


def learn_encoding(rows: Rows, features: list[str], config: Any, group: Group, *,
                   bias: bool) -> list:
    """The column specs of a tabular fit (:class:`trainer.learner.StreamLearner`): one pass
    over this rank's rows, the ranks' learners merged in rank order."""
    from trainer.learner import StreamLearner

    learner = StreamLearner(features, config)
    numbers = rows.targets + ([rows.weight] if rows.weight else [])
    for chunk in rows.ds.raw_chunks(rows.parts, features, numbers, batch_rows=rows.batch_rows,
                                    blanks=rows.blanks):
        train = ~validation_mask(rows.seed, rows.val_fraction, chunk.file, chunk.first_row,
                                 len(chunk)) if rows.val_fraction else np.ones(len(chunk), bool)
        if rows.blanks:  # a row whose target is blank teaches the encoding nothing
            train &= ~np.isnan(chunk.values[:, :len(rows.targets)]).any(axis=1)
        learner.add(chunk.table, train, str(rows.ds.files[chunk.file]), chunk.first_row)
    everyone = group.gather_object(learner)
    return learner.specs(everyone, bias=bias, source=rows.ds.shown)


def standardization(summary: Summary, config: TrainConfig):
    """As :func:`trainer.fit._standardization`, from the streamed moments."""
    if not config.standardize or (config.solver == "lstsq" and config.penalty == "none"):
        return None, None
    scale = np.sqrt(summary.x.m2 / max(summary.x.n, 1))
    scale[scale == 0] = 1.0
    mean = summary.x.mean if config.bias else np.zeros_like(scale)
    return mean, scale


# ------------------------------------------------------------------ 2. exact least squares


def residual_pass(rows: Rows, coef: np.ndarray, intercept: np.ndarray, group: Group, *,
                  bias: bool, residuals: Any, cov_type: str = "nonrobust",
                  pinv: Any = None) -> tuple[Any, np.ndarray | None]:
    """The one pass after the fit, over every rank's train rows at the saved parameters: the
    residual diagnostics' sums (:class:`trainer.stats.Residuals`, merged; a chunk is a run of
    consecutive rows of its file, Durbin–Watson joins the runs in file and row order) and, for
    a robust covariance, its Σ ωᵢ zᵢzᵢᵀ per target (:func:`trainer.stats.robust_meat`)."""
    from trainer.stats import robust_meat

    t, p = len(rows.targets), len(rows.features) + int(bias)
    meat = np.zeros((t, p, p)) if cov_type != "nonrobust" else None
    for X, Y, w, file, where in read_ahead(rows.located_train()):  # parse while computing
        Z = np.hstack([np.ones((len(X), 1)), X]) if bias else X
        root = np.sqrt(w)[:, None]
        Zw, Ew = Z * root, (Y - (X @ coef.T + intercept)) * root
        residuals.add(Zw, Ew, where, key=file)
        if meat is not None:
            meat += robust_meat(Zw, Ew, cov_type, pinv)
    merged = None
    for part in group.gather_object(residuals):
        if merged is None:
            merged = part
        else:
            merged.merge(part)
    if meat is not None:
        meat = group.sum(meat.ravel()).reshape(meat.shape)
    return merged, meat


# ------------------------------------------------------------------ 3. SGD


@dataclass
class _Raised:
    error: BaseException


def read_ahead(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, produced by a reader thread up to ``depth`` ahead of the consumer (reading
    and parsing overlap the work on the previous chunk: pyarrow, numpy and LAPACK release the
    GIL). An error in the reader is raised here; leaving early stops and joins the reader."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return  # the consumer stopped early (an error, a signal)
        except BaseException as e:  # handed to the consumer, raised there
            put(_Raised(e))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # the readers' files and threads end here, in this thread
                close()
        put(done)

    thread = threading.Thread(target=read, daemon=True, name="linreg-read")
    thread.start()
    try:
        while (item := box.get()) is not done:
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:  # every way out stops and joins the reader: no thread outlives the fit
        stop.set()
        thread.join()


# ------------------------------------------------------------------ 4. metrics


def regression_metrics(sse: np.ndarray, y: Moments) -> dict:
    """As :func:`trainer.train.regression_metrics`, from sums: MSE and R² per target."""
    n = max(y.n, 1.0)
    mse = sse / n
    var = y.m2 / n
    r2 = [None if v <= 0 else float(1.0 - m / v) for m, v in zip(mse, var)]
    return {"rows": int(y.n), "mse": mse.tolist(), "r2": r2, "mse_mean": float(mse.mean())}
