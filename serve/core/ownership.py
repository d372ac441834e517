"""What ``--force`` may replace: only what linreg itself wrote, recognised by its content.

A file's *name* proves nothing (a user may keep their own ``run.json`` or ``model.pt``), so
every folder or file linreg replaces carries a marker of its own that is checked first:

- a model folder: a ``model.json`` that reads as a linreg manifest;
- a checkpoint folder: a ``run.json`` holding ``"linreg": "checkpoint"``;
- a Triton ``config.pbtxt``: a first line ``# written by linreg-export`` with the sha256 of the
  rest, so a hand edit shows (the edited file is then the user's);
- linreg-predict's output folder: its ``_linreg_predictions.json`` list of parts.

Beside the marked files, a folder may hold only the files that kind of folder holds and the
temporaries an interrupted linreg run leaves (``.NAME.XXXXXXXX.tmp`` for one of those names).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from pathlib import Path

from serve.core.errors import OutputExistsError

# What atomic_file/atomic_dir (mkstemp's 8 characters, ``old-PID``) and the exporter (``PID``)
# name their temporaries: a dot, the final name, a random or numeric part, ``.tmp``.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:[a-z0-9_]{8}|old-[0-9]+|[0-9]+)\.tmp$")


def own_temporary(entry: str, names: Collection[str]) -> bool:
    """Is ``entry`` a temporary linreg leaves while writing one of ``names``?"""
    m = _TEMPORARY.match(entry)
    return m is not None and m.group("name") in names


def check_owned(folder: Path, *, names: Collection[str], marker: str,
                is_marked: Callable[[Path], bool], kind: str, hint: str) -> None:
    """Raise :class:`OutputExistsError` unless ``folder`` is empty or holds ``marker`` (that
    ``is_marked`` recognises) and nothing but ``names`` and linreg's temporaries of them.

    ``kind`` names the folder in the message ("a linreg model folder"); ``hint`` says what to do.
    Entries are not followed: a symlink named like one of ``names`` is foreign too."""
    entries = sorted(folder.iterdir())
    foreign = [p.name for p in entries
               if not ((p.name in names and not p.is_symlink() and p.is_file())
                       or own_temporary(p.name, names))]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise OutputExistsError(f"{folder}: not {kind} (it holds {shown}); --force replaces "
                                f"only what linreg wrote: {hint}")
    if any(p.name in names for p in entries) and not is_marked(folder / marker):
        raise OutputExistsError(f"{folder}: not {kind} ({marker} is missing or is not "
                                f"linreg's); --force replaces only what linreg wrote: {hint}")
