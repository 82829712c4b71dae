"""Demux and decode a video in a background thread.

Frames go out through a bounded queue in presentation order, each with a strictly
increasing pts in the video stream's own time base. Packets of the streams we copy
(audio, subtitles) go out through a second queue, undecoded; the writer interleaves
them. The frame queue's bound is what bounds memory: the reader blocks on it, so the
packet queue can only run ahead by the same stretch of time.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.stream import Disposition
from av.video.reformatter import Interpolation

from vidrestore.control import END, RunControl, Stopped
from vidrestore.errors import InputError
from vidrestore.io.recovery import (
    DamageLog,
    ErrorLocator,
    InOrder,
    ResumingDemuxer,
    avi_header_seconds,
    avi_index_counts,
)
from vidrestore.records import Frame
from vidrestore.transfer import view_for

__all__ = [
    "SWS_FLAGS",
    "StreamClock",
    "StreamInfo",
    "TimestampRepair",
    "VideoInfo",
    "VideoReader",
    "is_cover_art",
    "main_video_stream",
    "open_input",
    "to_rgb",
]

log = logging.getLogger(__name__)

# swscale colour matrices by AVColorSpace value (others: swscale's default, BT.601)
_SWS_COLORSPACE = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}

# Accurate rounding and full-resolution chroma: without them every YUV->RGB->YUV round trip
# darkens the picture by about one level (measured: luma mean -1.08 per trip).
SWS_FLAGS = (
    Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP
)


@dataclass(frozen=True)
class VideoInfo:
    """What the writer needs to know to write a video like the input."""

    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None
    pix_fmt: str
    bit_depth: int
    rotation: int
    color_primaries: int
    color_trc: int
    colorspace: int
    color_range: int
    duration_s: float | None
    start_s: float
    frames: int  # 0 when the container does not say
    codec: str
    metadata: dict[str, str]
    container_metadata: dict[str, str]
    # HDR (PQ or HLG input): the first frame's mastering-display / light-level side data, raw; None for SDR
    hdr: dict[str, bytes] | None = None


@dataclass(frozen=True)
class StreamInfo:
    """A non-video stream, for dry runs and reports."""

    index: int
    kind: str
    codec: str
    language: str | None


def open_input(path: Path) -> Any:
    """``av.open(path)`` with every failure turned into an :class:`InputError` (exit 4)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a video or image")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    try:
        return av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: not a readable video or image ({exc.strerror or exc})") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: cannot open ({exc})") from exc


def _bit_depth(pix_fmt: str | None) -> int:
    if not pix_fmt:
        return 8
    try:
        fmt = av.VideoFormat(pix_fmt)
        return max(c.bits for c in fmt.components)
    except (ValueError, av.error.FFmpegError):
        return 8


def to_rgb(frame: av.VideoFrame, deep: bool) -> np.ndarray:
    """A decoded frame as ``(H, W, 3)`` RGB: uint8, or uint16 when ``deep`` (> 8-bit source)."""
    kwargs: dict[str, Any] = {"interpolation": SWS_FLAGS}
    cs = _SWS_COLORSPACE.get(int(frame.colorspace))
    if cs is not None:
        kwargs["src_colorspace"] = cs
    if int(frame.color_range) in (1, 2):
        kwargs["src_color_range"] = int(frame.color_range)
    rgb = frame.reformat(format="rgb48le" if deep else "rgb24", **kwargs)
    return rgb.to_ndarray()  # type: ignore[no-any-return]


_IMAGE_CODECS = frozenset({"mjpeg", "png", "bmp", "gif", "webp", "tiff", "jpegls", "jpeg2000"})


def is_cover_art(stream: Any) -> bool:
    """An attached picture (MP4, MOV), or a still-image track of at most one frame (Matroska's covers)."""
    if int(stream.disposition) & int(Disposition.attached_pic):
        return True
    name = stream.codec_context.name if stream.codec_context is not None else ""
    return name in _IMAGE_CODECS and (stream.frames or 0) <= 1


def main_video_stream(streams: Any) -> Any:
    """The stream to restore: the longest video track that is not cover art; a still-image track only
    when nothing else moves; None when there is only an attached picture."""
    candidates = [s for s in streams if not int(s.disposition) & int(Disposition.attached_pic)]
    if not candidates:
        return None
    return min(candidates, key=lambda s: (is_cover_art(s), -float((s.duration or 0) * (s.time_base or 0)), s.index))


def _span(packet: Any) -> tuple[float, float] | None:
    """A packet's start and end in seconds (by its pts, else its dts), or None without a time."""
    ts = packet.pts if packet.pts is not None else packet.dts
    if ts is None or packet.time_base is None:
        return None
    start = float(ts * packet.time_base)
    return start, start + float((packet.duration or 0) * packet.time_base)


def _video_packets(container: Any, video: Any) -> Iterator[Any]:
    """The video packets from where ``container`` stands to where demuxing stops (an error included,
    or a stream the file makes part-way, which PyAV cannot index: FLV does, when damage flips its
    audio flags)."""
    demux = container.demux(video)
    while True:
        try:
            packet = next(demux)
        except (StopIteration, av.error.FFmpegError, IndexError):
            return
        if packet.size:
            yield packet


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


class VideoReader:
    """Open ``path``; :meth:`start` the decode thread; iterate :class:`Frame` objects.

    ``packets`` yields ``(stream_index, av.Packet)`` of the copied streams, then END.
    Damage costs the damaged packets only: demuxing reads on past it (:mod:`vidrestore.io.recovery`),
    video packets that fail to decode and copied packets that are flagged corrupt or (audio) fail
    to decode are skipped, and all of it is kept in ``damage``. A file whose data really ends
    early ends at the last decodable frame (``truncated_at``). With ``strict``, the first damage
    stops the run instead (InputError, exit 4).
    """

    def __init__(
        self,
        path: Path,
        control: RunControl,
        *,
        queue_size: int = 16,
        threads: int = 0,
        copy_audio: bool = True,
        copy_subtitles: bool = True,
        copy_other: bool = True,
        strict: bool = False,
        seek_pts: int | None = None,
        decode_video: bool = True,
    ) -> None:
        """``copy_other``: copy data tracks, other video tracks and attachments too; ``seek_pts``:
        start at the video keyframe at or before this time (video time base) instead of the start;
        ``decode_video`` False: demux only, for the copied streams (no frames come out)."""
        self.path = path
        self.strict = strict
        self.seek_pts = seek_pts
        self.decode_video = decode_video
        self.copy_other = copy_other
        self.control = control
        self.container = open_input(path)
        try:
            self._setup(threads, copy_audio, copy_subtitles)
        except BaseException:
            self.container.close()
            raise
        self.frames: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.packets: queue.Queue[Any] = queue.Queue()  # bounded in time by the frame queue
        self.decoded = 0
        self.truncated_at: float | None = None
        self.last_end_s = 0.0
        self._thread: threading.Thread | None = None
        self._finished = False

    def _setup(self, threads: int, copy_audio: bool, copy_subtitles: bool) -> None:
        c = self.container
        v = main_video_stream(c.streams.video)
        if v is None:
            raise InputError(f"{self.path}: has no video stream" + (" (only cover art)" if c.streams.video else ""))
        self.video = v
        cc = v.codec_context
        if cc is None:
            raise InputError(f"{self.path}: the video codec is not supported by this FFmpeg build")
        cc.thread_type = "AUTO"  # frame and slice threads; must be set before the codec opens
        cc.thread_count = threads
        # data (timecodes, telemetry) and other video tracks (cover art): copied
        kinds = {"data", "video"} if self.copy_other else set()
        if copy_audio:
            kinds.add("audio")
        if copy_subtitles:
            kinds.add("subtitle")
        self.copy_streams = [s for s in c.streams if s.type in kinds and s.index != v.index]
        # fonts of styled subtitles
        self.attachments = [s for s in c.streams if s.type == "attachment"] if self.copy_other else []
        tb = v.time_base or Fraction(1, 90000)
        rate = v.average_rate or v.guessed_rate or v.base_rate
        duration_s = float(v.duration * tb) if v.duration else (c.duration / 1e6 if c.duration else None)
        self.info = VideoInfo(
            width=cc.width,
            height=cc.height,
            time_base=tb,
            rate=Fraction(rate) if rate else None,
            pix_fmt=cc.pix_fmt or "yuv420p",
            bit_depth=_bit_depth(cc.pix_fmt),
            rotation=0,
            color_primaries=int(cc.color_primaries),
            color_trc=int(cc.color_trc),
            colorspace=int(cc.colorspace),
            color_range=int(cc.color_range),
            duration_s=duration_s,
            start_s=float(v.start_time * tb) if v.start_time is not None else 0.0,
            frames=v.frames or 0,
            codec=cc.name,
            metadata=dict(v.metadata),
            container_metadata=dict(c.metadata),
        )
        if cc.width <= 0 or cc.height <= 0:
            raise InputError(f"{self.path}: the video stream has no picture size (damaged header?)")
        nominal = max(1, round(1 / (rate * tb))) if rate else 1
        # a step back of more than a second is a reset (concatenated recordings), not reordering
        self.repair = TimestampRepair(nominal, jump=max(16 * nominal, round(1 / tb)))
        self.clocks = {s.index: StreamClock(round(1 / (s.time_base or tb))) for s in self.copy_streams}
        self._orders = {s.index: InOrder(equal_ok=s.type == "subtitle") for s in self.copy_streams}
        self._avi = "avi" in c.format.name.split(",")  # times count packets; an idx1 lists what should be there
        # AVI stores no presentation times: frames of B-frame video (packed or not) come with their
        # decode-order times, and putting them in order is the normal reading of the file, not a repair
        self.timed_by_count = self._avi
        self.damage = DamageLog(self.path, {s.index: s.type for s in (v, *self.copy_streams)}, self.strict)
        ends = [float((v.start_time or 0) * tb) + duration_s] if duration_s else []
        if c.duration:
            ends.append(((c.start_time or 0) + c.duration) / 1e6)
        self.end_s = max(ends) if ends else None  # where the container says the file ends
        self.damage.expected_end = self.end_s
        # ending this much short of it still counts as the end: two and a half frames, at least 0.1 s
        self._tolerance = max(0.1, 2.5 / float(rate)) if rate else 0.1
        self._last_pts: int | None = None  # the decoder's latest frame time, as it came
        self._last_key: int | None = None  # the latest keyframe packet's decode time (dts, else pts)
        self._cut_short = False  # the file holds fewer frames than its header states (AVI)
        self._errors = ErrorLocator()
        self._pending: deque[tuple[np.ndarray, int]] = deque()  # decoded pictures waiting for their time

    def stream_infos(self) -> list[StreamInfo]:
        out = []
        for s in self.container.streams:
            name = s.codec_context.name if s.codec_context is not None else "unknown"
            out.append(StreamInfo(s.index, s.type, name, s.metadata.get("language")))
        return out

    # -- the thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vidrestore-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._decode_all()
        except Stopped:
            return
        except BaseException as exc:
            self.control.fail(exc)
            return
        finally:
            self.packets.put(END)
        try:
            self.control.put(self.frames, END)
        except Stopped:
            return

    def _decode_all(self) -> None:
        deep = self.info.bit_depth > 8
        if self.seek_pts is not None:
            try:
                self.container.seek(self.seek_pts, stream=self.video, backward=True)
            except av.error.FFmpegError as exc:
                raise InputError(f"{self.path}: cannot seek to {self.seek_pts} ({exc})") from exc
        demux = ResumingDemuxer(
            self.container,
            lambda: open_input(self.path),
            [self.video.index, *(s.index for s in self.copy_streams)],
            self.video.index,
            self.damage,
            self.end_s,
            self._tolerance,
        )
        try:
            self._decode_packets(demux, deep)
        finally:
            demux.close()
        if self.decoded == 0 and self.decode_video:
            raise InputError(f"{self.path}: no video frame could be decoded")
        if demux.ended_early or self._cut_short:
            self.truncated_at = self.last_end_s
            self.damage.ended_early(max([self.last_end_s, *demux.reached.values()]))
            log.info("%s: the data ends at %.2f s; the output holds what could be decoded", self.path, self.last_end_s)

    def _check_avi(self, read: dict[int, tuple[int, int]]) -> bool:
        """AVI demuxers step over lost data without a word, and AVI times count packets, so no gap
        shows: what the file's index lists and was never read is the trace (in bytes: parsers join
        and split audio chunks). Without the index (it is at the end), the header's length says
        whether the file ends early (FFmpeg takes the duration from what it finds). Returns whether
        the file ends early."""
        if not self._avi:
            return False
        listed = avi_index_counts(self.path)
        if listed is not None:
            for index, (count, size) in read.items():
                chunks, total = listed.get(index, (0, 0))
                if size < total:
                    self.damage.missing(index, max(1, chunks - count))
            return False
        stated = avi_header_seconds(self.path)
        return stated is not None and self.last_end_s < stated - self._tolerance

    def _decode_packets(self, demux: ResumingDemuxer, deep: bool) -> None:
        read: dict[int, tuple[int, int]] = {}  # per stream: packets and bytes
        for packet in demux:
            index = packet.stream.index  # read while its container is open: packets outlive resumes
            count, size = read.get(index, (0, 0))
            read[index] = (count + 1, size + packet.size)
            if self.control.stopped:
                raise Stopped
            if index != self.video.index:
                if self._intact(index, packet):
                    self._copy(index, *self._orders[index].push(packet))
                continue
            if not self.decode_video:
                self.last_end_s = max(self.last_end_s, (_span(packet) or (0.0, 0.0))[1])
                continue
            if packet.is_corrupt:  # decoded all the same (FFmpeg conceals what it can), but said
                self._mark(self.video.index, packet, "flagged corrupt by the demuxer")
            if packet.pts is not None and (span := _span(packet)) is not None:
                self._errors.sent((packet.pts, *span))
            if packet.is_keyframe and (key := packet.dts if packet.dts is not None else packet.pts) is not None:
                self._last_key = key
            for frame in self._decode(packet):
                self._emit(frame, deep)
            self._blame(self._errors.settled())
        for index, order in self._orders.items():
            self._copy(index, *order.flush())
        if not self.decode_video:
            self._cut_short = self._check_avi(read)
            return
        for frame in self._decode(None):
            self._emit(frame, deep)
        if self.damage.worth_saying or demux.ended_early:  # a guess too: a second decode only adds frames
            self._decode_tail_again(deep)
        for pts in self.repair.flush():
            self._send(pts)
        self._blame(self._errors.settled(final=True))
        self._cut_short = self._check_avi(read)

    def _mark(self, index: int, packet: Any, why: str, skipped: int = 0) -> None:
        start, end = _span(packet) or (self.last_end_s, self.last_end_s)
        self.damage.mark(index, start, end, skipped, why)

    def _copy(self, index: int, kept: list[Any], dropped: list[Any]) -> None:
        for packet in dropped:
            self._mark(index, packet, "left out: its time goes backwards, which the muxer refuses", skipped=1)
        for packet in kept:
            self.clocks[index](packet)
            self.packets.put((index, packet))

    def _intact(self, index: int, packet: Any) -> bool:
        """Whether a copied packet is kept: all are, but one the demuxer flags corrupt (FFmpeg's own
        word: a size that runs past the data, a damaged block). Copied packets are never decoded: a
        short or odd frame is its decoder's business, and the file's own bytes go out as they came.

        In AVI the times of a stream count its packets, so leaving one out would move every later
        one earlier (audio out of sync): there a corrupt packet is kept, and only reported."""
        if not packet.is_corrupt:
            return True
        keep = self._avi
        why = "flagged corrupt by the demuxer" + ("; kept, as AVI times count packets" if keep else "")
        self._mark(index, packet, why, skipped=0 if keep else 1)
        return keep

    def _decode(self, packet: Any) -> list[av.VideoFrame]:
        try:
            return self.video.decode(packet)  # type: ignore[no-any-return]
        except av.error.EOFError:
            return []
        except av.error.FFmpegError as exc:
            # A damaged packet: skip it. Frames referencing it may look wrong, but none is dropped
            # by us, and the damage log tells the user (which packet it was is settled later).
            log.debug("%s: a video packet does not decode: %s", self.path, exc)
            self._errors.error()
            return []

    def _blame(self, settled: list[list[Any]]) -> None:
        for lost in settled:
            for k, (_, start, end) in enumerate(lost):
                why = "does not decode" if k == 0 else "its frame never came out of the decoder"
                self.damage.mark(self.video.index, start, end, skipped=1 if k == 0 else 0, why=why)

    def _decode_tail_again(self, deep: bool) -> None:
        """Decode the last stretch again, one frame at a time, for frames the first pass lost.

        A frame-threaded decoder that meets an error while it drains drops the frames still in
        flight (FFmpeg 7/8: up to ``threads - 1`` frames at the end of a damaged file). A second,
        slice-threaded decoder from the keyframe before the last frame we got recovers them;
        frames we already have are skipped by their time. Seeking to that frame's time finds the
        keyframe where the container has an index (MP4, AVI, Matroska); where it has none (MPEG-TS)
        it lands on that frame's own packet, with no reference, so if that gives nothing the
        decoder starts again from the last keyframe the first pass sent.
        """
        last = self._last_pts
        if last is None:
            return
        for target in dict.fromkeys(t for t in (last, self._last_key) if t is not None):
            if self._decode_again_from(target, last, deep):
                return

    def _decode_again_from(self, target: int, last: int, deep: bool) -> bool:
        """Decode from the keyframe at or before ``target``; emit frames after ``last``. Whether any came."""
        try:
            other = open_input(self.path)
        except InputError:
            return False
        emitted = False
        with other:
            if self.video.index >= len(other.streams):  # FLV makes streams as it meets them
                return False
            v = other.streams[self.video.index]
            cc = v.codec_context
            if cc is None:
                return False
            cc.thread_type = "SLICE"
            try:
                other.seek(target, stream=v, backward=True)
            except av.error.FFmpegError as exc:
                log.debug("%s: cannot seek to decode the end again: %s", self.path, exc)
                return False
            for packet in itertools.chain(_video_packets(other, v), [None]):
                try:
                    frames = v.decode(packet)
                except av.error.FFmpegError:
                    continue
                for frame in frames:
                    pts = frame.pts if frame.pts is not None else frame.dts
                    if pts is not None and pts > last:
                        self._emit(frame, deep)
                        emitted = True
        return emitted

    def _emit(self, frame: av.VideoFrame, deep: bool) -> None:
        if self.decoded == 0 and not self._pending:
            self.info = replace(self.info, rotation=int(frame.rotation or 0), hdr=self._hdr_side_data(frame))
        self._pending.append((to_rgb(frame, deep), int(frame.duration or 0)))
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is not None:
            self._last_pts = pts if self._last_pts is None else max(self._last_pts, pts)
            self._errors.seen(pts)
        for pts in self.repair.push(frame.pts, frame.dts):
            self._send(pts)

    def _hdr_side_data(self, frame: av.VideoFrame) -> dict[str, bytes] | None:
        if view_for(self.info.color_trc) is None:
            return None
        keep = ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL")
        entries: Any = frame.side_data  # iterating gives the SideData objects (its typing says keys)
        return {sd.type.name: bytes(sd) for sd in entries if sd.type.name in keep}

    def _send(self, pts: int) -> None:
        """The oldest pending picture goes out with its settled time."""
        image, duration = self._pending.popleft()
        tb = self.info.time_base
        self.last_end_s = float((pts + (duration or self.repair.nominal)) * tb)
        out = Frame(
            index=self.decoded,
            pts=pts,
            time_base=tb,
            image=image,
            duration=duration,
            rotation=self.info.rotation,
            color_trc=self.info.color_trc,
        )
        self.decoded += 1
        self.control.put(self.frames, out)

    # -- the consumer side ------------------------------------------------------

    def __iter__(self) -> Iterator[Frame]:
        """Frames in order; stops early (without raising) if the run is stopped."""
        if self._thread is None:
            self.start()
        while True:
            try:
                item = self.control.get(self.frames)
            except Stopped:
                return
            if item is END:
                self._finished = True
                return
            yield item

    def close(self) -> None:
        """Stop the thread if it still runs (only when the run is being abandoned) and close."""
        if self._thread is not None:
            if not self._finished:
                self.control.stop()
            self._thread.join()
        self.container.close()
