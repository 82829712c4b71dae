"""Opening an input and saying what it holds: the video to restore, its picture and timing, the
other streams."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
from av.codec.hwaccel import HWAccel
from av.stream import Disposition

from vidrestore.errors import InputError
from vidrestore.transfer import view_for

__all__ = [
    "StreamInfo",
    "VideoInfo",
    "bit_depth",
    "frame_count",
    "hdr_side_data",
    "is_cover_art",
    "main_video_stream",
    "open_input",
    "sample_aspect",
    "say_once",
    "side_data_entries",
    "video_rate",
]

log = logging.getLogger(__name__)


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
    sar: Fraction = Fraction(1)  # the sample (pixel) aspect ratio of the pictures handed on
    fields: Any = None  # the field stage's FieldPlan (io.fields): what was found and done; None: not looked at


@dataclass(frozen=True)
class StreamInfo:
    """A non-video stream, for dry runs and reports."""

    index: int
    kind: str
    codec: str
    language: str | None


def frame_count(frames: int | None, seconds: float | None, rate: Fraction | None) -> int:
    """A video's frame count as its header states it, else its duration times its rate (MKV, WebM
    and TS keep no count); 0 when neither is known."""
    if frames:
        return int(frames)
    return round(seconds * float(rate)) if seconds and rate else 0


_SAID: set[str] = set()  # the fallbacks said once per process, not once per file or segment


def say_once(key: str, line: str) -> None:
    """A warning line the first time ``key`` comes up in this process."""
    if key not in _SAID:
        _SAID.add(key)
        log.warning("%s", line)


def open_input(path: Path, nvdec: bool = False) -> Any:
    """``av.open(path)`` with every failure turned into an :class:`InputError` (exit 4). ``nvdec``: decode
    on the NVIDIA GPU's decoder through FFmpeg's CUDA hardware acceleration, frames handed back in
    system memory (NV12 / P010); where that cannot start but the file opens, software, said once."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a video or image")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    unavailable = None
    if nvdec:
        try:
            return av.open(str(path), mode="r", metadata_errors="replace", hwaccel=HWAccel("cuda"))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            unavailable = getattr(exc, "strerror", None) or exc
    try:
        container = av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: not a readable video or image ({exc.strerror or exc})") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: cannot open ({exc})") from exc
    if unavailable is not None:  # the file opens: the decoder, not the file, was the trouble
        say_once("nvdec", f"NVDEC is not available here ({unavailable}); decoding in software")
    return container


def video_rate(stream: Any) -> Fraction | None:
    """A video stream's frame rate: its average, else FFmpeg's guess, else its base rate; an average
    no camera records (over 1000 frames/s, as the raw DV demuxer reports its tick) is passed over."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < rate <= 1000:
            return Fraction(rate)
    return None


def sample_aspect(stream: Any) -> Fraction:
    """A video stream's sample aspect ratio (the container's, else the codec's); 1 where neither says
    or what they say is not a sensible shape."""
    codec = stream.codec_context.sample_aspect_ratio if stream.codec_context is not None else None
    for value in (stream.sample_aspect_ratio, codec):
        if value and value.numerator > 0 and value.denominator > 0:
            sar = Fraction(value.numerator, value.denominator)
            if Fraction(1, 8) <= sar <= 8:
                return sar
    return Fraction(1)


def hdr_side_data(frame: av.VideoFrame, color_trc: int) -> dict[str, bytes] | None:
    """An HDR frame's mastering-display and light-level side data, raw (None for SDR transfers)."""
    if view_for(color_trc) is None:
        return None
    keep = ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL")
    return {sd.type.name: bytes(sd) for sd in side_data_entries(frame) if sd.type.name in keep}


def side_data_entries(frame: av.VideoFrame) -> list[Any]:
    """A frame's SideData objects. Iterating the container gives them up to PyAV 18.1.0 (whose
    values() fails); from 18.1.1 it is a mapping whose iteration gives their types."""
    container: Any = frame.side_data
    return [item if hasattr(item, "type") else container[item] for item in container]


def bit_depth(pix_fmt: str | None) -> int:
    if not pix_fmt:
        return 8
    try:
        fmt = av.VideoFormat(pix_fmt)
        return max(c.bits for c in fmt.components)
    except (ValueError, av.error.FFmpegError):
        return 8


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
