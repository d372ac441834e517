"""Prometheus metrics for linreg-serve, in the text exposition format, with no dependency.

Counters and the latency histogram are per process: with ``--workers N`` each worker counts
its own requests (scrape them through a single worker, or run one worker per port).
"""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Requests and errors by endpoint and status, rows predicted, and request latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.rows: dict[str, int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)

    def observe(self, endpoint: str, status: int, seconds: float, rows: int = 0) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            self.rows[endpoint] += rows
            counts = self.buckets[endpoint]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            self.latency_sum[endpoint] += seconds
            self.latency_count[endpoint] += 1

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP linreg_requests_total HTTP requests by endpoint and status code.",
                     "# TYPE linreg_requests_total counter"]
            for (ep, code), n in sorted(self.requests.items()):
                lines.append(f'linreg_requests_total{{endpoint="{ep}",code="{code}"}} {n}')
            lines += ["# HELP linreg_request_errors_total Requests answered with 4xx or 5xx.",
                      "# TYPE linreg_request_errors_total counter"]
            errors: dict[str, int] = defaultdict(int)
            for (ep, code), n in self.requests.items():
                if code >= 400:
                    errors[ep] += n
            for ep in sorted({ep for ep, _ in self.requests}):
                lines.append(f'linreg_request_errors_total{{endpoint="{ep}"}} {errors[ep]}')
            lines += ["# HELP linreg_rows_predicted_total Rows predicted.",
                      "# TYPE linreg_rows_predicted_total counter"]
            for ep, n in sorted(self.rows.items()):
                lines.append(f'linreg_rows_predicted_total{{endpoint="{ep}"}} {n}')
            lines += ["# HELP linreg_request_duration_seconds Request latency.",
                      "# TYPE linreg_request_duration_seconds histogram"]
            for ep in sorted(self.buckets):
                for bound, n in zip(BUCKETS, self.buckets[ep]):
                    lines.append(f'linreg_request_duration_seconds_bucket{{endpoint="{ep}",'
                                 f'le="{bound}"}} {n}')
                lines.append(f'linreg_request_duration_seconds_bucket{{endpoint="{ep}",'
                             f'le="+Inf"}} {self.latency_count[ep]}')
                lines.append(f'linreg_request_duration_seconds_sum{{endpoint="{ep}"}} '
                             f'{self.latency_sum[ep]:.6f}')
                lines.append(f'linreg_request_duration_seconds_count{{endpoint="{ep}"}} '
                             f'{self.latency_count[ep]}')
        return "\n".join(lines) + "\n"
