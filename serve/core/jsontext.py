"""One JSON reader for everything linreg parses from outside: HTTP bodies, JSON-lines files and
``model.json``. It never raises anything but :class:`JSONTextError`, whatever the bytes.

- Bytes must be UTF-8 (the error names the first bad byte and its offset).
- Nesting deeper than Python's recursion allows is refused, not a ``RecursionError``.
- A lone UTF-16 surrogate (``"\\ud800"``, which ``json`` accepts) is refused, naming where it
  is (``$.inputs[0].data[3]``, or a key): such a string cannot be encoded to UTF-8, and
  onnxruntime, pyarrow and logging would fail on it far from the input.
- Integers too long to be exact doubles are read as floats (a 5,000-digit integer becomes
  ``inf``, refused later as out of range), never a ``ValueError`` from Python's digit limit.
"""

from __future__ import annotations

import json
import re
from typing import Any


class JSONTextError(ValueError):
    """The text is not JSON linreg can read; ``str(e)`` says why, in one line."""


def _parse_int(text: str) -> int | float:
    return int(text) if len(text) <= 18 else float(text)


_DECODER = json.JSONDecoder(parse_int=_parse_int)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # the only way JSON text spells one


def text_problem(s: str) -> str | None:
    """Why ``s`` is not text that can be written out as UTF-8 (a lone surrogate, as a
    non-UTF-8 file name decodes to), or None when it is fine."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"holds a character that is not Unicode text ({s[e.start]!r} at position "
                f"{e.start}: a lone surrogate, or a byte that is not UTF-8)")
    return None


def _first_bad_string(value: Any, where: str) -> str | None:
    """The path of the first key or string under ``value`` that is not UTF-8-encodable."""
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if isinstance(v, str):
            if text_problem(v):
                return at
        elif isinstance(v, dict):
            for k, item in reversed(v.items()):
                if text_problem(k):
                    return f"a key of {at}"
                stack.append((item, f"{at}.{k}" if k.isidentifier() else f"{at}[{k!r}]"))
        elif isinstance(v, list):
            stack.extend((item, f"{at}[{i}]") for i, item in reversed(list(enumerate(v))))
    return None


def loads(data: bytes | str) -> Any:
    """Parse ``data`` as JSON, or raise :class:`JSONTextError` saying what is wrong."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONTextError(f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                                f"{e.start})") from None
    try:
        value = _DECODER.decode(data.removeprefix("\ufeff"))
    except json.JSONDecodeError as e:
        raise JSONTextError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") \
            from None
    except RecursionError:
        raise JSONTextError("JSON nested too deeply") from None
    except (ValueError, OverflowError) as e:  # anything else the decoder can say
        raise JSONTextError(f"not valid JSON ({e})") from None
    if _SURROGATE_ESCAPE.search(data):  # rare: only then walk the value
        where = _first_bad_string(value, "$")
        if where is not None:
            raise JSONTextError(f"{where}: a lone UTF-16 surrogate (\\ud800-\\udfff without "
                                "its pair) is not text; send valid Unicode")
    return value
