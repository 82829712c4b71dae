"""Keeping account of damage: what each stream lost (time ranges, packets), guesses with their
evidence, and which packets a decoder's error cost. For ``--report``, the closing warning and ``--strict``."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidrestore.errors import InputError

__all__ = ["DamageLog", "ErrorLocator", "StreamDamage", "packet_span"]

log = logging.getLogger(__name__)


def packet_span(packet: Any) -> tuple[float, float] | None:
    """A packet's start and end in seconds (by its pts, else its dts), or None without a time."""
    ts = packet.pts if packet.pts is not None else packet.dts
    if ts is None or packet.time_base is None:
        return None
    start = float(ts * packet.time_base)
    return start, start + float((packet.duration or 0) * packet.time_base)


MAX_GUESSES = 100  # possible-damage notes kept per file


@dataclass
class StreamDamage:
    """What one stream lost: time ranges (seconds, merged) and packets skipped."""

    index: int
    kind: str
    ranges: list[list[float]] = field(default_factory=list)
    packets_skipped: int = 0
    missing: int = 0  # packets the container's index lists that were never found (where it is not known)

    def add(self, start: float, end: float, merge: float = 0.5) -> None:
        start, end = round(start, 3), round(max(start, end), 3)
        for r in self.ranges:
            if start <= r[1] + merge and end >= r[0] - merge:
                r[0], r[1] = min(r[0], start), max(r[1], end)
                return
        self.ranges.append([start, end])
        self.ranges.sort()


class DamageLog:
    """Damage found in one input file: per-stream ranges, skipped packets, resumes, a real early end.

    With ``strict``, the first damage raises :class:`InputError` (exit 4) instead.
    """

    def __init__(self, path: Path, kinds: dict[int, str], strict: bool = False) -> None:
        self.path = path
        self.strict = strict
        self.streams = {i: StreamDamage(i, k) for i, k in kinds.items()}
        self.resumes = 0
        self.ended_early_at: float | None = None
        self.expected_end: float | None = None
        # guesses (bytes skipped between packets): reported with their evidence, never acted on
        self.possible: list[dict[str, Any]] = []

    def guess(self, at: float, evidence: str) -> None:
        """Possible damage at ``at`` seconds: a guess, said with its ``evidence``; nothing is dropped."""
        if len(self.possible) < MAX_GUESSES:
            self.possible.append({"at": round(at, 3), "evidence": evidence})
        log.debug("%s: possible damage at %.3f s: %s", self.path, at, evidence)

    def mark(self, index: int, start: float, end: float, skipped: int = 0, why: str = "damaged") -> None:
        s = self.streams.get(index)
        if s is None:
            return
        s.add(start, end)
        s.packets_skipped += skipped
        log.debug("%s: stream %d %s at %.3f-%.3f s", self.path, index, why, start, end)
        self._stop_if_strict(f"{s.kind} stream {index} is damaged at {start:.2f} s ({why})")

    def missing(self, index: int, count: int) -> None:
        """``count`` packets of stream ``index`` are listed by the file's index but were not found."""
        s = self.streams.get(index)
        if s is None or count <= 0:
            return
        s.missing += count
        self._stop_if_strict(f"{count} {s.kind} packet(s) of stream {index} listed by its index are missing")

    def ended_early(self, at: float) -> None:
        """The data really stops at ``at`` seconds, before :attr:`expected_end`."""
        self.ended_early_at = round(at, 3)
        self._stop_if_strict(f"the file ends early, at {at:.2f} s (truncated)")

    def _stop_if_strict(self, what: str) -> None:
        if self.strict:
            raise InputError(f"{self.path}: {what}; --strict stops")

    @property
    def packets_skipped(self) -> int:
        return sum(s.packets_skipped for s in self.streams.values())

    @property
    def damaged(self) -> bool:
        """Whether FFmpeg's own evidence (an error, a corrupt flag, an index that lists more) says so."""
        return self.ended_early_at is not None or any(s.ranges or s.missing for s in self.streams.values())

    @property
    def worth_saying(self) -> bool:
        """Damaged, or possibly damaged: the file gets a line in the closing warnings and the report."""
        return self.damaged or bool(self.possible)

    def to_dict(self) -> dict[str, Any]:
        """The report's entry for this file."""
        return {
            "file": str(self.path),
            "streams": [
                {
                    "index": s.index,
                    "kind": s.kind,
                    "ranges": s.ranges,
                    "packets_skipped": s.packets_skipped,
                    "packets_missing": s.missing,
                }
                for s in self.streams.values()
                if s.ranges or s.packets_skipped or s.missing
            ],
            "packets_skipped": self.packets_skipped,
            "resumed": self.resumes,
            "ended_early": self.ended_early_at is not None,
            "ended_at": self.ended_early_at,
            "expected_end": self.expected_end,
            "damaged": self.damaged,
            "possible": self.possible,
        }

    def summary(self) -> str:
        """One line for the closing warnings."""
        if not self.damaged:
            where = ", ".join(f"{g['at']:.2f} s ({g['evidence']})" for g in self.possible[:3])
            more = f" and {len(self.possible) - 3} more" if len(self.possible) > 3 else ""
            return f"{self.path} may be damaged (a guess; nothing was dropped): at {where}{more}"
        parts = []
        for s in self.streams.values():
            said = []
            if s.ranges:
                spans = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in s.ranges[:3])
                said.append(f"at {spans}" + (f" and {len(s.ranges) - 3} more" if len(s.ranges) > 3 else ""))
            if s.missing:
                said.append(f"{s.missing} packet(s) the index lists are missing")
            if said:
                parts.append(f"{s.kind} #{s.index} " + ", ".join(said))
        text = f"{self.path} is damaged"
        if parts:
            text += ": " + "; ".join(parts)
        text += f" ({self.packets_skipped} packet(s) skipped"
        if self.resumes:
            text += f", read on past the damage {self.resumes} time(s)"
        text += ")"
        if self.ended_early_at is not None:
            text += f"; the file really ends early, at {self.ended_early_at:.2f} s"
            if self.expected_end:
                text += f" of {self.expected_end:.2f} s"
            text += " (truncated)"
        return text


Span = tuple[int, float, float]  # a video packet: its pts, and its start and end in seconds


class ErrorLocator:
    """Which packets a video decoder's error cost.

    A frame-threaded decoder reports an error a few packets after the packet it belongs to. So an
    error is settled once the decoder has moved well past it: the packets sent just before it whose
    frames never came out are the damaged ones (the decoder may drop a few more frames after a bad
    one; those are lost too). If every frame came out, the decoder concealed the damage in place,
    and the packet that was being sent is named.
    """

    def __init__(self, window: int = 32, settle: int = 24) -> None:
        self.window = window
        self.settle = settle
        self._recent: deque[Span] = deque(maxlen=window)
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._sent = 0
        self._open: list[tuple[int, list[Span]]] = []

    def sent(self, span: Span) -> None:
        self._recent.append(span)
        self._sent += 1

    def seen(self, pts: int) -> None:
        self._seen.add(pts)
        self._seen_order.append(pts)
        if len(self._seen_order) > 8 * self.window:
            self._seen.discard(self._seen_order.popleft())

    def error(self) -> None:
        """The decoder just raised: the damaged packet is among the ones sent lately."""
        self._open.append((self._sent, list(self._recent)))

    def settled(self, final: bool = False) -> list[list[Span]]:
        """Per error that can be settled now, the packets it cost (the first is the one to blame)."""
        out, still = [], []
        for when, recent in self._open:
            if not final and self._sent < when + self.settle:
                still.append((when, recent))
                continue
            lost = [span for span in recent if span[0] not in self._seen]
            out.append(lost or recent[-1:])
        self._open = still
        return out
