"""Prometheus metrics for linreg-serve, in the text exposition format, with no dependency.

Every series carries the endpoint (``v2_infer``, ``grpc_infer``, ...) and the model it served
(empty for server-wide endpoints and for a name the server does not hold: a label value comes
only from the bounded set of loaded models, never from the request, so unknown names sent by a
client cannot grow ``/metrics`` without bound). Counters and the latency histogram are per process: with
``--workers N`` each worker counts its own requests.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Requests and errors by endpoint, model and status, rows predicted, request latency, and
    the batches dynamic batching ran."""

    def __init__(self, known: Callable[[str], bool] = lambda name: True) -> None:
        self.known = known  # is this a model the server holds (a label value we may use)?
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.rows: dict[tuple[str, str], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.latency_count: dict[tuple[str, str], int] = defaultdict(int)
        self.batches: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # runs, requests, rows

    def observe(self, endpoint: str, status: int, seconds: float, rows: int = 0,
                model: str = "") -> None:
        if model and not self.known(model):
            model = ""
        key = (endpoint, model)
        with self._lock:
            self.requests[(endpoint, model, status)] += 1
            self.rows[key] += rows
            counts = self.buckets[key]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            self.latency_sum[key] += seconds
            self.latency_count[key] += 1

    def batch(self, model: str, requests: int, rows: int) -> None:
        """One onnxruntime call of dynamic batching that served ``requests`` requests."""
        with self._lock:
            b = self.batches[model]
            b[0], b[1], b[2] = b[0] + 1, b[1] + requests, b[2] + rows

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP linreg_requests_total Requests by endpoint, model and status code.",
                     "# TYPE linreg_requests_total counter"]
            for (ep, model, code), n in sorted(self.requests.items()):
                lines.append(f"linreg_requests_total{{{_labels(ep, model)},code=\"{code}\"}} {n}")
            lines += ["# HELP linreg_request_errors_total Requests answered with an error.",
                      "# TYPE linreg_request_errors_total counter"]
            errors: dict[tuple[str, str], int] = defaultdict(int)
            for (ep, model, code), n in self.requests.items():
                errors[(ep, model)] += n if code >= 400 else 0
            for key, n in sorted(errors.items()):
                lines.append(f"linreg_request_errors_total{{{_labels(*key)}}} {n}")
            lines += ["# HELP linreg_rows_predicted_total Rows predicted.",
                      "# TYPE linreg_rows_predicted_total counter"]
            for key, n in sorted(self.rows.items()):
                lines.append(f"linreg_rows_predicted_total{{{_labels(*key)}}} {n}")
            lines += ["# HELP linreg_request_duration_seconds Request latency.",
                      "# TYPE linreg_request_duration_seconds histogram"]
            for key in sorted(self.buckets):
                labels = _labels(*key)
                for bound, n in zip(BUCKETS, self.buckets[key]):
                    lines.append(f'linreg_request_duration_seconds_bucket{{{labels},'
                                 f'le="{bound}"}} {n}')
                lines.append(f'linreg_request_duration_seconds_bucket{{{labels},le="+Inf"}} '
                             f'{self.latency_count[key]}')
                lines.append(f"linreg_request_duration_seconds_sum{{{labels}}} "
                             f"{self.latency_sum[key]:.6f}")
                lines.append(f"linreg_request_duration_seconds_count{{{labels}}} "
                             f"{self.latency_count[key]}")
            if self.batches:
                for metric, i, what in (("linreg_batches_total", 0, "onnxruntime calls"),
                                        ("linreg_batched_requests_total", 1, "requests"),
                                        ("linreg_batched_rows_total", 2, "rows")):
                    lines += [f"# HELP {metric} Dynamic batching: {what} per model.",
                              f"# TYPE {metric} counter"]
                    for model, b in sorted(self.batches.items()):
                        lines.append(f'{metric}{{model="{_escape(model)}"}} {b[i]}')
        return "\n".join(lines) + "\n"


def _labels(endpoint: str, model: str) -> str:
    return f'endpoint="{endpoint}",model="{_escape(model)}"'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
