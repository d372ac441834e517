"""Bounds uvicorn's httptools protocol does not have: header size and header time.

uvicorn's ``h11_max_incomplete_event_size`` applies to the h11 parser only; with httptools (the
faster parser linreg uses) a client may send a 200 MB header, or send its headers one byte a
minute and hold a connection forever. This subclass counts the request line and header bytes
as the parser reports them and answers ``431`` past ``--max-header-bytes``, and closes a
connection whose request headers are not complete ``--request-timeout`` seconds after it
opened or after its request began (the body and the prediction have their own deadline in the
app). uvicorn makes the protocol itself, so the settings come from the environment
(:meth:`serve.server.settings.ServerSettings.from_env`, read once per process).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serve.server.settings import ServerSettings

log = logging.getLogger("linreg.serve")


@functools.cache
def _settings() -> ServerSettings:
    return ServerSettings.from_env()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a bound on header bytes and on the time to send them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self.max_header_bytes = settings.max_header_bytes
        self.header_timeout = settings.request_timeout
        self._head_bytes = 0
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes, self._in_head = 0, True
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # after a 431 the parser's own complaint has no one to go to
            super().send_400_response(msg)

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_header_bytes and not self._refused:
            self._refuse(431, f"request line and headers larger than {self.max_header_bytes:,} "
                              "bytes (--max-header-bytes)")
            raise ValueError("header too large")  # stops the parser; see send_400_response

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(408, f"request headers did not arrive within {self.header_timeout:g} s "
                              "(--request-timeout)")
        elif self.cycle is None:
            self.transport.close()  # a connection that never sent a request

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        log.warning("%s %s", status, message)
        body = json.dumps({"error": message}).encode()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                             % (status, reason, len(body), body))
        self.transport.close()
