"""What every protocol of linreg-serve shares: the repository, the limits, dynamic batching and
the metrics. HTTP routes (:mod:`serve.server.routes`) and the gRPC service (:mod:`serve.server.grpc_service`)
both resolve a model and predict through one :class:`Serving`, so they answer alike.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serve.core.errors import DataError, RequestError
from serve.core.graph import PREDICTION
from serve.runtime.predictor import Cancel, Predictor
from serve.server.batching import Batcher, Outputs, Rows
from serve.server.metrics import Metrics
from serve.server.repository import Repository, Version
from serve.server.settings import ServerSettings

INLINE_ROWS = 256  # requests up to this many rows predict on the event loop (about 10 µs)


def outputs_runner(predictor: Predictor) -> Callable[..., Outputs]:
    """``run(rows, cancel=None)``: every output by name (the prediction, and its intervals and
    contributions when the model has them). A formula model keeps the NaN of a row it gives
    no number for, which each request then judges by its own policy
    (:meth:`serve.server.protocols.Checked.finish`): a batch never fails for one row."""
    if predictor.formula:
        return functools.partial(predictor.outputs, names=None, keep_nan=True)
    if len(predictor.output_names) > 1:
        return functools.partial(predictor.outputs, names=None)
    return lambda rows, cancel=None: {PREDICTION: predictor.predict(rows, cancel=cancel)}


class Serving:
    """The repository served under ``settings`` (:class:`serve.server.settings.ServerSettings`: the
    bounds and batching), with the metrics of every protocol."""

    def __init__(self, repository: Repository, settings: ServerSettings) -> None:
        self.repository, self.settings = repository, settings
        self.metrics = Metrics(known=repository.has)
        self.pool = ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 1)),
                                       thread_name_prefix="linreg-predict")
        self._lock = threading.Lock()
        repository.on_swap = self.retire

    def version(self, name: str, version: str | None = None) -> Version:
        """The model version a request names (:class:`UnknownModel`, 404, or
        :class:`NotReady`, 503, when there is none to serve)."""
        return self.repository.get(name, version)

    # ------------------------------------------------------------------ predicting

    def _batcher(self, version: Version) -> Batcher | None:
        delay = self.settings.max_batch_delay_us
        if delay is None:
            return None
        batcher = version.extras.get("batcher")
        if batcher is None:
            with self._lock:
                batcher = version.extras.get("batcher")
                if batcher is None:
                    batcher = Batcher(outputs_runner(version.predictor), max_delay=delay / 1e6,
                                      max_rows=self.settings.max_batch_rows,
                                      on_batch=functools.partial(self.metrics.batch,
                                                                 version.name),
                                      name=version.name)
                    version.extras["batcher"] = batcher
        return batcher

    def retire(self, version: Version) -> None:
        """A version was replaced or unloaded: let its batcher finish and stop."""
        batcher = version.extras.get("batcher")
        if batcher is not None:
            batcher.close()

    async def predict(self, version: Version, rows: Rows) -> Outputs:
        """Predict (HTTP): a few rows of a linreg graph on the event loop itself
        (microseconds: a hop to a thread and back costs more than the prediction); more rows,
        or a foreign graph (which may run for ever), off it, within the request timeout;
        through the dynamic batcher when it is on."""
        timeout = self.settings.request_timeout
        batcher = self._batcher(version)
        if batcher is None and len(rows) <= INLINE_ROWS and version.predictor.bounded:
            try:
                return outputs_runner(version.predictor)(rows)
            except DataError as e:  # e.g. a prediction that overflows the model's dtype
                raise RequestError(str(e), status=422) from None
        cancel = Cancel()
        if batcher is not None:
            future = asyncio.wrap_future(batcher.submit(rows))
        else:
            future = asyncio.get_running_loop().run_in_executor(
                self.pool, functools.partial(outputs_runner(version.predictor), rows,
                                             cancel=cancel))
        try:
            return await within(timeout, asyncio.shield(future))
        except asyncio.TimeoutError:
            cancel.cancel()
            raise _too_slow(timeout) from None
        except asyncio.CancelledError:  # the server is shutting down, or the client left
            cancel.cancel()
            raise
        except DataError as e:  # e.g. a prediction that overflows the model's dtype
            raise RequestError(str(e), status=422) from None

    def close(self) -> None:
        for version in self.repository.all_versions():
            self.retire(version)
        self.pool.shutdown(wait=False, cancel_futures=True)


async def within(seconds: float, awaitable: Any) -> Any:
    """``await awaitable``, or ``asyncio.TimeoutError`` after ``seconds``: ``asyncio.timeout``
    where there is one (3.11+: no extra task per request), else ``asyncio.wait_for``."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def _too_slow(timeout: float) -> RequestError:
    return RequestError(f"the prediction took longer than {timeout:g} s (--request-timeout)",
                        status=503)
