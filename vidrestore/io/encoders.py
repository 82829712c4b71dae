"""Encoder and container choice, and encoder options: plain functions, tested by comparing values."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import get_args

import av
import av.codec
import av.error

from vidrestore.config import EncoderPreset
from vidrestore.errors import OutputError

__all__ = [
    "CONTAINERS",
    "Container",
    "OutputPlan",
    "can_copy",
    "check_encoder",
    "encoder_options",
    "pick_pix_fmt",
    "plan_output",
]

log = logging.getLogger(__name__)

_X26X_PRESETS: tuple[str, ...] = get_args(EncoderPreset)

# The codec each encoder writes (what a container is asked whether it can hold).
_WRITES = {
    "libx264": "h264",
    "h264_nvenc": "h264",
    "libx265": "hevc",
    "hevc_nvenc": "hevc",
    "libsvtav1": "av1",
    "libvpx-vp9": "vp9",
}


@dataclass(frozen=True)
class Container:
    """What vidrestore writes into one kind of output file."""

    video: str  # the encoder used when output.codec is auto
    audio: str  # the encoder for audio the container cannot hold as it is
    holds: frozenset[str]  # the video codecs it can hold
    options: tuple[tuple[str, str], ...] = ()  # encoder options the container needs
    # codecs of copied streams it holds although FFmpeg's muxer query answers "don't know" for them
    also_copies: frozenset[str] = frozenset()


_MP4 = frozenset({"h264", "hevc", "av1", "vp9"})
_TS_COPIES = frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "opus", "dvb_subtitle", "dvb_teletext"})
CONTAINERS: dict[str, Container] = {
    ".mp4": Container("libx264", "aac", _MP4),
    ".mov": Container("libx264", "aac", _MP4),
    ".m4v": Container("libx264", "aac", frozenset({"h264"})),
    ".3gp": Container("libx264", "aac", frozenset({"h264"})),
    ".mkv": Container("libx264", "aac", _MP4),
    ".webm": Container("libvpx-vp9", "libopus", frozenset({"vp9", "av1"})),
    # AVI stores no presentation times: B-frames would come back out of order (packed-B trouble)
    ".avi": Container("libx264", "libmp3lame", frozenset({"h264", "hevc", "av1", "vp9"}), (("bf", "0"),)),
    ".ts": Container("libx264", "aac", frozenset({"h264", "hevc"}), also_copies=_TS_COPIES),
    ".mts": Container("libx264", "aac", frozenset({"h264", "hevc"}), also_copies=_TS_COPIES),
    ".m2ts": Container("libx264", "aac", frozenset({"h264", "hevc"}), also_copies=_TS_COPIES),
    ".flv": Container("libx264", "aac", frozenset({"h264"})),
}


@dataclass(frozen=True)
class OutputPlan:
    """The encoders for one output file, decided before any model loads."""

    video: str
    audio: str
    options: dict[str, str]


def can_copy(suffix: str, codec: str, supported: set[str] | frozenset[str]) -> bool:
    """Whether a stream of ``codec`` can be copied into a ``suffix`` file (``supported``: the muxer's own answer)."""
    box = CONTAINERS.get(suffix.lower())
    return codec in supported or (box is not None and codec in box.also_copies)


def plan_output(suffix: str, codec: str, crf: int, preset: str) -> OutputPlan:
    """The video encoder, the fallback audio encoder and the options for an output ``suffix``.

    ``codec`` ``auto`` takes the container's usual codec; a codec the container cannot hold
    raises :class:`OutputError` (exit 2) saying which codecs and containers would work.
    """
    box = CONTAINERS.get(suffix.lower())
    if box is None:
        known = ", ".join(CONTAINERS)
        name = suffix or "files without an extension"
        raise OutputError(f"vidrestore cannot write {name!r} videos; use one of {known}")
    video = box.video if codec == "auto" else codec
    writes = _WRITES.get(video)
    if writes is None:
        raise OutputError(f"output.codec = {codec!r} is not supported; use auto or one of {', '.join(_WRITES)}")
    if writes not in box.holds:
        fits = [e for e, c in _WRITES.items() if c in box.holds and not e.endswith("_nvenc")]
        homes = [s for s, b in CONTAINERS.items() if writes in b.holds]
        raise OutputError(
            f"a {suffix} file cannot hold {writes} (output.codec = {codec}); use output.codec auto or "
            f"{', '.join(fits)}, or write {', '.join(homes[:4])}"
        )
    options = encoder_options(video, crf, preset)
    options.update(box.options)
    return OutputPlan(video, box.audio, options)


# libsvtav1 presets run 0 (slowest) .. 13 (fastest); map the x264 names onto that scale
_SVT_PRESET = dict(zip(_X26X_PRESETS, ("12", "11", "10", "9", "8", "7", "5", "4", "2")))
_NVENC_PRESET = dict(zip(_X26X_PRESETS, ("p1", "p1", "p2", "p3", "p4", "p4", "p5", "p6", "p7")))


def encoder_options(codec: str, crf: int, preset: str) -> dict[str, str]:
    """The FFmpeg private options that give ``codec`` the quality ``crf`` at speed ``preset``."""
    if preset not in _X26X_PRESETS:
        raise OutputError(f"output.preset = {preset!r} is not one of {', '.join(_X26X_PRESETS)}")
    if codec in ("libx264", "libx265"):
        opts = {"crf": str(crf), "preset": preset}
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
        return opts
    if codec == "libsvtav1":
        return {"crf": str(crf), "preset": _SVT_PRESET[preset]}
    if codec == "libvpx-vp9":
        return {"crf": str(crf), "b": "0", "row-mt": "1", "deadline": "good"}
    if codec in ("h264_nvenc", "hevc_nvenc"):
        return {"rc": "vbr", "cq": str(crf), "preset": _NVENC_PRESET[preset]}
    raise OutputError(f"output.codec = {codec!r} is not supported")


def check_encoder(codec: str) -> None:
    """Raise OutputError if this FFmpeg build has no encoder ``codec``."""
    try:
        av.codec.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError) as exc:
        raise OutputError(f"output.codec = {codec!r}: this FFmpeg build has no such encoder") from exc


_PIX_FMTS = {
    # (codec, deep, odd_size) -> pixel format. 4:2:0 needs even sizes, so odd sizes get 4:4:4.
    ("libx264", False, False): "yuv420p",
    ("libx264", True, False): "yuv420p10le",
    ("libx264", False, True): "yuv444p",
    ("libx264", True, True): "yuv444p10le",
    ("libx265", False, False): "yuv420p",
    ("libx265", True, False): "yuv420p10le",
    ("libx265", False, True): "yuv444p",
    ("libx265", True, True): "yuv444p10le",
    ("libsvtav1", False, False): "yuv420p",
    ("libsvtav1", True, False): "yuv420p10le",
    ("libvpx-vp9", False, False): "yuv420p",
    ("libvpx-vp9", True, False): "yuv420p10le",
    ("libvpx-vp9", False, True): "yuv444p",
    ("libvpx-vp9", True, True): "yuv444p10le",
}


def pick_pix_fmt(codec: str, bit_depth: int, width: int, height: int) -> str:
    """The pixel format to encode in: keeps > 8-bit depth, handles odd sizes."""
    deep = bit_depth > 8
    odd = width % 2 == 1 or height % 2 == 1
    if codec.endswith("_nvenc"):
        return "p010le" if deep and not odd else ("yuv444p" if odd else "yuv420p")
    fmt = _PIX_FMTS.get((codec, deep, odd))
    if fmt is None:
        raise OutputError(f"output.codec = {codec!r} cannot encode a {width}x{height} picture; use libx264")
    return fmt
