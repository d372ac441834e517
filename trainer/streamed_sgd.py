"""SGD over a stream of chunks: :class:`Streamed`, the source that gives the one loop
(:func:`trainer.fit.sgd_loop`) what touches rows — the full-batch gradient accumulated chunk
by chunk and summed over ranks, mini-batches from a bounded shuffle buffer over chunks in a
seeded order, the validation and final costs — with a reader thread (pinned host memory and
``non_blocking`` copies on CUDA) keeping the next chunk ready."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict

import numpy as np
import torch

from trainer.checkpoint import Checkpoint
from trainer.config import TrainConfig, TrainingError
from trainer.distributed import Group
from trainer.fit import FitResult, sgd_loop
from trainer.history import unstandardize
from trainer.steps import l2_weight
from trainer.stream import Pair, Rows, Summary, read_ahead, standardization
from trainer.tsqr import sse_from_r


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
