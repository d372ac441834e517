"""Writing outputs so that nothing is lost: no half-written file at the final path, and no node
that linreg did not write is ever replaced.

- A regular file is written to a temporary sibling and renamed onto the path only on success;
  an existing one is replaced only with ``--force``.
- A symbolic link is followed: the file it points to is written, the link itself stays.
- A FIFO or character device (a pipe, ``/dev/null``, a terminal) is streamed into as it is:
  renaming a file over it would destroy the node. Block devices and sockets are refused.
- A folder (``linreg-train --out``) is built as a temporary sibling and swapped in; an existing
  one is replaced only with ``--force`` and only when it is a model folder linreg wrote (the
  caller decides that, see :func:`serve.core.manifest.check_replaceable`).

Signals are held off while a rename swaps the old and the new, so an interrupt never leaves the
final path missing.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from serve.core.errors import OutputError, OutputExistsError

_HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM/SIGHUP for the few system calls of a swap (delivered right after)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _os_error(path: Path | str, e: OSError, verb: str = "cannot write") -> OutputError:
    return OutputError(f"{path}: {verb} ({e.strerror or e})")


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


@contextmanager
def _write_errors_named(shown: Path) -> Iterator[None]:
    """A full disk or a failing write names the output, not some temporary file."""
    try:
        yield
    except OSError as e:
        if e.errno in _WRITE_ERRNOS:
            raise _os_error(shown, e) from None
        raise


def resolve_output(path: str | Path) -> tuple[Path, os.stat_result | None]:
    """The path to write (a symlink's target, absolute) and its stat, or None when it is new."""
    final = Path(os.path.realpath(path))
    try:
        return final, os.stat(final)
    except FileNotFoundError:
        return final, None
    except OSError as e:
        raise _os_error(path, e) from None


@contextmanager
def output_file(path: str | Path, *, force: bool = False) -> Iterator[BinaryIO]:
    """A binary stream for the output ``path``, written as the module's docstring says."""
    shown = Path(path)
    final, st = resolve_output(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
            try:
                sink = open(final, "wb")  # noqa: SIM115 - closed below, whatever happens
            except OSError as e:
                raise _os_error(shown, e) from None
            with sink, _write_errors_named(shown):
                yield sink
            return
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a block device" \
            if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) \
            else "not a regular file"
        raise OutputError(f"{shown}: is {kind}; give a file name for the output")
    if st is not None and not force:
        raise OutputExistsError(f"{shown}: already exists; pass --force to overwrite it")
    if not final.parent.is_dir():
        raise OutputError(f"{shown}: the folder {final.parent} does not exist")
    with atomic_file(final) as tmp:
        try:
            sink = open(tmp, "wb")  # noqa: SIM115
        except OSError as e:
            raise _os_error(shown, e) from None
        with sink, _write_errors_named(shown):
            yield sink


@contextmanager
def atomic_file(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; it is renamed onto ``final`` only on success."""
    final = Path(final)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as e:
        raise _os_error(final, e) from None
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
        yield tmp
        try:
            with _signals_held():
                os.replace(tmp, final)
        except OSError as e:
            raise _os_error(final, e) from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(final: str | Path, *, force: bool = False,
               check_replaceable: Callable[[Path], None] | None = None,
               follow_link: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final``, on error it vanishes.

    An existing ``final`` needs ``force`` and must pass ``check_replaceable`` (which raises when
    the folder holds anything linreg did not write). A symlink to a folder is followed (the
    user pointed ``--out`` there), unless ``follow_link`` is false: inside a tree linreg
    manages (a Triton repository) a link may lead anywhere, so it is refused, never replaced.
    """
    shown = Path(final)
    if not follow_link and os.path.islink(final):
        raise OutputError(f"{shown}: is a symbolic link (to {os.readlink(final)}); linreg "
                          "never replaces what a link inside its output points to: remove the "
                          "link or choose another name")
    final, st = resolve_output(final)
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{shown}: exists and is not a folder")
        if not force:
            raise OutputExistsError(f"{shown}: already exists; pass --force to overwrite it")
        if check_replaceable is not None:
            check_replaceable(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as e:
        raise _os_error(shown, e) from None
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
        with _write_errors_named(shown):
            yield tmp
        old = final.with_name(f".{final.name}.old-{os.getpid()}.tmp")
        try:
            with _signals_held():
                if st is not None:
                    final.rename(old)
                tmp.rename(final)
        except OSError as e:
            raise _os_error(shown, e) from None
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
