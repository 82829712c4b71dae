"""Encode frames in order in a background thread and mux the copied packets beside them.

The container is set up when the first frame arrives (the rotation of a video is only
known once a frame is decoded). Before each frame is encoded, every copied packet that
is due by that frame's time is muxed, so audio and video are interleaved as they go;
FFmpeg's interleaving muxer orders what remains.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from vidrestore.config import OutputConfig
from vidrestore.control import END, RunControl, Stopped
from vidrestore.errors import OutputError, PipelineError
from vidrestore.io.deinterlace import field_order
from vidrestore.io.encoders import (
    CONTAINERS,
    audio_encoder_opens,
    can_copy,
    check_rate,
    choose_encoder,
    plan_output,
)
from vidrestore.io.pixels import SWS_COLORSPACE, SWS_FLAGS, encoder_frame
from vidrestore.io.probe import VideoInfo, is_cover_art
from vidrestore.records import Frame

__all__ = ["VideoWriter"]

log = logging.getLogger(__name__)

_SKIP_CONTAINER_KEYS = {"encoder", "major_brand", "minor_version", "compatible_brands", "creation_time"}
_SKIP_STREAM_KEYS = {
    "encoder",
    "handler_name",
    "vendor_id",
    "duration",
    "DURATION",
    "_statistics_tags",
    "_STATISTICS_TAGS",
    "_STATISTICS_WRITING_APP",
    "_STATISTICS_WRITING_DATE_UTC",
    "BPS",
    "NUMBER_OF_FRAMES",
    "NUMBER_OF_BYTES",
}


class VideoWriter:
    """Write frames (from :attr:`frames`) and copied packets to ``path`` (a temp file).

    With ``template`` (a video stream of an already encoded file), :attr:`frames` carries that
    stream's encoded packets instead of frames, muxed as they are: the join of segments.
    """

    def __init__(
        self,
        path: Path,
        info: Callable[[], VideoInfo],
        copy_streams: list[Any],
        packets: queue.Queue[Any],
        config: OutputConfig,
        control: RunControl,
        *,
        queue_size: int = 16,
        threads: int = 0,
        attachments: Sequence[Any] = (),
        template: Any = None,
        nvenc: bool = False,
    ) -> None:
        """``nvenc``: with ``codec: auto``, NVIDIA's encoder where this GPU has one (else the usual, said once)."""
        self.path = path
        self.nvenc = nvenc
        self.template = template
        self._info = info
        self.copy_streams = copy_streams
        self.attachments = list(attachments)
        self.packets = packets
        self.config = config
        self.control = control
        self.threads = threads
        self.frames: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.frames_written = 0
        self.packets_copied = 0
        self.codec: str = config.codec
        self._audio_codec = "aac"
        self._pending: tuple[int, Any] | None = None
        self._packets_done = False
        self._container: Any = None
        self._video: Any = None
        self._fixed: Fraction | None = None  # MPEG-1/2: the standard rate its encoder counts frames at
        self._origin: int | None = None  # then: the first frame's time (info.time_base), kept as it was
        self._out: dict[int, Any] = {}
        self._durations: dict[int, int] = {}  # frames in the encoder: pts -> duration (codec time base)
        self._reencode: dict[int, tuple[Any, Any]] = {}
        self._thread: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------------

    def _open_container(self) -> Any:
        box = CONTAINERS.get(self.path.suffix.lower())
        options = dict(box.muxer) if box is not None else {}
        try:
            self._container = av.open(str(self.path), mode="w", container_options=options)
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(f"cannot write {self.path.suffix!r} files: unknown container ({exc})") from exc
        return self._container

    def _open(self, first: Frame) -> None:
        info = self._info()
        height, width = first.image.shape[:2]
        c = self._open_container()
        deep = first.image.dtype.itemsize > 1
        codec, options, pix_fmt, self._audio_codec = choose_encoder(
            self.path.suffix, self.config, info.hdr, width, height, deep, self.nvenc
        )
        self.codec = codec
        if codec == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per file on stderr otherwise
        # MPEG-1/2 and DV: a standard rate, in ticks of one frame
        fixed = check_rate(codec, info.rate, self.path.suffix, (width, height))
        v = c.add_stream(codec, rate=fixed or info.rate or Fraction(25))
        v.width, v.height, v.pix_fmt = width, height, pix_fmt
        v.time_base = info.time_base
        cc = v.codec_context
        cc.time_base = 1 / fixed if fixed else info.time_base
        self._fixed = fixed
        cc.color_primaries, cc.color_trc = info.color_primaries, info.color_trc
        cc.colorspace = info.colorspace
        cc.color_range = info.color_range if info.color_range in (1, 2) else 1
        if info.sar != 1:  # the stored grid is kept; its pixels' shape goes to the codec's header and the container
            cc.sample_aspect_ratio = info.sar
        order = field_order(info)
        if order is not None:
            cc.field_order = order  # the pictures as they are: progressive, or woven fields kept (deinterlace off)
        cc.thread_count = self.threads  # 0: all cores
        if codec in ("libx264", "libx265"):
            cc.thread_type = "FRAME"  # x264/x265's frame threads: PyAV's slice default is slower
        v.options = options
        if info.rotation:
            v.set_display_rotation(info.rotation)
        v.metadata.update({k: val for k, val in info.metadata.items() if k not in _SKIP_STREAM_KEYS})
        c.metadata.update({k: val for k, val in info.container_metadata.items() if k not in _SKIP_CONTAINER_KEYS})
        self._video = v
        args = {"format": pix_fmt, "dst_color_range": cc.color_range, "interpolation": SWS_FLAGS}
        self._reformat_args: dict[str, Any] = args
        if (cs := SWS_COLORSPACE.get(info.colorspace)) is not None:
            self._reformat_args["dst_colorspace"] = cs
        self._add_others(c)

    def _open_copy(self) -> None:
        """Set up for muxing the template's encoded packets (no encoder)."""
        info = self._info()
        c = self._open_container()
        cfg = self.config
        self._audio_codec = plan_output(self.path.suffix, cfg.codec, cfg.crf, cfg.preset, info.hdr).audio
        v = c.add_stream_from_template(self.template)
        self.codec = self.template.codec_context.name
        v.metadata.update({k: val for k, val in self.template.metadata.items() if k not in _SKIP_STREAM_KEYS})
        c.metadata.update({k: val for k, val in info.container_metadata.items() if k not in _SKIP_CONTAINER_KEYS})
        self._video = v
        self._add_others(c)

    def _add_others(self, c: Any) -> None:
        for s in self.copy_streams:
            self._add_copy(c, s)
        for s in self.attachments:
            self._add_attachment(c, s)

    def _accepts(self, c: Any, add: Callable[[Any], Any]) -> bool:
        """Whether this container format takes a stream made by ``add`` (tried on an in-memory file,
        since FFmpeg's muxers only refuse data streams and attachments when the header is written)."""
        trial: Any = av.open(io.BytesIO(), mode="w", format=c.format.name)
        try:
            v = trial.add_stream(self.codec, rate=25)  # the real encoder, on a tiny picture: cheap to open
            v.width, v.height, v.pix_fmt = 16, 16, self._video.pix_fmt
            add(trial)
            trial.start_encoding()
        except (av.error.FFmpegError, ValueError, TypeError):
            return False  # refused: the trial file was never started, and is left to the garbage collector
        trial.close()
        return True

    def _add_copy(self, c: Any, s: Any) -> None:
        name = s.codec_context.name if s.codec_context is not None else "unknown"
        label = (
            f"track {s.index} ({s.type}, {name}"
            + (f", {s.metadata['language']}" if "language" in s.metadata else "")
            + ")"
        )
        box = CONTAINERS.get(self.path.suffix.lower())
        if s.type == "audio" and box is not None and box.audio_tracks is not None:
            if sum(1 for o in self._out.values() if o.type == "audio") >= box.audio_tracks:
                log.warning(
                    "%s is left out: a %s file holds %d audio track(s); use .mkv to keep them all",
                    label,
                    self.path.suffix,
                    box.audio_tracks,
                )
                return
        copy = can_copy(self.path.suffix, name, c.supported_codecs)
        if copy and name not in c.supported_codecs:  # a codec the muxer does not answer for: its header is tried
            copy = self._accepts(c, lambda t: t.add_stream_from_template(s))
        if copy or (s.type in ("data", "video") and self._accepts(c, lambda t: t.add_stream_from_template(s))):
            out = c.add_stream_from_template(s)
            if s.type == "video":  # cover art stays cover art; other tracks are copied, not restored
                out.disposition = s.disposition
                if not is_cover_art(s):
                    log.warning("%s is copied as it is: only the main video track is restored", label)
        elif s.type == "audio":
            target = self._audio_codec
            if not audio_encoder_opens(target, s.codec_context):
                log.warning(
                    "%s cannot be stored in %s, and %s cannot encode it (%d Hz): it is left out; use .mkv to keep it",
                    label,
                    self.path.suffix,
                    target,
                    s.codec_context.sample_rate,
                )
                return
            log.warning("%s cannot be stored in %s: re-encoding it to %s", label, self.path.suffix, target)
            out = c.add_stream(target, rate=s.codec_context.sample_rate)
            out.layout = s.codec_context.layout
            self._reencode[s.index] = (s, out)
        else:
            log.warning("%s cannot be stored in %s and is left out; use .mkv to keep it", label, self.path.suffix)
            return
        out.metadata.update({k: v for k, v in s.metadata.items() if k not in _SKIP_STREAM_KEYS})
        self._out[s.index] = out

    def _add_attachment(self, c: Any, s: Any) -> None:
        def attach(target: Any) -> None:
            target.add_attachment(s.name or f"attachment-{s.index}", s.mimetype or "application/octet-stream", s.data)

        if s.data and self._accepts(c, attach):
            attach(c)
        else:
            log.warning(
                "track %d (attachment %s) cannot be stored in %s and is left out; use .mkv to keep it",
                s.index,
                s.name,
                self.path.suffix,
            )

    # -- the thread -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vidrestore-encode", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            self._write_all()
        except Stopped:
            pass
        except BaseException as exc:
            self.control.fail(exc)
        finally:
            if self._container is not None:
                try:
                    self._container.close()
                except (av.error.FFmpegError, OSError) as exc:
                    if self.control.error is None:
                        self.control.fail(OutputError(f"{self.path}: finishing the file failed ({exc})"))

    def _write_all(self) -> None:
        item = self.control.get(self.frames)
        if item is END:
            return
        if self.template is not None:
            self._mux_all(item)
            return
        self._open(item)
        while item is not END:
            after = self.control.get(self.frames)
            if after is not END and after.pts > item.pts:
                item = replace(item, duration=after.pts - item.pts)  # a frame lasts until the next
            self._drain_packets(until=item.pts_seconds)
            try:
                self._encode(item)
            except (av.error.FFmpegError, OSError) as exc:  # a full disk, a failing encoder
                raise PipelineError("encode", item.index, f"writing the video failed: {exc}") from exc
            item = after
        self._mux_video(self._video.encode(None))
        self._finish()

    def _mux_all(self, item: Any) -> None:
        """The template's packets, as they come, with the copied ones interleaved by time."""
        self._open_copy()
        due = 0.0
        while item is not END:
            ts = item.dts if item.dts is not None else item.pts
            due = float(ts * item.time_base) if ts is not None else due
            self._drain_packets(until=due)
            item.stream = self._video
            self._container.mux(item)
            self.frames_written += 1
            item = self.control.get(self.frames)
        self._finish()

    def _finish(self) -> None:
        """Every copied packet left, then what the audio re-encoders still hold."""
        self._drain_packets(until=None)
        for _, out in self._reencode.values():
            self._container.mux(out.encode(None))

    def _encode(self, frame: Frame) -> None:
        vf = encoder_frame(frame.image, self._reformat_args)
        vf.pts = frame.pts
        vf.time_base = frame.time_base
        if frame.duration:
            vf.duration = frame.duration
        if self._fixed is not None:  # counted in frames from the first, which keeps its own time
            self._origin = frame.pts if self._origin is None else self._origin
            vf.pts = round((frame.pts - self._origin) * frame.time_base * self._fixed)
            vf.time_base = 1 / self._fixed
            vf.duration = 1
        self._durations[vf.pts] = vf.duration
        self._mux_video(self._video.encode(vf))
        self.frames_written += 1

    def _mux_video(self, packets: list[Any]) -> None:
        """Mux encoded video; with a fixed-rate codec (MPEG-1/2), moved back to the first frame's own
        time: its encoder counts whole frames, and a start between two ticks would otherwise round.
        A packet without a duration (libvpx gives none) gets its frame's: Ogg times a packet by where
        the one before it ends."""
        for packet in packets:
            duration = self._durations.pop(packet.pts, 0)
            if not packet.duration and duration:
                packet.duration = duration
        if self._fixed is not None and self._origin is not None:
            tb = self._info().time_base
            for packet in packets:
                for name in ("pts", "dts"):
                    if (value := getattr(packet, name)) is not None:
                        setattr(packet, name, round(value * packet.time_base / tb) + self._origin)
                packet.duration = round((packet.duration or 0) * packet.time_base / tb)
                packet.time_base = tb
        self._container.mux(packets)

    def _next_packet(self, block: bool) -> tuple[int, Any] | None:
        if self._pending is not None:
            item, self._pending = self._pending, None
            return item
        if self._packets_done:
            return None
        try:
            got = self.control.get(self.packets) if block else self.packets.get_nowait()
        except queue.Empty:
            return None
        if got is END:
            self._packets_done = True
            return None
        return got  # type: ignore[no-any-return]

    def _drain_packets(self, until: float | None) -> None:
        """Mux copied packets due by ``until`` seconds (all of them when None)."""
        while (item := self._next_packet(block=until is None)) is not None:
            index, packet = item
            ts = packet.dts if packet.dts is not None else packet.pts
            if until is not None and ts is not None and packet.time_base is not None:
                if float(ts * packet.time_base) > until:
                    self._pending = item
                    return
            self._mux_copy(index, packet)

    def _mux_copy(self, index: int, packet: Any) -> None:
        if index in self._reencode:
            src, out = self._reencode[index]
            for frame in src.decode(packet):
                # keep the track's start (and any gap) where it was, in the encoder's 1/sample-rate ticks
                rate = out.codec_context.sample_rate
                if frame.pts is not None and frame.time_base is not None:
                    frame.pts = round(frame.pts * frame.time_base * rate)
                    frame.time_base = Fraction(1, rate)
                self._container.mux(out.encode(frame))
            return
        out = self._out.get(index)
        if out is None:
            return  # a track the container cannot hold (warned once at set-up)
        packet.stream = out
        self._container.mux(packet)
        self.packets_copied += 1
