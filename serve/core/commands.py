"""What every linreg console script shares: user errors end in one line, never a traceback.

Also the signals: SIGTERM and SIGHUP unwind like Ctrl-C (SIGINT), so every ``finally`` runs and
no temporary file or folder is left behind; the exit status is 128 + the signal's number.
"""

from __future__ import annotations

import _thread
import errno
import math
import os
import signal
import sys
import threading
from typing import Any

import click

from serve.core.errors import LinregError

CONTEXT = {"help_option_names": ["-h", "--help"]}


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM/SIGHUP handler so the interrupted work unwinds and cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _redeliver_signals(previous: Any) -> Any:
    """A ``sys.unraisablehook`` that gives a swallowed signal back. A signal handler runs
    between any two bytecodes of the main thread, so it may land inside a weakref callback or a
    ``__del__`` (e.g. importlib's module-lock callback), where Python prints the exception and
    drops it: the signal would be lost and the command run on. The signal is raised again, so
    its handler runs once more, outside that callback."""
    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, KeyboardInterrupt):  # raised by a signal's handler
            # From another thread, a moment later: the main thread has left the callback when
            # its handler runs again (were it swallowed again, this hook would try again).
            signum = getattr(exc, "signum", signal.SIGINT)
            threading.Timer(0.01, _thread.interrupt_main, args=(signum,)).start()
            return
        previous(unraisable)
    return hook


class _PipeClosed(Exception):
    """The reader of our stdout went away (``| head``): not an error."""


class _Stopped(LinregError):
    """A signal ended the command; its work has unwound (temporaries removed) by now."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def stopped(e: KeyboardInterrupt, hint: str = "") -> LinregError:
    """The one-line error for a signal (Ctrl-C, SIGTERM), with ``hint`` after it (e.g. how to
    resume), exiting 128 + the signal's number."""
    if isinstance(e, Terminated):
        return _Stopped(f"stopped by {signal.Signals(e.signum).name}{hint}", 128 + e.signum)
    return _Stopped(f"interrupted{hint}", 130)


class OneLineErrors(click.Command):
    """A click command whose user errors print as one ``PROG: error: ...`` line on stderr.

    click's own usage errors print a usage block; the conventions ask for one line, so bad flags,
    bad files and library errors (:class:`LinregError`) all end the same way.
    """

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        prog = prog_name or self.name or "linreg"
        previous = {}
        hook = sys.unraisablehook
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, _raise_terminated)
                        for sig in (signal.SIGTERM, signal.SIGHUP)}
            sys.unraisablehook = _redeliver_signals(hook)
        try:
            return self._main(prog, args, prog_name, **extra)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sys.unraisablehook = hook

    def invoke(self, ctx: click.Context) -> Any:
        # click turns KeyboardInterrupt into Abort (and prints a blank line); ours says which
        # signal it was and exits 128 + its number.
        try:
            return super().invoke(ctx)
        except Terminated as e:
            raise _Stopped(f"stopped by {signal.Signals(e.signum).name}", 128 + e.signum) \
                from None
        except KeyboardInterrupt:
            raise _Stopped("interrupted", 130) from None
        except OSError as e:  # click would exit 1 on a closed pipe; the reader simply had enough
            if e.errno == errno.EPIPE:
                raise _PipeClosed() from None
            raise

    def _main(self, prog: str, args: Any, prog_name: str | None, **extra: Any) -> Any:
        try:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:  # --help, --version
            sys.exit(e.exit_code)
        except click.ClickException as e:
            _fail(prog, e.format_message(), e.exit_code)
        except LinregError as e:
            _fail(prog, str(e), e.exit_code)
        except click.Abort:
            _fail(prog, "aborted", 1)
        except KeyboardInterrupt:
            _fail(prog, "interrupted", 130)
        except (BrokenPipeError, _PipeClosed):  # `linreg-predict ... | head`: it has enough
            _quiet_stdout()
            sys.exit(0)
        except MemoryError:
            _fail(prog, "out of memory; use a smaller input, --batch-rows, or fewer rows", 1)
        except OSError as e:  # the last net: a file the checks above could not foresee
            where = f"{e.filename}: " if e.filename else ""
            _fail(prog, f"{where}{e.strerror or e}", 1)


def _quiet_stdout() -> None:
    """Point stdout at nothing, so the interpreter's final flush finds no closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _fail(prog: str, message: str, code: int) -> None:
    message = " ".join(message.split())  # one line, whatever the message
    try:
        click.echo(f"{prog}: error: {message}", err=True)
    except OSError:
        pass
    sys.exit(code)


class FiniteFloat(click.ParamType):
    """A float within ``[min, max]`` (either end open or absent); NaN and infinities refused.

    click's FloatRange lets ``nan`` through (every comparison with NaN is false); settings such
    as ``--lr`` or ``--val-fraction`` must be real numbers."""

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None, *,
                 min_open: bool = False, max_open: bool = False) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float) and math.isfinite(value):
            v = value
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
            if not math.isfinite(v):
                self.fail(f"{value!r} is not a finite number", param, ctx)
        low_bad = self.min is not None and (v <= self.min if self.min_open else v < self.min)
        high_bad = self.max is not None and (v >= self.max if self.max_open else v > self.max)
        if low_bad or high_bad:
            self.fail(f"{value} is not in {self.describe()}", param, ctx)
        return v

    def describe(self) -> str:
        """``the range [0, 1)``: the interval in words, for messages."""
        lo = "(-inf" if self.min is None else ("(" if self.min_open else "[") + f"{self.min:g}"
        hi = "inf)" if self.max is None else f"{self.max:g}" + (")" if self.max_open else "]")
        return f"the range {lo}, {hi}"


def max_processes() -> int:
    """The most local processes a flag may start here: ``PER_CORE`` per usable core, and no
    more than the open-file limit allows (each process holds a few pipes)."""
    import resource

    from serve.core.formats import PER_CORE, usable_cores

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    by_files = soft // 16 if soft != resource.RLIM_INFINITY else 1 << 20
    return max(1, min(PER_CORE * usable_cores(), by_files))


class ProcessCount(click.ParamType):
    """A number of local processes to start (``--nproc``, ``--workers``): 1 to
    :func:`max_processes`, checked before any process starts, since a count the machine cannot
    hold would exhaust its memory (the kernel then kills unrelated processes) or its files."""

    name = "integer"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        n = click.IntRange(min=1).convert(value, param, ctx)
        limit = max_processes()
        if n > limit:
            from serve.core.formats import PER_CORE

            self.fail(f"{n} processes is more than this machine can run well: use 1 to {limit} "
                      f"({PER_CORE} per core)", param, ctx)
        return n
