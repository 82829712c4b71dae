"""Presentation times: frames' times repaired as FFmpeg's best effort, copied streams kept in step."""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

__all__ = ["StreamClock", "TimestampRepair"]


class TimestampRepair:
    """Presentation times for decoded frames: what FFmpeg's best-effort timestamp gives, strictly increasing.

    Frames come from the decoder in display order, but their ``pts`` is not always theirs:
    AVI files with packed B-frames hand each frame the pts of the packet it came in, in decode
    order (``5, 4`` where ``4, 5`` is meant). Three rules, applied in order:

    1. **Resets.** A step back of more than ``jump`` ticks (concatenated recordings, a broken
       muxer) is a discontinuity: every later time is shifted so the stream carries on from
       where it was, keeping its real spacing. Copied streams undo the same resets
       (:class:`StreamClock`), so sync holds.
    2. **Reorder window.** The pts of the last ``window`` frames are held and handed out
       smallest first: a local permutation of the right times comes out sorted.
    3. **Faulty counts.** Like FFmpeg's ``guess_correct_pts``: count how often the (sorted)
       pts and the dts each fail to move forward, and use the dts instead of the pts while
       the pts has failed more often. A time that still does not move forward becomes the
       previous one plus one nominal frame duration.

    :meth:`push` takes one decoded frame's ``(pts, dts)`` and returns the times of the frames
    that are now settled (the oldest pending first); :meth:`flush` returns the rest.
    ``repaired`` counts the frames given a time other than their own pts.
    """

    def __init__(self, nominal: int, window: int = 4, jump: int | None = None) -> None:
        self.nominal = max(1, nominal)
        self.window = max(0, window)
        self.jump = jump if jump is not None else 16 * self.nominal
        self.repaired = 0
        self.resets = 0
        self._heap: list[int] = []
        self._pending: deque[tuple[int | None, int | None]] = deque()  # per frame: (own pts, dts), shifted
        self._offset = 0
        self._top: int | None = None
        self._prev: int | None = None
        self._last_pts: int | None = None
        self._last_dts: int | None = None
        self._faulty_pts = 0
        self._faulty_dts = 0

    def push(self, pts: int | None, dts: int | None = None) -> list[int]:
        value = pts if pts is not None else dts
        if value is None:
            shifted = (self._top + self.nominal) if self._top is not None else 0
        else:
            shifted = value + self._offset
            if self._top is not None and shifted < self._top - self.jump:
                self._offset += self._top + self.nominal - shifted
                self.resets += 1
                shifted = self._top + self.nominal
        own = None if pts is None else pts + self._offset
        heapq.heappush(self._heap, shifted)
        self._pending.append((own, None if dts is None else dts + self._offset))
        self._top = shifted if self._top is None else max(self._top, shifted)
        out = []
        while len(self._pending) > self.window:
            out.append(self._settle())
        return out

    def flush(self) -> list[int]:
        return [self._settle() for _ in range(len(self._pending))]

    def _settle(self) -> int:
        candidate = heapq.heappop(self._heap)
        own, dts = self._pending.popleft()
        if dts is not None:
            self._faulty_dts += self._last_dts is not None and dts <= self._last_dts
            self._last_dts = dts
        self._faulty_pts += self._last_pts is not None and candidate <= self._last_pts
        self._last_pts = candidate
        out = candidate if (self._faulty_pts <= self._faulty_dts or dts is None) else dts
        if self._prev is not None and out <= self._prev:
            out = self._prev + self.nominal
        self._prev = out
        self.repaired += out != own
        return out


class StreamClock:
    """A copied stream's packet times with the same resets undone as :class:`TimestampRepair` undoes.

    A packet more than ``jump`` ticks before the previous packet starts a new stretch: it and every
    later packet are shifted to carry on from where the stream had got to. (Compared with the
    previous packet's start, not its end: subtitle cues may overlap.)
    """

    def __init__(self, jump: int) -> None:
        self.jump = jump
        self.offset = 0
        self.resets = 0
        self._last: int | None = None
        self._end: int | None = None

    def __call__(self, packet: Any) -> None:
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None:
            return
        t = ts + self.offset
        if self._last is not None and self._end is not None and t < self._last - self.jump:
            self.offset += self._end - t
            self.resets += 1
            t = self._end
        if self.offset:
            if packet.pts is not None:
                packet.pts += self.offset
            if packet.dts is not None:
                packet.dts += self.offset
        self._last = t
        end = t + int(packet.duration or 0)
        self._end = end if self._end is None else max(self._end, end)
