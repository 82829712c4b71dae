"""Encoder choice and options: plain functions, tested by comparing values."""

from __future__ import annotations

import logging

import av
import av.codec
import av.error

from vidrestore.errors import OutputError

__all__ = ["check_encoder", "encoder_options", "pick_pix_fmt"]

log = logging.getLogger(__name__)

_X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
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
