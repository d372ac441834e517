"""One JSON reader for everything linreg parses from outside: HTTP bodies, JSON-lines files and
``model.json``. It never raises anything but :class:`JSONTextError`, whatever the bytes.

- Bytes must be UTF-8 (the error names the first bad byte and its offset).
- Nesting deeper than Python's recursion allows is refused, not a ``RecursionError``.
- Integers too long to be exact doubles are read as floats (a 5,000-digit integer becomes
  ``inf``, refused later as out of range), never a ``ValueError`` from Python's digit limit.
"""

from __future__ import annotations

import json
from typing import Any


class JSONTextError(ValueError):
    """The text is not JSON linreg can read; ``str(e)`` says why, in one line."""


def _parse_int(text: str) -> int | float:
    return int(text) if len(text) <= 18 else float(text)


_DECODER = json.JSONDecoder(parse_int=_parse_int)


def loads(data: bytes | str) -> Any:
    """Parse ``data`` as JSON, or raise :class:`JSONTextError` saying what is wrong."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONTextError(f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                                f"{e.start})") from None
    try:
        return _DECODER.decode(data.removeprefix("\ufeff"))
    except json.JSONDecodeError as e:
        raise JSONTextError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") \
            from None
    except RecursionError:
        raise JSONTextError("JSON nested too deeply") from None
    except (ValueError, OverflowError) as e:  # anything else the decoder can say
        raise JSONTextError(f"not valid JSON ({e})") from None
