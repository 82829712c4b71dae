"""Reading on past damage, and keeping account of it.

A damaged file (bit rot, a bad sector, a half-copied transfer) must cost the packets that are
damaged, never the rest of the file. FFmpeg's demuxers give up in two ways on damage: an error,
or an end of data long before the container says the file ends (an MP4 whose sample-size entry
is corrupt reads on to the end of the file and stops there). :class:`ResumingDemuxer` treats both
as damage when the file is meant to go on: it seeks back to the last good position (or further
on, step by step, when the same damage stops it again), drops what it has already delivered, and
carries on. Only when nothing more can be read is the file truly cut short.

What was lost is kept by :class:`vidrestore.io.damage.DamageLog`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from fractions import Fraction
from typing import Any

import av
import av.error
from av.stream import Discard

from vidrestore.errors import InputError
from vidrestore.io.damage import DamageLog
from vidrestore.io.mkv import salvage

__all__ = ["InOrder", "ResumingDemuxer"]

log = logging.getLogger(__name__)

# How far past the last good position each attempt to read on seeks, in seconds: the first re-reads
# from the keyframe before it (the damage may be one bad packet that the seek steps over), then
# further and further on until past the file's stated end (or, when it states none, a minute on).
FIRST_STEPS = (0.0, 0.5)
UNKNOWN_END_LIMIT = 64.0
CONTIGUOUS_FORMATS = frozenset({"matroska", "webm", "avi", "flv"})  # packets back to back: gaps are losses
BYTE_GAP = 2048  # bytes skipped between packets that suggest a loss (overhead and alignment padding stay under)
MAX_RESUMES = 1000  # a bound on seeks per file; each resume that counts delivered something new
RESET_STEP = 1.0  # seconds: a step back at least this long is a reset (joined recordings), not damage


class InOrder:
    """A copied stream's packets, less those the muxer would refuse: a time that goes backwards.

    Muxers refuse a packet whose time is not after the one before (subtitles may share a time). When
    one time is out of line (a flipped bit in a timestamp), either it or every packet after it would
    be refused; so each packet is held until the next arrives, and one whose time lies outside its
    neighbours' is the one left out (the fewest packets), as is any that would still go backwards.
    A healthy stream's times never go backwards, so nothing of it is touched. (A step back that the
    following packets keep to is a reset, not damage: :class:`StreamClock` in the reader carries on
    from it.)

    Two packets that share one time are not damage: demuxers give the time of a PES packet to both
    frames it carries (MPEG-PS audio does), and ``ffmpeg -c copy`` keeps both. Here both are kept:
    the first moves back to where the packet before it ends when that lies between (its true
    time), else the second moves one tick on, as ``ffmpeg -c copy`` moves it. ``shifted`` counts them.

    :meth:`push` returns ``(kept, dropped)`` packets; :meth:`flush` the one still held.
    """

    def __init__(self, equal_ok: bool) -> None:
        self.equal_ok = equal_ok  # subtitles may share a time; audio and data may not
        self._prev: int | None = None
        self._prev_end: int | None = None  # where the packet kept last ends (its time + duration)
        self._held: Any = None
        self.shifted = 0

    def push(self, packet: Any) -> tuple[list[Any], list[Any]]:
        ts = _ts(packet)
        if ts is None:
            return [packet], []
        held, self._held = self._held, packet
        if held is None:
            return [], []
        h = _ts(held)
        assert h is not None
        if h == ts and not self.equal_ok:
            end = self._prev_end
            if end is not None and self._prev is not None and self._prev < end < ts:
                _move(held, end - h)  # the shared time is the later frame's: the earlier one ends the gap
                self.shifted += 1
                h = end
        if self._prev is not None and self._prev <= ts and not self._prev <= h <= ts:
            return [], [held]  # out of line with both neighbours
        return self._keep(held)

    def flush(self) -> tuple[list[Any], list[Any]]:
        held, self._held = self._held, None
        return self._keep(held) if held is not None else ([], [])

    def _keep(self, packet: Any) -> tuple[list[Any], list[Any]]:
        ts = _ts(packet)
        assert ts is not None
        if self._prev is not None and ts == self._prev and not self.equal_ok:
            _move(packet, 1)  # one tick on, as ffmpeg -c copy moves a repeated time
            self.shifted += 1
            ts += 1
        elif self._prev is not None and ts < self._prev:
            if self._prev - ts < RESET_STEP * (1 / packet.time_base if packet.time_base else 1):
                return [], [packet]  # backwards by less than a reset: a damaged time
        self._prev = ts
        self._prev_end = ts + (packet.duration or 0)
        return [packet], []


def _move(packet: Any, ticks: int) -> None:
    """Both of a packet's times ``ticks`` on (in its own time base)."""
    if packet.dts is not None:
        packet.dts += ticks
    if packet.pts is not None:
        packet.pts += ticks


def _ts(packet: Any) -> int | None:
    return packet.dts if packet.dts is not None else packet.pts  # type: ignore[no-any-return]


class ResumingDemuxer:
    """The packets of the streams ``indices`` in file order, reading on past damage (see the module's
    docstring).

    The first pass reads ``container``; each attempt to read on opens the file again with
    ``reopen`` and seeks there, because seeking a container flushes the decoders of its streams,
    and the caller's video decoder must carry on as it was. ``end_s`` is where the container says
    the file ends (None: it does not say; then only a demuxer error, not a quiet end, is taken for
    damage); ending ``tolerance`` seconds short of it still counts as the end. ``anchor`` is the
    index of the stream seeks are made in (the video). Resumes, gaps and streams left out go to
    ``damage``; :attr:`ended_early` says whether the data really stops short.
    """

    def __init__(
        self,
        container: Any,
        reopen: Callable[[], Any],
        indices: Sequence[int],
        anchor: int,
        damage: DamageLog,
        end_s: float | None,
        tolerance: float = 0.1,
    ) -> None:
        self.container = container
        self.tolerance = tolerance  # seconds short of the stated end that still count as the end
        self.reopen = reopen
        self.indices = list(indices)
        self.anchor = anchor
        self.damage = damage
        self.end_s = end_s
        self.reached: dict[int, float] = {}  # per stream: the end of its last packet, seconds
        self.left_out: set[int] = set()  # streams whose damage stopped all the others, no longer read
        self._last: dict[int, int] = {}  # per stream: its last packet's dts (pts), in its time base
        self._failed = False  # whether the last pass ended with an error
        self._resumed: Any = None  # the container of the latest attempt to read on

    def close(self) -> None:
        if self._resumed is not None:
            self._resumed.close()
            self._resumed = None

    def _steps(self) -> Iterator[float]:
        yield from FIRST_STEPS
        step = FIRST_STEPS[-1]
        limit = self.end_s if self.end_s is not None else UNKNOWN_END_LIMIT
        while step < limit:
            step *= 2
            yield step

    def __iter__(self) -> Iterator[Any]:
        failed, _ = yield from self._read(self.container, dedupe=False)
        attempts = 0
        while self._meant_to_go_on(failed) and attempts < MAX_RESUMES:
            before = self._position()
            progressed = False
            for step in self._steps():
                attempts += 1
                target = before + step
                if self.end_s is not None and target > self.end_s:
                    break
                if step == FIRST_STEPS[1]:
                    # Re-reading did not get past it. One stream's damaged index can stop them all (an
                    # MP4 demuxer follows every track's sample table at once): leave out the others one
                    # by one, as FFmpeg leaves out the tracks it does not use, before skipping ahead.
                    failed, progressed = yield from self._leave_out(before)
                    if progressed:
                        break
                container = self._seek(target, self.left_out)
                if container is None:
                    continue
                log.info("%s: reading stopped at %.2f s; reading on from %.2f s", self.damage.path, before, target)
                failed, progressed = yield from self._read(container, dedupe=True)
                if progressed:
                    self.damage.resumes += 1
                    break
            if not progressed:
                break
        self._mark_left_out()

    def _leave_out(self, before: float) -> Generator[Any, None, tuple[bool, bool]]:
        others = [i for i in self.indices if i != self.anchor and i not in self.left_out]
        tries = [[i] for i in reversed(others)] + ([others] if len(others) > 1 else [])
        for candidates in tries:
            container = self._seek(before, self.left_out | set(candidates))
            if container is None:
                continue
            failed, progressed = yield from self._read(container, dedupe=True)
            if progressed:
                self.left_out.update(candidates)
                self.damage.resumes += 1
                log.info(
                    "%s: stream(s) %s stop the others at %.2f s; left out from there",
                    self.damage.path,
                    ", ".join(map(str, candidates)),
                    before,
                )
                return failed, True
        return True, False

    def _mark_left_out(self) -> None:
        end = max(self.reached.values(), default=0.0)
        if self.end_s is not None:
            end = max(end, self.end_s)
        for index in sorted(self.left_out):
            self.damage.mark(index, self.reached.get(index, 0.0), end, why="its index is damaged; left out")

    def _read(self, container: Any, dedupe: bool) -> Generator[Any, None, tuple[bool, bool]]:
        """One pass of ``demux()``: yields packets not delivered before; returns
        ``(ended by an error, delivered anything new)``.

        Demuxers that parse the file as a stream skip damaged bytes without a word: in formats
        whose packets lie back to back (Matroska, WebM, AVI, FLV), a jump in the packets' byte
        positions may be a loss. In Matroska the blocks in such a stretch, and after a quiet end
        short of the stated end, are read by walking the file's own structure (:mod:`.mkv`:
        FFmpeg gives up on the rest of a cluster after one damaged block); a block that does not
        read is damage. Elsewhere it is only a guess (muxers pad, and some interleave other data),
        said as possible damage with its evidence, and changes nothing. (Not MP4/MOV, read by their
        index, where positions jump by design, nor MPEG-TS, whose packets are cut into 188-byte
        pieces among padding.) After a resume, which follows a real demuxer error, a stream whose
        times jump past where it had got to lost what lies between.
        """
        self._wanted = {i for i in self.indices if i not in self.left_out}
        formats = set(container.format.name.split(","))
        by_position = bool(formats & CONTIGUOUS_FORMATS)
        matroska = "matroska" in formats
        demux = container.demux()  # every stream, so that the byte positions run on
        progressed = False
        # streams whose first packet after a resume is still to come (only those with a timed packet
        # before it: a stream that has not started yet has nothing to have lost)
        self._unchecked = set(self._last) if dedupe else set()
        next_pos: int | None = None
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                self._failed = False
                if matroska and next_pos is not None and self._meant_to_go_on(False):
                    for found in self._salvage(container, next_pos, None):
                        progressed |= yield from self._deliver(found, dedupe)
                return False, progressed
            except (av.error.FFmpegError, IndexError) as exc:  # IndexError: PyAV meets a stream made part-way (FLV)
                log.debug("%s: demuxing failed: %s", self.damage.path, exc)
                self._failed = True
                return True, progressed
            if not packet.size:
                continue  # the flush packets demux() ends with: the reader flushes its decoder itself
            pos = packet.pos
            if by_position and pos is not None and pos >= 0:
                if next_pos is not None and pos < next_pos - packet.size:
                    by_position = False  # positions run back: a file not read front to back (non-interleaved)
                elif next_pos is not None and pos - next_pos > BYTE_GAP:
                    if matroska:
                        for found in self._salvage(container, next_pos, pos):
                            progressed |= yield from self._deliver(found, dedupe)
                    else:
                        self.damage.guess(self._position(), f"{pos - next_pos} bytes skipped at byte {next_pos}")
                next_pos = pos + packet.size
            progressed |= yield from self._deliver(packet, dedupe)

    def _deliver(self, packet: Any, dedupe: bool) -> Generator[Any, None, bool]:
        """Yield ``packet`` if it is of a stream read and new (not delivered before a seek), keeping
        account of how far each stream got; returns whether it was delivered with a time."""
        index = packet.stream.index
        if index not in self._wanted:
            return False
        ts = _ts(packet)
        if ts is None or packet.time_base is None:
            yield packet
            return False
        last = self._last.get(index)
        if dedupe and last is not None and ts <= last:
            return False  # delivered before the seek
        at = float((packet.pts if packet.pts is not None else ts) * packet.time_base)
        if index in self._unchecked:
            self._unchecked.discard(index)
            start = self.reached[index]
            if at > start + _gap(packet):  # what lies between was lost
                self.damage.mark(index, start, max(start, at), why="unreadable; read on past it")
        self._last[index] = ts if last is None else max(last, ts)
        end = at + float((packet.duration or 0) * packet.time_base)
        self.reached[index] = max(self.reached.get(index, end), end)
        yield packet
        return True

    def _salvage(self, container: Any, start: int, stop: int | None) -> Iterator[Any]:
        """The Matroska blocks in ``[start, stop)`` that the demuxer stepped over, as packets of
        ``container``'s streams; each damaged block there is marked, and a read counts as a resume."""
        found = salvage(self.damage.path, start, stop)
        streams = container.streams
        where = self._position()
        for pos, stream in found.damaged:
            index = stream if stream is not None and stream in self._wanted else self.anchor
            self.damage.mark(index, where, where, skipped=1, why=f"a damaged block at byte {pos}; read on past it")
        if found.blocks:
            self.damage.resumes += 1
            read = len(found.blocks)
            log.info("%s: %d blocks the demuxer stepped over from byte %d read", self.damage.path, read, start)
        for block in found.blocks:
            if block.stream >= len(streams):
                continue
            stream = streams[block.stream]
            tb = stream.time_base
            packet = av.Packet(block.data)
            ticks = Fraction(found.scale_ns, 1_000_000_000) / tb if tb else Fraction(1)
            packet.pts = round(block.pts * ticks)
            if stream.type != "video":
                packet.dts = packet.pts  # audio and subtitles: decoded in the order they are stored
            packet.duration = round(block.duration * ticks)
            packet.time_base = tb
            packet.is_keyframe = block.keyframe
            packet.stream = stream
            yield packet

    def _position(self) -> float:
        """Where reading stopped: as far as the anchor stream got (or any stream, without one)."""
        if self.anchor in self.reached:
            return self.reached[self.anchor]
        return max(self.reached.values(), default=0.0)

    @property
    def ended_early(self) -> bool:
        """After iterating: whether the data really stops short of the file's stated end."""
        return self._meant_to_go_on(self._failed)

    def _meant_to_go_on(self, failed: bool) -> bool:
        """Whether the file should hold more than was read: its stated end is well past every stream."""
        reached = max(self.reached.values(), default=0.0)
        if self.end_s is None:
            return failed
        return reached < self.end_s - self.tolerance

    def _seek(self, target: float, leave_out: set[int]) -> Any:
        """The file opened again at the keyframe before ``target`` seconds, without the streams
        ``leave_out``; None if that fails."""
        self.close()
        try:
            container = self.reopen()
        except InputError:
            return None
        self._resumed = container
        known = len(container.streams)  # FLV makes streams as it meets them: a reopened file may have fewer
        if self.anchor >= known:
            return None
        for i in leave_out:
            if i < known:
                container.streams[i].discard = Discard.all
        anchor = container.streams[self.anchor]
        try:
            container.seek(int(target / anchor.time_base), stream=anchor, backward=True)
        except (av.error.FFmpegError, OverflowError, ValueError) as exc:
            log.debug("%s: seeking to %.2f s failed: %s", self.damage.path, target, exc)
            return None
        return container


def _gap(packet: Any) -> float:
    """A jump in a stream's times bigger than this (seconds) after reading on is a loss."""
    duration = float((packet.duration or 0) * packet.time_base)
    return max(0.1, 1.5 * duration)
