"""The HTTP protocol of the scoring service, bounded against slow and oversized clients.

uvicorn's httptools protocol waits for a client as long as it takes: a connection holding half
its headers, or half its body, is kept forever, and the size of the headers is not limited.
This subclass closes a connection whose headers are not complete within the header timeout
(from its first byte or the end of the previous response), whose body is not complete within
the body timeout, or whose headers exceed the header limit (431). The limits are settings
(``FRAUDSTREAM_SCORING_HEADER_TIMEOUT_S`` and the rest), read once per server process.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.core.settings import ScoringSettings, Settings


@functools.cache
def _limits() -> ScoringSettings:
    return Settings().scoring


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = _limits()
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes, self._tail = 0, b""
        self._in_headers = True

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers and self._head_too_large(data):
            self._refuse_headers()
            return
        super().data_received(data)

    def _head_too_large(self, data: bytes) -> bool:
        """Count the head's bytes up to its blank line, before the parser sees them."""
        window = self._tail + data
        end = window.find(b"\r\n\r\n")
        self._header_bytes += (end + 4 - len(self._tail)) if end >= 0 else len(data)
        self._tail = window[-3:]
        return self._header_bytes > self._limits.max_header_bytes

    def _refuse_headers(self) -> None:
        self._disarm()
        body = b"request headers too large"
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_headers, self._header_bytes, self._tail = False, 0, b""
        self._arm(self._limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # the next request's headers, on keep-alive
            self._in_headers = True
            self._arm(self._limits.header_timeout_s + self.timeout_keep_alive)
