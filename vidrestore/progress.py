"""Progress for people: a bar on a terminal, plain lines elsewhere (a file, a pipe, CI, ``nohup``).

On a terminal tqdm draws a bar with a total and an ETA. Without one, a bar's carriage returns
would be noise, so one plain line is written every ``every`` seconds (10, or
``$VIDRESTORE_PROGRESS_SECONDS``; frames done of the total, frames/s and ETA) and nothing between:
a run whose stderr goes to a log still says it is alive.
Speeds keep three significant digits (0.0462 frames/s, not 0.0).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "duration", "speed"]


def speed(per_s: float) -> str:
    """A rate with three significant digits: 0.0462, 4.62, 46.2, 462."""
    return f"{per_s:.3g}"


def duration(seconds: float) -> str:
    """``1:02:03``, ``2:03``: a time as people read it."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress through ``total`` units (None: not known) of the work called ``name``."""

    def __init__(
        self,
        name: str,
        total: int | None,
        unit: str = "frame",
        every: float | None = None,
        stream: TextIO | None = None,
        bar: bool | None = None,
    ) -> None:
        self.name, self.total, self.unit = name, total, unit
        self.every = every if every is not None else float(os.environ.get("VIDRESTORE_PROGRESS_SECONDS") or 10.0)
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = self.said = time.monotonic()
        self._bar: Any = None
        if bar if bar is not None else self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=unit, desc=name, dynamic_ncols=True, leave=False, file=self.stream)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self.said >= self.every:
            self.said = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        """``clip.mp4: 120/900 frames (13%), 4.62 frames/s, ETA 2:49``."""
        took = (now or time.monotonic()) - self.start
        rate = self.done / took if took > 0 else 0.0
        if self.total:
            left = max(self.total - self.done, 0)
            eta = f", ETA {duration(left / rate)}" if rate > 0 else ""
            head = f"{self.done}/{self.total} {self.unit}s ({min(100, 100 * self.done // self.total)}%)"  # an estimate
        else:
            head, eta = f"{self.done} {self.unit}s", ""
        return f"{self.name}: {head}, {speed(rate)} {self.unit}s/s{eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
