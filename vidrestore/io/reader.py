"""Demux and decode a video in a background thread.

Frames go out through a bounded queue in presentation order, each with a strictly
increasing pts in the video stream's own time base. Packets of the streams we copy
(audio, subtitles) go out through a second queue, undecoded; the writer interleaves
them. The frame queue's bound is what bounds memory: the reader blocks on it, so the
packet queue can only run ahead by the same stretch of time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from vidrestore.control import END, RunControl, Stopped
from vidrestore.errors import InputError
from vidrestore.io.avi import avi_losses
from vidrestore.io.damage import DamageLog, ErrorLocator, packet_span
from vidrestore.io.deinterlace import FieldFilter, FieldSettings, field_stage
from vidrestore.io.demux import InOrder, ResumingDemuxer
from vidrestore.io.pixels import planes_of, to_rgb
from vidrestore.io.probe import (
    StreamInfo,
    VideoInfo,
    bit_depth,
    hdr_side_data,
    main_video_stream,
    open_input,
    video_rate,
)
from vidrestore.io.tail import decode_after
from vidrestore.io.timestamps import StreamClock, TimestampRepair
from vidrestore.records import Frame

__all__ = ["VideoReader"]

log = logging.getLogger(__name__)


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
        planes: bool = True,
        nvdec: bool = False,
        fields: FieldSettings = FieldSettings(),  # noqa: B008 (a frozen dataclass)
    ) -> None:
        """``copy_other``: copy data tracks, other video tracks and attachments too; ``seek_pts``:
        start at the video keyframe at or before this time (video time base) instead of the start;
        ``decode_video`` False: demux only, for the copied streams (no frames come out); ``planes``: hand
        on planar YUV pictures as their planes (else every picture is made RGB by swscale); ``nvdec``:
        decode on an NVIDIA GPU's decoder where it starts (else software, said once).

        ``fields``: the field stage (:mod:`vidrestore.io.deinterlace`): the file's field structure is
        found from its pictures and deinterlaced, matched back to film frames or resampled to square
        pixels as these settings ask. ``info`` describes the pictures handed on: their time base,
        rate, size and aspect."""
        self.info: VideoInfo  # the decoded frames (set up below); then the pictures the field stage hands on
        self.path = path
        self.strict = strict
        self.seek_pts = seek_pts
        self.decode_video = decode_video
        self.keep_planes = planes
        self.copy_other = copy_other
        self.control = control
        self.container = open_input(path, nvdec=nvdec)
        try:
            self._setup(threads, copy_audio, copy_subtitles)
            self.info, stage = field_stage(path, self.video, self.info, decode_video, fields)
            self.filter: FieldFilter | None = stage
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
        rate = video_rate(v)
        self._in_tb = tb  # of the decoded frames (the pictures handed on may have another: see info)
        duration_s = float(v.duration * tb) if v.duration else (c.duration / 1e6 if c.duration else None)
        self.info = VideoInfo(
            width=cc.width,
            height=cc.height,
            time_base=tb,
            rate=rate,
            pix_fmt=cc.pix_fmt or "yuv420p",
            bit_depth=bit_depth(cc.pix_fmt),
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
        # AVI: times count packets, and an idx1 lists what should be there. It stores no presentation
        # times, so frames of B-frame video (packed or not) come with their decode-order times, and
        # putting them in order is the normal reading of the file, not a repair
        self.timed_by_count = "avi" in c.format.name.split(",")
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
        self._pending: deque[tuple[av.VideoFrame, int]] = deque()  # decoded frames waiting for their time

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
            self._decode_packets(demux)
        finally:
            demux.close()
        if self.decoded == 0 and self.decode_video:
            raise InputError(f"{self.path}: no video frame could be decoded")
        if demux.ended_early or self._cut_short:
            self.truncated_at = self.last_end_s
            self.damage.ended_early(max([self.last_end_s, *demux.reached.values()]))
            log.info("%s: the data ends at %.2f s; the output holds what could be decoded", self.path, self.last_end_s)

    def _check_avi(self, read: dict[int, tuple[int, int]]) -> bool:
        """AVI: what its index lists and was never read is damage; returns whether it ends early."""
        return self.timed_by_count and avi_losses(self.path, read, self.damage, self.last_end_s, self._tolerance)

    def _decode_packets(self, demux: ResumingDemuxer) -> None:
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
                self.last_end_s = max(self.last_end_s, (packet_span(packet) or (0.0, 0.0))[1])
                continue
            if packet.is_corrupt:  # decoded all the same (FFmpeg conceals what it can), but said
                self._mark(self.video.index, packet, "flagged corrupt by the demuxer")
            if packet.pts is not None and (span := packet_span(packet)) is not None:
                self._errors.sent((packet.pts, *span))
            if packet.is_keyframe and (key := packet.dts if packet.dts is not None else packet.pts) is not None:
                self._last_key = key
            for frame in self._decode(packet):
                self._emit(frame)
            self._blame(self._errors.settled())
        for index, order in self._orders.items():
            self._copy(index, *order.flush())
        if not self.decode_video:
            self._cut_short = self._check_avi(read)
            return
        for frame in self._decode(None):
            self._emit(frame)
        if self.damage.worth_saying or demux.ended_early:  # a guess too: a second decode only adds frames
            self._decode_tail_again()
        for pts in self.repair.flush():
            self._send(pts)
        self._flush_fields()
        self._blame(self._errors.settled(final=True))
        self._cut_short = self._check_avi(read)

    def _mark(self, index: int, packet: Any, why: str, skipped: int = 0) -> None:
        start, end = packet_span(packet) or (self.last_end_s, self.last_end_s)
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
        keep = self.timed_by_count
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

    def _decode_tail_again(self) -> None:
        """Decode the last stretch again for frames the first pass lost (:func:`decode_after`): from the
        keyframe before the last frame we got, then from the last keyframe the first pass sent."""
        last = self._last_pts
        if last is None:
            return
        for frame in decode_after(self.path, self.video.index, [last, self._last_key], last):
            self._emit(frame)

    def _emit(self, frame: av.VideoFrame) -> None:
        if self.decoded == 0 and not self._pending:
            self.info = replace(
                self.info, rotation=int(frame.rotation or 0), hdr=hdr_side_data(frame, self.info.color_trc)
            )
        self._pending.append((frame, int(frame.duration or 0)))
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is not None:
            self._last_pts = pts if self._last_pts is None else max(self._last_pts, pts)
            self._errors.seen(pts)
        for pts in self.repair.push(frame.pts, frame.dts):
            self._send(pts)

    def _send(self, pts: int) -> None:
        """The oldest pending frame goes on with its settled time: through the field stage, if any."""
        frame, duration = self._pending.popleft()
        self.last_end_s = float((pts + (duration or self.repair.nominal)) * self._in_tb)
        if self.filter is None:
            self._out(frame, pts, duration, pts)
            return
        frame.pts = pts
        frame.duration = duration
        for out, source in self.filter.push(frame):
            self._out(out, int(out.pts or 0), int(out.duration or 0), source)

    def _flush_fields(self) -> None:
        if self.filter is not None:
            for out, source in self.filter.push(None):
                self._out(out, int(out.pts or 0), int(out.duration or 0), source)

    def _out(self, frame: av.VideoFrame, pts: int, duration: int, source: int) -> None:
        """One picture handed on, in the form the stages take (planes, else RGB)."""
        picture = planes_of(frame) if self.keep_planes else None
        out = Frame(
            index=self.decoded,
            pts=pts,
            time_base=self.info.time_base,
            image=to_rgb(frame, self.info.bit_depth > 8) if picture is None else picture,
            duration=duration,
            rotation=self.info.rotation,
            color_trc=self.info.color_trc,
            sar=self.info.sar,
            source_pts=source,
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
