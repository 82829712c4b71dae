"""Connections that cannot pile up: a client has ``head_timeout`` seconds to send a request's head
(the request line and headers), whether it connects and sends nothing, trickles its headers a byte
at a time, or goes quiet on a kept-alive connection; then the connection is closed. uvicorn closes
idle kept-alive connections and caps how many are open (503 beyond the cap), but waits forever on a
request head that never completes, so 1100 such connections once used up every file descriptor.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["QuietRepeats", "head_timeout_protocol", "make_room"]


def head_timeout_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head has not arrived in ``seconds``."""

    class HeadTimeout(H11Protocol):  # type: ignore[misc]
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                if self._head_timer is None:  # a new request is starting: its head has a deadline
                    self._arm()
            else:
                self._disarm()  # the head is in: the app takes it from here

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # kept alive: the next head has the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeadTimeout


class QuietRepeats(logging.Filter):
    """Lets a repeated log message through once a minute: a flood of refused connections must not
    fill the log (233,149 lines in 15 s, once)."""

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage()[:80]
        now = time.monotonic()
        if now - self._last.get(key, -self.every) < self.every:
            return False
        self._last[key] = now
        return True


def make_room(connections: int, spare: int = 64) -> int:
    """Raise this process's open-file limit (the soft one, up to the hard one) so that ``connections``
    sockets fit beside the ``spare`` files the server itself opens; returns how many connections fit.
    Many systems start processes at 1024 open files: a cap above that would fail at accept() instead
    of answering 503, and a cap far below it lets a few hundred idle connections shut others out."""
    if sys.platform == "win32":
        return connections
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + spare
    if soft != resource.RLIM_INFINITY and soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return connections if soft == resource.RLIM_INFINITY else max(1, min(connections, soft - spare))
