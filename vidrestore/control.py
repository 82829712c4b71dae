"""Stopping threads together: one stop flag, one error slot, queue helpers that obey them.

Every thread of a run shares one :class:`RunControl`. The first exception any of them
records sets the stop flag; every blocking ``put``/``get`` wakes up at least every
``POLL`` seconds to look at it, so a run stops within a fraction of a second.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

__all__ = ["END", "RunControl", "Stopped", "in_background"]

T = TypeVar("T")

POLL = 0.1

END: Any = object()
"""Sentinel put on a queue after its last item."""


class Stopped(Exception):
    """Raised inside a thread's loop when the run was stopped by someone else."""


class RunControl:
    """The stop flag and the first error of a run."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` if it is the first error, and stop everything."""
        with self._lock:
            if self.error is None:
                self.error = exc
        self.stop_event.set()

    def stop(self) -> None:
        self.stop_event.set()

    def put(self, q: queue.Queue[Any], item: Any) -> None:
        """``q.put(item)``, giving up with :class:`Stopped` once the run stops."""
        while True:
            if self.stopped:
                raise Stopped
            try:
                q.put(item, timeout=POLL)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue[Any]) -> Any:
        """``q.get()``, giving up with :class:`Stopped` once the run stops."""
        while True:
            if self.stopped:
                raise Stopped
            try:
                return q.get(timeout=POLL)
            except queue.Empty:
                continue


class _Raised:
    """An exception travelling through a queue, to be raised where the items are consumed."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def in_background(items: Iterator[T], size: int, name: str) -> Generator[T, None, None]:
    """Iterate ``items`` on a thread of its own, up to ``size`` items ahead of the caller.

    An exception raised by ``items`` is raised again in the caller, after the items produced
    before it. When the caller stops early (an error of its own, Ctrl-C, ``close()``), the thread
    is told to stop and joined before this returns: no thread outlives the iteration.
    """
    control = RunControl()
    ready: queue.Queue[Any] = queue.Queue(maxsize=max(1, size))

    def work() -> None:
        try:
            for item in items:
                control.put(ready, item)
            control.put(ready, END)
        except Stopped:
            return
        except BaseException as exc:  # travels to the caller, in order, and is raised there
            try:
                control.put(ready, _Raised(exc))
            except Stopped:
                return

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = control.get(ready)  # only this generator's own close() sets the stop flag
            if item is END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        control.stop()
        thread.join()
