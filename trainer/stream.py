"""Fitting from a stream of chunks: data past a memory budget, or shared among the ranks of a
torch.distributed run. Memory holds one chunk (``--batch-rows`` rows) at a time, or every chunk
when the rank's share fits ``--max-memory`` (read once, then kept).

1. **The scan**: one pass factors the train and validation rows by a tall-skinny QR in
   float64: each chunk [X, 1 | Y] is stacked under the running R factor and factored again
   (LAPACK on a column-major block, while a reader thread parses the next chunk), so R stays
   (p + 1 + targets) square; the ranks' factors are gathered and factored once more. The row
   counts, means and sums of squared deviations come from R (:func:`moments_from_r`).
2. **Exact least squares** (``--solver lstsq``) from R alone: R₁₁ β = R₁₂ (the normal
   equations are never formed: they square the condition number); penalties from R too.
3. **SGD**, through the one loop of :func:`trainer.fit.sgd_loop` (:class:`Streamed` is its
   source): full batch (``--batch-size 0``) is the exact gradient of all rows, accumulated chunk
   by chunk (each chunk's loss is its sum of squares over the global row count) and, across
   ranks, summed by DistributedDataParallel in one all-reduce an epoch, so an update equals the
   in-memory one up to summation order. Mini-batches come from a bounded shuffle buffer over
   chunks taken in a seeded order; every rank runs the same number of steps, each rank's loss
   weighted by its share of the step's rows (a rank out of rows adds nothing).
4. **Metrics** at any parameters from the R factors (the residuals' norm is ‖R·M‖): no pass.
   Only robust covariances (HC0-HC3) read the rows once more, for their per-row weights.

On CUDA a reader thread fills pinned host memory with the next chunk while the device works on
this one, and chunks are copied with ``non_blocking=True``.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from serve.core.errors import DataError
from trainer.checkpoint import Checkpoint
from trainer.config import TrainConfig, TrainingError
from trainer.dataset import Dataset, Part, validation_mask
from trainer.distributed import Group
from trainer.fit import FitResult, sgd_loop
from trainer.history import unstandardize
from trainer.solvers import coordinate_descent
from trainer.steps import l2_weight

Pair = tuple[np.ndarray, np.ndarray]  # X (rows, features), Y (rows, targets), float64


@dataclass
class Moments:
    """Row count (or total weight), mean and sum of squared deviations per column."""

    n: float
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, width: int) -> Moments:
        return cls(0.0, np.zeros(width), np.zeros(width))


class Rows:
    """This rank's rows of a dataset, split into train and validation rows, chunk by chunk;
    kept in memory after the first pass when ``cache`` (the share fits the budget)."""

    def __init__(self, ds: Dataset, parts: list[Part], features: list[str], targets: list[str],
                 *, batch_rows: int, cache: bool, val_fraction: float | None, seed: int,
                 val: Rows | None = None, weight: str | None = None,
                 specs: list | None = None) -> None:
        self.ds, self.parts, self.features, self.targets = ds, parts, features, targets
        # A tabular fit: the raw columns ``specs`` name are read and encoded chunk by chunk
        # (``features`` are then the encoded columns' names).
        self.specs = specs
        self.batch_rows, self.cache, self.val_fraction, self.seed = batch_rows, cache, \
            val_fraction, seed
        self.val = val  # --val-data: another dataset's rows are the validation rows
        self.weight = weight  # --sample-weight: a column of the train rows' weights
        self._kept: list[tuple[Pair, Pair, np.ndarray | None]] | None = None

    def split(self, order: list[Part] | None = None
               ) -> Iterator[tuple[Pair, Pair, np.ndarray | None]]:
        """(train rows, validation rows, the train rows' weights or None) chunk by chunk."""
        p, t = len(self.features), len(self.targets)
        if self._kept is not None:
            yield from self._kept
            return
        kept: list[tuple[Pair, Pair, np.ndarray | None]] = []
        numbers = self.targets + ([self.weight] if self.weight else [])
        if self.specs is None:
            chunks = self.ds.chunks(order or self.parts, self.features + numbers,
                                    batch_rows=self.batch_rows)
        else:
            chunks = self.ds.raw_chunks(order or self.parts, [c.name for c in self.specs],
                                        numbers, batch_rows=self.batch_rows)
        for chunk in chunks:
            is_val = validation_mask(self.seed, self.val_fraction, chunk.file, chunk.first_row,
                                     len(chunk)) if self.val_fraction else None
            v = chunk.values if self.specs is None else self._encoded(chunk)
            if self.weight:
                self._check_weights(chunk)
            if is_val is not None:
                train, val = v[~is_val], v[is_val]
            else:
                train, val = v, v[:0]
            item = ((train[:, :p], train[:, p:p + t]), (val[:, :p], val[:, p:p + t]),
                    train[:, p + t] if self.weight else None)
            if self.cache and order is None:
                kept.append(item)
            yield item
        if self.cache and order is None:
            self._kept = kept

    def _encoded(self, chunk: Any) -> np.ndarray:
        """[design matrix | numbers] of a raw chunk, by the learned specs (an unseen level in
        a validation row is named by its file and row, as in memory)."""
        from trainer.encode import table_design

        p = len(self.features)
        out = np.empty((len(chunk), p + chunk.values.shape[1]), order="F")
        table_design(chunk.table, self.specs, source=str(self.ds.files[chunk.file]),
                     rows=np.arange(chunk.first_row, chunk.first_row + len(chunk)),
                     out=out[:, :p])
        out[:, p:] = chunk.values
        return out

    def _check_weights(self, chunk: Any) -> None:
        w = chunk.values[:, -1]
        if (w < 0).any():
            r = int(np.flatnonzero(w < 0)[0])
            raise DataError(f"{self.ds.files[chunk.file]}: row {chunk.first_row + r + 1}, column "
                            f"{self.weight!r}: the sample weight {w[r]:g} is negative; weights "
                            "must be >= 0")

    def train(self, order: list[Part] | None = None) -> Iterator[Pair]:
        for pair, _, _ in self.split(order):
            if len(pair[0]):
                yield pair

    def weighted_train(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The train rows with their weights (ones without ``--sample-weight``)."""
        for (X, Y), _, w in self.split():
            if len(X):
                yield X, Y, np.ones(len(X)) if w is None else w

    def validation(self) -> Iterator[Pair]:
        if self.val is not None:
            yield from self.val.train()
            return
        if not self.val_fraction:  # no split: no pass
            return
        for _, pair, _ in self.split():
            if len(pair[0]):
                yield pair

    def shuffled_train(self, rng: np.random.Generator) -> Iterator[Pair]:
        """The train rows in a seeded order of chunks (kept) or parts (re-read); with
        ``--sample-weight`` each Y carries the rows' weights as its last column."""
        if self._kept is not None:
            items = (self._kept[i] for i in rng.permutation(len(self._kept)))
        else:
            items = self.split([self.parts[i] for i in rng.permutation(len(self.parts))])
        for (X, Y), _, w in items:
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


class _Tsqr:
    """A running R factor of [X, 1 | Y]: each chunk is stacked under R and factored again (by
    LAPACK's Householder QR, ``dgeqrf``, on a column-major block: no copies), so R stays
    (p + 1 + targets) square and memory holds one chunk."""

    def __init__(self, width: int) -> None:
        self.R = np.zeros((0, width))
        self.rows = 0

    def add(self, X: np.ndarray, Y: np.ndarray, root: np.ndarray | None = None) -> None:
        """Stack the rows [X, 1 | Y] (scaled by ``root``, √w, when given) under R."""
        if not len(X):
            return
        r, p = len(self.R), X.shape[1]
        block = np.empty((r + len(X), self.R.shape[1]), order="F")
        block[:r] = self.R
        block[r:, :p] = X
        block[r:, p] = 1.0
        block[r:, p + 1:] = Y
        if root is not None:
            block[r:] *= root[:, None]
        self.R = r_factor(block)
        self.rows += len(X)


def r_factor(block: np.ndarray) -> np.ndarray:
    """R of a column-major ``block``'s QR (``min(rows, columns)`` rows), overwriting it.

    On one BLAS thread: a thin block's QR is LAPACK's unblocked ``dgeqr2``, a column at a time,
    and OpenBLAS's threads cost more than they give there (65,536 x 18: 110 ns a row on two
    threads, 52 on one); the reader thread has the other core."""
    from scipy.linalg import lapack

    with _blas().limit(limits=1, user_api="blas"):
        qr, _, _, info = lapack.dgeqrf(block, lwork=max(1, 64 * block.shape[1]),
                                       overwrite_a=True)
    if info != 0:  # only for an illegal argument: a bug, not the data
        raise RuntimeError(f"LAPACK dgeqrf failed (info {info})")
    return np.triu(qr[:min(block.shape)])


@functools.cache
def _blas() -> Any:
    """The process's BLAS libraries (threadpoolctl's controller, made once: it scans them)."""
    from scipy.linalg import lapack  # noqa: F401  (loaded first, so it is found)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def moments_from_r(R: np.ndarray, n_features: int) -> tuple[Moments, Moments]:
    """The moments of X and of Y from R of [X, 1 | Y]: factored again with the constant
    column first, its first row holds √n and each column's mean times √n, and the rows below
    are the centred columns' factor (their squared norms are the sums of squared deviations,
    with no cancellation). With rows scaled by √w, the weighted moments (n = Σw)."""
    p, width = n_features, R.shape[1]
    if not len(R) or not R[:, p].any():  # no rows (or every weight 0)
        return Moments.empty(p), Moments.empty(width - p - 1)
    C = np.linalg.qr(R[:, [p, *range(p), *range(p + 1, width)]], mode="r")
    n, mean, m2 = C[0, 0] ** 2, C[0, 1:] / C[0, 0], (C[1:, 1:] ** 2).sum(axis=0)
    return Moments(float(n), mean[:p], m2[:p]), Moments(float(n), mean[p:], m2[p:])


def without_constant(R: np.ndarray, n_features: int) -> np.ndarray:
    """R of [X | Y] from R of [X, 1 | Y] (a model without a bias): RᵀR is the Gram matrix of
    every column, so R's columns stand for the rows' for any subset of them."""
    keep = [j for j in range(R.shape[1]) if j != n_features]
    return np.linalg.qr(R[:, keep], mode="r")


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
    train, val, plain = _Tsqr(width), _Tsqr(width), _Tsqr(width)
    log_w, zeros, switch = 0.0, 0, False
    try:
        for (X, Y), (Xv, Yv), w in read_ahead(rows.split()):
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
    everyone = group.gather_object((switch, counted.rows, val.rows, train.R, val.R, plain.R,
                                    log_w, zeros))
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
                   if not sum(e[7] for e in everyone) else float("nan"))


def learn_encoding(rows: Rows, features: list[str], config: Any, group: Group, *,
                   bias: bool) -> list:
    """The column specs of a tabular fit (:class:`trainer.encode.StreamLearner`): one pass
    over this rank's rows, the ranks' learners merged in rank order."""
    from trainer.encode import StreamLearner

    learner = StreamLearner(features, config)
    numbers = rows.targets + ([rows.weight] if rows.weight else [])
    for chunk in rows.ds.raw_chunks(rows.parts, features, numbers, batch_rows=rows.batch_rows):
        train = ~validation_mask(rows.seed, rows.val_fraction, chunk.file, chunk.first_row,
                                 len(chunk)) if rows.val_fraction else np.ones(len(chunk), bool)
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

def least_squares_from_r(R: np.ndarray, n_features: int, *, bias: bool
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Exact (weighted) least squares from TSQR's R of [X, 1 | Y]: R₁₁ β = R₁₂, the minimum-norm
    solution as numpy's lstsq (the normal equations are never formed: they square the condition
    number). The caller checks there are at least as many rows as parameters."""
    p = n_features + int(bias)
    sol = np.linalg.lstsq(R[:p, :p], R[:p, p:], rcond=None)[0]
    coef = sol[:n_features].T.copy()
    intercept = sol[n_features].copy() if bias else np.zeros(R.shape[1] - p)
    return coef, intercept


def penalized_from_r(R: np.ndarray, n: float, n_features: int, *, bias: bool, penalty: str,
                     alpha: float, l1_ratio: float, mean: np.ndarray | None,
                     scale: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ElasticNet objective (:func:`trainer.fit.penalized`) from TSQR's R of
    [X, 1 | Y] over ``n`` rows, on the features standardised by ``mean``/``scale`` when given
    (then folded back): the R rows stand in for the data rows, since every sum of squares of the
    rows is one of R's.

    - l2: least squares on R stacked over √(nα)·I under the feature columns (the intercept
      column is not penalised: centring, implied), as the in-memory closed form;
    - l1/elasticnet: coordinate descent on the centred Gram matrix RᵀR/n − x̄x̄ᵀ.
    """
    p, k = n_features, n_features + int(bias)
    A = R.copy()
    if scale is not None:  # Xs = (X − 1·meanᵀ)/scale, in R's terms (R's rows stand for rows)
        A[:, :p] = R[:, :p] / scale
        if bias:
            A[:, :p] -= np.outer(R[:, p], mean / scale)
    ratio = {"l2": 0.0, "l1": 1.0}.get(penalty, l1_ratio)
    if ratio == 0.0:
        lhs = np.vstack([A[:, :k], np.hstack([np.sqrt(n * alpha) * np.eye(p),
                                              np.zeros((p, k - p))])])
        rhs = np.vstack([A[:, k:], np.zeros((p, A.shape[1] - k))])
        sol = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        coef = sol[:p].T.copy()
        intercept = sol[p].copy() if bias else np.zeros(A.shape[1] - k)
    else:
        M = A.T @ A / n  # the Gram matrix of [X, 1, Y] over n rows
        x_mean = M[:p, p] if bias else np.zeros(p)
        y_mean = M[k:, p] if bias else np.zeros(A.shape[1] - k)
        G = M[:p, :p] - np.outer(x_mean, x_mean)
        C = M[:p, k:] - np.outer(x_mean, y_mean)
        coef = coordinate_descent(G, C, penalty=penalty, alpha=alpha, ratio=ratio)
        intercept = y_mean - coef @ x_mean if bias else np.zeros(A.shape[1] - k)
    return unstandardize(coef, intercept, mean, scale)


def design_r(R: np.ndarray, n_features: int, *, bias: bool) -> np.ndarray:
    """The R factor of the statistics' design [1, X] from TSQR's factor of [X, 1 | Y]: its
    first block with the columns reordered (ZᵀZ's singular values and vectors follow)."""
    p = n_features + int(bias)
    order = [n_features, *range(n_features)] if bias else list(range(n_features))
    return R[:p, :p][:, order]


def meat_pass(rows: Rows, coef: np.ndarray, intercept: np.ndarray, group: Group, *,
              bias: bool, cov_type: str, pinv: Any) -> np.ndarray:
    """The robust covariance's Σ ωᵢ zᵢzᵢᵀ per target (:func:`trainer.stats.robust_meat`),
    summed over every rank's train rows: the one pass HC0-HC3 need beyond the fit."""
    from trainer.stats import robust_meat

    t, p = len(rows.targets), len(rows.features) + int(bias)
    meat = np.zeros((t, p, p))
    for X, Y, w in rows.weighted_train():
        Z = np.hstack([np.ones((len(X), 1)), X]) if bias else X
        root = np.sqrt(w)[:, None]
        meat += robust_meat(Z * root, (Y - (X @ coef.T + intercept)) * root, cov_type, pinv)
    return group.sum(meat.ravel()).reshape(meat.shape)


# ------------------------------------------------------------------ 3. SGD

def _prefetch(chunks: Iterator[Pair], device: torch.device, dtype: torch.dtype,
              depth: int = 2) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Chunks as tensors on ``device``; a reader thread prepares the next ones meanwhile
    (pinned host memory and non-blocking copies on CUDA)."""
    pin = device.type == "cuda"

    def tensors(X: np.ndarray, Y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = torch.from_numpy(X).to(dtype), torch.from_numpy(Y).to(dtype)
        return (x.pin_memory(), y.pin_memory()) if pin else (x, y)

    def converted() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        try:
            for X, Y in chunks:
                yield tensors(X, Y)
        finally:  # (in the reader's thread: the files and their threads end there)
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    for x, y in read_ahead(converted(), depth):
        yield x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)


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


@dataclass
class _Raised:
    error: BaseException


class Streamed:
    """This rank's rows as a stream of chunks (:class:`Rows`), for :func:`trainer.fit.sgd_loop`:
    full-batch gradients summed chunk by chunk (one all-reduce a pass, by DDP), mini-batches
    from a bounded shuffle buffer over chunks in a seeded order, costs summed over ranks so
    every rank takes the same decisions."""

    check_every = 1  # an epoch is a pass over the data: the host reads its cost anyway

    def __init__(self, rows: Rows, summary: Summary, config: TrainConfig, group: Group, *,
                 mean: np.ndarray | None, scale: np.ndarray | None) -> None:
        import torch.nn.functional as F

        self.rows, self.summary, self.config, self.group = rows, summary, config, group
        self.device, self.rank = group.device, group.rank
        self.dtype = getattr(torch, config.dtype)
        self.t = len(rows.targets)
        self.full_batch = config.batch_size == 0
        self.watches = summary.val_rows > 0
        # The loss is over the train rows' count, or their total weight (--sample-weight)
        self.n = summary.weight if rows.weight else int(summary.x.n)
        self.rng = np.random.default_rng(config.seed)  # the chunk order
        self.l2 = l2_weight(config, self.t)
        self.standardization = mean, scale  # float64, as the result is folded back
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=self.dtype,
                                                              device=self.device)
        self.scale = None if scale is None else torch.as_tensor(scale, dtype=self.dtype,
                                                                device=self.device)
        self._F = F
        self.W: torch.Tensor | None = None

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.scale is None else (x - self.mean) / self.scale

    def data_loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The chunk's loss summed over its rows (MSE or Huber; with --sample-weight, y
        carries the rows' weights as its last column)."""
        config, F = self.config, self._F
        if self.rows.weight:
            y, w = y[:, :self.t], y[:, self.t:]
            each = F.huber_loss(pred, y, delta=config.huber_delta, reduction="none") \
                if config.loss == "huber" else (pred - y) ** 2
            return (each * w).sum()
        if config.loss == "huber":
            return F.huber_loss(pred, y, delta=config.huber_delta, reduction="sum")
        return ((pred - y) ** 2).sum()

    def train_chunks(self) -> Iterator[Pair]:
        if not self.rows.weight:
            return self.rows.train()
        return ((X, np.column_stack([Y, w])) for X, Y, w in self.rows.weighted_train())

    def penalty(self) -> torch.Tensor:
        """The cost's L2 part (every rank adds it once unscaled: DDP's average keeps it
        once); the L1 part is a proximal step after each step."""
        if not self.l2:
            return torch.zeros((), dtype=self.dtype, device=self.device)
        return self.l2 * (self.W ** 2).sum()

    def empty_step(self, net) -> torch.Tensor:
        """A rank with no rows still joins the all-reduce."""
        p = self.W.shape[1]
        return net(torch.zeros((0, p), dtype=self.dtype, device=self.device)).sum() * 0.0

    def total(self, value: torch.Tensor) -> float:
        """A rank's float64 sum, summed over every rank."""
        return float(self.group.sum(value.cpu().numpy().reshape(1))[0])

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        self.W = model.linear.weight
        if not self.group.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device]
                                       if self.device.type == "cuda" else None)

    def gradient(self, net: torch.nn.Module) -> torch.Tensor:
        # 3. The exact gradient: every chunk's share, summed; one all-reduce a pass.
        group, t = self.group, self.t
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with net.no_sync() if group.distributed else contextlib.nullcontext():
            for x, y in _prefetch(self.train_chunks(), self.device, self.dtype):
                err = self.data_loss(net(self.prep(x)), y)
                (err * (group.world / (self.n * t))).backward()
                total += err.detach().double()
        last = self.penalty()
        l2 = float(last.detach())
        if group.distributed:  # outside no_sync: DDP all-reduces the gradients
            last = last + self.empty_step(net)
        if last.requires_grad:
            last.backward()
        return torch.tensor(self.total(total) / (self.n * t) + l2, dtype=self.dtype,
                            device=self.device)

    def minibatch_epoch(self, net, optimizer, prox, on_batch) -> torch.Tensor:
        """Each rank takes ``ceil(batch / world)`` rows a step from a shuffle buffer; all ranks
        run ``max`` steps, each loss weighted by the step's global rows (with
        ``--sample-weight``, by the step's global weight: one more all-reduce a step)."""
        group, config, t, rows = self.group, self.config, self.t, self.rows
        before = float(self.penalty().detach())  # the cost's L2 part at the epoch's start
        local = -(-config.batch_size // group.world)
        counts = self.summary.train_rows
        steps = max(-(-n // local) for n in counts)
        buffer_rows = max(4 * local, rows.batch_rows)
        batches = _shuffled_batches(rows.shuffled_train(self.rng), local, buffer_rows,
                                    self.rng)
        sse = torch.zeros((), dtype=torch.float64, device=self.device)
        for step in range(steps):
            step_rows = sum(min(local, max(0, n - step * local)) for n in counts)
            optimizer.zero_grad()
            batch = next(batches, None)
            if rows.weight:  # the step's rows weigh their total weight, over every rank
                mine = float(batch[1][:, t:].sum()) if batch is not None else 0.0
                weight = float(group.sum(np.array([mine]))[0]) if group.distributed else mine
                step_rows = weight if weight > 0 else 1.0  # (all weights 0: every loss is 0)
            if batch is None:
                loss = self.empty_step(net)
            else:
                x = torch.as_tensor(batch[0], dtype=self.dtype).to(self.device,
                                                                   non_blocking=True)
                y = torch.as_tensor(batch[1], dtype=self.dtype).to(self.device,
                                                                   non_blocking=True)
                err = self.data_loss(net(self.prep(x)), y)
                loss = err * (group.world / (step_rows * t))
                sse += err.detach().double()
            (loss + self.penalty()).backward()
            optimizer.step()
            if prox is not None:
                prox(self.W)
        return torch.tensor(self.total(sse) / (self.n * t) + before, dtype=self.dtype,
                            device=self.device)

    def validation_cost(self, model: torch.nn.Module) -> float:
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for x, y in _prefetch(self.rows.validation(), self.device, self.dtype):
                total += ((model(self.prep(x)) - y) ** 2).sum().double()
        return self.total(total) / (self.summary.val_rows * self.t)

    def final_cost(self, model: torch.nn.Module) -> float:
        if self.config.loss == "mse":  # from R: no pass over the rows
            W = model.linear.weight.detach().double().cpu().numpy()
            b = model.linear.bias.detach().double().cpu().numpy() \
                if model.linear.bias is not None else np.zeros(self.t)
            coef, intercept = unstandardize(W, b, *self.standardization)
            data = float(sse_from_r(self.summary.R, coef, intercept,
                                    bias=self.config.bias).sum())
        else:
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            with torch.no_grad():
                for x, y in _prefetch(self.train_chunks(), self.device, self.dtype):
                    total += self.data_loss(model(self.prep(x)), y).double()
            data = self.total(total)
        return data / (self.n * self.t) + float(self.penalty().detach())

    def saved(self) -> dict:
        orders = self.group.gather_object(self.rng.bit_generator.state)  # each rank's
        return {"chunk_order": orders, "world": self.group.world}

    def restore(self, state: dict) -> None:
        world = state.get("world", 1)
        if world != self.group.world or "chunk_order" not in state:
            raise TrainingError(f"the checkpoint is of a run with {world} process(es)"
                                f"{'' if 'chunk_order' in state else ' in memory'}, not of "
                                f"this streamed run with {self.group.world}; start again "
                                "without --resume")
        try:
            self.rng.bit_generator.state = state["chunk_order"][self.group.rank]
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise TrainingError(f"the checkpoint does not fit this run ({e}); start again "
                                "without --resume") from None


def sgd(rows: Rows, summary: Summary, config: TrainConfig, group: Group, *,
        log: Callable[[str], None] | None = None,
        progress: Callable[[float], None] | None = None,
        start: tuple[np.ndarray, np.ndarray] | None = None,
        checkpoint: Checkpoint | None = None) -> tuple[FitResult, np.ndarray]:
    """SGD (or Adam, L-BFGS) from the stream, through :func:`trainer.fit.sgd_loop` (the one
    loop, as in memory); also the train sums of squared errors per target at the saved
    parameters (from R). ``checkpoint`` saves a resumable state every few epochs (rank 0
    writes it, with every rank's seeded chunk order) and, when it holds one, continues from
    it: the resumed run is the same."""
    mean, scale = standardization(summary, config)
    source = Streamed(rows, summary, config, group, mean=mean, scale=scale)
    start_time = time.perf_counter()
    result = sgd_loop(source, config, len(rows.features), len(rows.targets), mean=mean,
                      scale=scale, log=log, progress=progress, warm_start=start,
                      checkpoint=checkpoint)
    result.seconds = time.perf_counter() - start_time
    result.config = asdict(config)
    sse = sse_from_r(summary.unweighted_r, result.coef_, result.intercept_, bias=config.bias)
    return result, sse


def _shuffled_batches(chunks: Iterator[Pair], size: int, buffer_rows: int,
                      rng: np.random.Generator) -> Iterator[Pair]:
    """Batches of ``size`` rows drawn at random from a buffer of about ``buffer_rows`` rows
    refilled from ``chunks``: memory stays bounded, and rows of many chunks mix."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    held = 0
    source = iter(chunks)
    exhausted = False
    while True:
        while not exhausted and held < buffer_rows:
            nxt = next(source, None)
            if nxt is None:
                exhausted = True
                break
            xs.append(nxt[0])
            ys.append(nxt[1])
            held += len(nxt[0])
        if not held:
            return
        X, Y = np.concatenate(xs), np.concatenate(ys)
        order = rng.permutation(len(X))
        take = order[:size] if not exhausted or held > size else order
        keep = np.ones(len(X), dtype=bool)
        keep[take] = False
        yield X[take], Y[take]
        xs, ys, held = [X[keep]], [Y[keep]], int(keep.sum())


# ------------------------------------------------------------------ 4. metrics

def sse_from_r(R: np.ndarray, coef: np.ndarray, intercept: np.ndarray, *,
               bias: bool) -> np.ndarray:
    """The train sums of squared errors per target at any parameters, from TSQR's R of
    [X, 1 | Y] alone: the residuals are [X, 1 | Y]·M with M = [-coefᵀ; -intercept; I], and
    ‖QRM‖ = ‖RM‖ (no pass over the rows)."""
    t, p = coef.shape
    M = np.zeros((R.shape[1], t))
    M[:p] = -coef.T
    if bias:
        M[p] = -intercept
    M[p + int(bias):] = np.eye(t)
    return ((R @ M) ** 2).sum(axis=0)


def regression_metrics(sse: np.ndarray, y: Moments) -> dict:
    """As :func:`trainer.train.regression_metrics`, from sums: MSE and R² per target."""
    n = max(y.n, 1.0)
    mse = sse / n
    var = y.m2 / n
    r2 = [None if v <= 0 else float(1.0 - m / v) for m, v in zip(mse, var)]
    return {"rows": int(y.n), "mse": mse.tolist(), "r2": r2, "mse_mean": float(mse.mean())}
