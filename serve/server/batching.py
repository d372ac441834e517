"""Dynamic batching: concurrent requests for one model version become one onnxruntime call.

    batcher = Batcher(run, max_delay=0.002, max_rows=1024)
    outputs = batcher.submit(rows).result()      # from any thread; or await asyncio.wrap_future

One worker thread per model version:

1. take the first waiting request;
2. keep taking requests until ``max_rows`` would be passed or ``max_delay`` seconds have gone
   since the first arrived (Triton's ``max_queue_delay_microseconds``);
3. stack their rows (a tabular model's columns are stacked column by column), run once, and
   split every output back by row ranges.

A request larger than ``max_rows`` runs alone. Rows are checked by the protocol parsers before
they are submitted; should a merged run still fail (an output that overflows), each request is
run again on its own, so every client gets the error of its own rows and no other's.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from serve.core.columns import Frame

Rows = np.ndarray | Frame
Outputs = dict[str, np.ndarray]


@dataclass
class _Item:
    rows: Rows
    future: Future


class Batcher:
    """Merges the rows submitted within ``max_delay`` seconds, up to ``max_rows``, into one
    ``run(rows) -> {output name: (rows, targets) array}`` call. ``on_batch(requests, rows)`` is
    told about every call (metrics).

    :meth:`close` (the model version was replaced or unloaded) lets the worker thread end once
    idle; a request that still arrives (it took the version just before the swap) starts it
    again, so no request is ever left waiting."""

    IDLE = 0.1  # seconds a closed batcher's thread waits for late requests before it ends

    def __init__(self, run: Callable[[Rows], Outputs], *, max_delay: float, max_rows: int,
                 on_batch: Callable[[int, int], None] | None = None, name: str = "") -> None:
        self._run, self.max_delay, self.max_rows = run, max_delay, max_rows
        self._on_batch, self._name = on_batch, name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = self._running = False
        self._thread: threading.Thread | None = None

    def submit(self, rows: Rows) -> Future:
        """A future of this request's outputs."""
        item = _Item(rows, Future())
        with self._lock:
            self._queue.put(item)
            if not self._running:
                self._running = True
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name=f"linreg-batcher-{self._name}")
                self._thread.start()
        return item.future

    def close(self) -> None:
        """Serve what is queued, then let the worker thread end."""
        with self._lock:
            self._closed = True
        self._queue.put(None)  # wakes a thread waiting for work

    def _next(self) -> _Item | None:
        try:
            return self._queue.get(timeout=self.IDLE if self._closed else None)
        except queue.Empty:
            return None

    def _loop(self) -> None:
        carry: _Item | None = None
        while True:
            first = carry if carry is not None else self._next()  # 1.
            carry = None
            if first is None:
                with self._lock:
                    if self._closed and self._queue.empty():
                        self._running = False
                        return
                continue
            items, rows = [first], len(first.rows)
            deadline = time.monotonic() + self.max_delay
            while rows < self.max_rows:  # 2.
                wait = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=wait) if wait > 0 else \
                        self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # a wake-up from close(): nothing to serve
                    continue
                if rows + len(item.rows) > self.max_rows:
                    carry = item
                    break
                items.append(item)
                rows += len(item.rows)
            self._serve(items)  # 3.

    def _serve(self, items: list[_Item]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(items), sum(len(i.rows) for i in items))
        if len(items) == 1:
            _settle(items[0], self._run)
            return
        try:
            merged = self._run(_stack([i.rows for i in items]))
        except Exception:  # one request's rows spoil the batch: let each have its own answer
            for item in items:
                _settle(item, self._run)
            return
        start = 0
        for item in items:
            stop = start + len(item.rows)
            item.future.set_result({k: v[start:stop] for k, v in merged.items()})
            start = stop


def _settle(item: _Item, run: Callable[[Rows], Outputs]) -> None:
    try:
        item.future.set_result(run(item.rows))
    except BaseException as e:  # the caller re-raises it as its own
        item.future.set_exception(e)


def _stack(parts: list[Rows]) -> Rows:
    if isinstance(parts[0], Frame):
        names = parts[0].arrays
        return Frame({k: np.concatenate([p.arrays[k] for p in parts]) for k in names},
                     sum(len(p) for p in parts))
    return np.concatenate(parts)
