"""Progress for long work (tqdm), the same in every command.

A bar shows on stderr only when stderr is a terminal, only without ``-q``, and only once the
work has lasted ``delay`` seconds: whether to show one is decided by time, not by a guess of the
work's size, and its ETA is measured from the start. Log lines go above the bar
(:meth:`Progress.echo`), never glued to it.
"""

from __future__ import annotations

import sys
from typing import Any

import click

DELAY = 2.0  # seconds of work before a bar appears


class Progress:
    """A bar from 0 to ``total`` (epochs, rows, ...), or nothing when it should not show."""

    def __init__(self, total: float | None, *, desc: str, unit: str, quiet: bool = False,
                 delay: float = DELAY) -> None:
        self._bar: Any = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            counted = "{n_fmt}" if unit == "rows" else "{n:.0f}"  # epochs move in fractions
            self._bar = tqdm(total=total, desc=desc, unit=unit, delay=delay, file=sys.stderr,
                             dynamic_ncols=True, leave=True, unit_scale=unit == "rows",
                             bar_format="{l_bar}{bar}| " + counted + "/{total_fmt} "
                                        "[{elapsed}<{remaining}, {rate_fmt}]")

    def to(self, done: float) -> None:
        """Move the bar to ``done`` (an absolute count)."""
        if self._bar is not None and done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def echo(self, line: str) -> None:
        """Print ``line`` on stdout, above the bar."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            click.echo(line)

    def close(self, done: float | None = None) -> None:
        """End the bar; with ``done``, at exactly that count (an estimate's bar ends at 100%)."""
        if self._bar is None:
            return
        if done is not None:
            self._bar.total = done
            self.to(done)
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()
