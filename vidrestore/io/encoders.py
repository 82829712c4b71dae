"""Encoder and container choice, and encoder options: plain functions, tested by comparing values."""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, get_args

import av
import av.codec
import av.error

from vidrestore.config import EncoderPreset, OutputConfig
from vidrestore.errors import OutputError
from vidrestore.io.probe import say_once

__all__ = [
    "CONTAINERS",
    "Container",
    "OutputPlan",
    "audio_encoder_opens",
    "can_copy",
    "check_encoder",
    "check_rate",
    "choose_encoder",
    "encoder_options",
    "nvenc_twin",
    "pick_pix_fmt",
    "plan_output",
    "video_encoder_opens",
    "x265_hdr_params",
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
    "libvpx": "vp8",
    "mpeg2video": "mpeg2video",
    "mpeg1video": "mpeg1video",
    "wmv2": "wmv2",
    "dvvideo": "dvvideo",
}

# DV holds these pictures only: (width, height, frame rate) -> the pixel format its profile codes
DV_PICTURES = {
    (720, 480, Fraction(30000, 1001)): "yuv411p",  # NTSC DV (DVCPRO 25 too)
    (720, 576, Fraction(25)): "yuv420p",  # PAL DV
}

# MPEG-1/2 video holds these frame rates only (its frame_rate_code table); others are refused
MPEG_RATES = (
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(50),
    Fraction(60000, 1001),
    Fraction(60),
)


@dataclass(frozen=True)
class Container:
    """What vidrestore writes into one kind of output file."""

    video: str  # the encoder used when output.codec is auto
    audio: str  # the encoder for audio the container cannot hold as it is
    holds: frozenset[str]  # the video codecs it can hold
    options: tuple[tuple[str, str], ...] = ()  # encoder options the container needs
    # codecs of copied streams it holds although FFmpeg's muxer query answers "don't know" for them
    also_copies: frozenset[str] = frozenset()
    audio_tracks: int | None = None  # how many audio tracks it holds (None: any number)
    muxer: tuple[tuple[str, str], ...] = ()  # options of the container's muxer
    frame_rate_only: bool = False  # holds interlaced video's frame rate, never its field rate (DV)


_MP4 = frozenset({"h264", "hevc", "av1", "vp9"})
_TS_COPIES = frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "opus", "dvb_subtitle", "dvb_teletext"})
_MPEG = frozenset({"mpeg2video", "mpeg1video"})
_OGG_COPIES = frozenset({"vorbis", "opus", "flac", "speex"})
_PS_COPIES = frozenset({"mp2", "mp3", "ac3", "dts", "pcm_dvd", "dvd_subtitle"})
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
    ".flv": Container("libx264", "aac", frozenset({"h264"}), audio_tracks=1),  # FLV has one audio tag type
    # DVD and capture-card footage: MPEG-2 video with MPEG audio, in a program stream
    ".mpg": Container("mpeg2video", "mp2", _MPEG, also_copies=_PS_COPIES),
    ".mpeg": Container("mpeg2video", "mp2", _MPEG, also_copies=_PS_COPIES),
    ".vob": Container("mpeg2video", "mp2", _MPEG, also_copies=_PS_COPIES),
    # Ogg video: VP8 (this FFmpeg build has no Theora encoder), Vorbis and Opus copied, Opus made
    # (FFmpeg's Ogg muxer answers "don't know" when asked about its own audio codecs: named here)
    # Its demuxer times a packet by where the one before ends: a page per packet, and each frame lasting
    # until the next, keep the gaps of variable frame rates
    ".ogv": Container(
        "libvpx", "libopus", frozenset({"vp8"}), also_copies=_OGG_COPIES, muxer=(("page_duration", "1"),)
    ),
    # DV camcorders' raw stream: DV video at its own sizes and frame rates, PCM audio
    ".dv": Container("dvvideo", "pcm_s16le", frozenset({"dvvideo"}), frame_rate_only=True, audio_tracks=1),
    # old camera and Windows files: Windows Media Video 8 and Audio 2, in ASF
    ".wmv": Container("wmv2", "wmav2", frozenset({"wmv2"})),
    ".asf": Container("wmv2", "wmav2", frozenset({"wmv2"})),
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


def x265_hdr_params(side_data: Mapping[str, bytes]) -> str:
    """libx265's HDR10 parameters from a decoded frame's mastering-display and light-level side data.

    ``MASTERING_DISPLAY_METADATA`` is FFmpeg's ``AVMasteringDisplayMetadata``: 10 rationals (R, G, B
    and white point x/y, min and max luminance), then two flags. x265 wants G, B, R, white point in
    units of 1/50000 and luminance in 1/10000 cd/m².
    """
    parts = ["hdr10=1", "repeat-headers=1"]
    md = side_data.get("MASTERING_DISPLAY_METADATA")
    if md is not None and len(md) >= 88:
        v = struct.unpack("<20i2i", md[:88])
        r, g, b, wp = [(_ratio(v[i], v[i + 1]), _ratio(v[i + 2], v[i + 3])) for i in (0, 4, 8, 12)]
        lo, hi = _ratio(v[16], v[17]), _ratio(v[18], v[19])
        if v[20]:  # has_primaries

            def xy(p: tuple[float, float]) -> str:
                return f"({round(p[0] * 50000)},{round(p[1] * 50000)})"

            lum = f"L({round(hi * 10000)},{round(lo * 10000)})"
            parts.append(f"master-display=G{xy(g)}B{xy(b)}R{xy(r)}WP{xy(wp)}{lum}")
    cll = side_data.get("CONTENT_LIGHT_LEVEL")
    if cll is not None and len(cll) >= 8:
        max_cll, max_fall = struct.unpack("<2I", cll[:8])
        parts.append(f"max-cll={max_cll},{max_fall}")
    return ":".join(parts)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def plan_output(suffix: str, codec: str, crf: int, preset: str, hdr: Mapping[str, bytes] | None = None) -> OutputPlan:
    """The video encoder, the fallback audio encoder and the options for an output ``suffix``.

    ``codec`` ``auto`` takes the container's usual codec (HEVC for HDR input where the container
    holds it: HDR10 metadata survives only there); a codec the container cannot hold raises
    :class:`OutputError` (exit 2) saying which codecs and containers would work. ``hdr``: the
    input's HDR side data (empty for HDR without it, None for SDR input).
    """
    box = CONTAINERS.get(suffix.lower())
    if box is None:
        known = ", ".join(CONTAINERS)
        name = suffix or "files without an extension"
        raise OutputError(f"vidrestore cannot write {name!r} videos; use one of {known}")
    video = box.video if codec == "auto" else codec
    if codec == "auto" and hdr is not None and "hevc" in box.holds:
        video = "libx265"
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
    if hdr is not None and video == "libx265":
        options["x265-params"] += ":" + x265_hdr_params(hdr)
    elif hdr:
        log.warning("%s keeps the HDR colour tags but not the mastering-display metadata: use libx265 for that", video)
    return OutputPlan(video, box.audio, options)


# libsvtav1 presets run 0 (slowest) .. 13 (fastest); map the x264 names onto that scale
_SVT_PRESET = dict(zip(_X26X_PRESETS, ("12", "11", "10", "9", "8", "7", "5", "4", "2")))
_NVENC_PRESET = dict(zip(_X26X_PRESETS, ("p1", "p1", "p2", "p3", "p4", "p4", "p5", "p6", "p7")))


def encoder_options(codec: str, crf: int, preset: str) -> dict[str, str]:
    """The FFmpeg private options that give ``codec`` the quality ``crf`` at speed ``preset``."""
    if preset not in _X26X_PRESETS:
        raise OutputError(f"output.preset = {preset!r} is not one of {', '.join(_X26X_PRESETS)}")
    if codec in ("libx264", "libx265"):
        # crf 0 is lossless: x264 at 8 bits only (its > 8-bit crf 0 is qp 12); qp 0 and x265's own
        # lossless mode are lossless at every depth
        if crf == 0:
            opts = {"qp": "0", "preset": preset} if codec == "libx264" else {"preset": preset}
        else:
            opts = {"crf": str(crf), "preset": preset}
        if codec == "libx265":
            opts["x265-params"] = "log-level=error" + (":lossless=1" if crf == 0 else "")
        return opts
    if codec == "libsvtav1":
        return {"crf": str(crf), "preset": _SVT_PRESET[preset]}
    if codec == "libvpx-vp9":
        return {"crf": str(crf), "b": "0", "row-mt": "1", "deadline": "good"}
    if codec in ("h264_nvenc", "hevc_nvenc"):
        return {"rc": "vbr", "cq": str(crf), "preset": _NVENC_PRESET[preset]}
    if codec == "libvpx":  # VP8's constant quality needs a bitrate cap; 4..63
        return {"crf": str(min(63, max(4, crf))), "b": "50M", "deadline": "good"}
    if codec in ("mpeg2video", "mpeg1video", "wmv2"):
        return {"flags": "+qscale", "global_quality": str(_qscale(crf) * _QP2LAMBDA)}
    if codec == "dvvideo":  # DV's bitrate is fixed by its profile: nothing to choose
        return {}
    raise OutputError(f"output.codec = {codec!r} is not supported")


_QP2LAMBDA = 118  # FFmpeg's FF_QP2LAMBDA: a quantiser as "global_quality"


def _qscale(crf: int) -> int:
    """The fixed quantiser (2 best .. 31) for codecs without a CRF mode: ``ffmpeg -q:v``'s scale.
    CRF 0 gives 2; the default 18 gives 3; 51 gives 31."""
    return max(2, min(31, round(2 + crf * crf / 90)))


def check_rate(codec: str, rate: Fraction | None, suffix: str, size: tuple[int, int] = (0, 0)) -> Fraction | None:
    """The frame rate ``codec`` is written at: MPEG-1/2 video only at its standard rates, DV only at
    its own sizes and rates (None for other codecs, which keep the input's times). Raises
    :class:`OutputError` naming the way out. ``size``: the pictures' ``(width, height)``."""
    if codec == "dvvideo":
        return _dv_rate(rate, suffix, size)
    if codec not in ("mpeg1video", "mpeg2video"):
        return None
    if rate is not None:
        for standard in MPEG_RATES:
            if abs(float(rate) - float(standard)) < 0.01:
                return standard
    shown = f"{float(rate):.3f}" if rate else "an unknown"
    raise OutputError(
        f"a {suffix} file holds MPEG video at 23.976, 24, 25, 29.97, 30, 50, 59.94 or 60 frames/s only, "
        f"and this video runs at {shown} frames/s: write .mkv or .mp4 instead"
    )


def _dv_rate(rate: Fraction | None, suffix: str, size: tuple[int, int]) -> Fraction:
    for (w, h, standard), _ in DV_PICTURES.items():
        if (w, h) == size and rate is not None and abs(float(rate) - float(standard)) < 0.01:
            return standard
    shown = f"{size[0]}x{size[1]} at {float(rate):.3f} frames/s" if rate else f"{size[0]}x{size[1]}"
    raise OutputError(
        f"a {suffix} file holds DV video only (720x480 at 29.97 or 720x576 at 25 frames/s), and this is "
        f"{shown}: write .avi or .mkv instead"
    )


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
    # VP8, MPEG-1/2 and WMV2 code 8-bit 4:2:0 only; odd sides are fine (the chroma is rounded up)
    ("libvpx", False, False): "yuv420p",
    ("libvpx", False, True): "yuv420p",
    ("mpeg2video", False, False): "yuv420p",
    ("mpeg2video", False, True): "yuv420p",
    ("mpeg1video", False, False): "yuv420p",
    ("mpeg1video", False, True): "yuv420p",
    ("wmv2", False, False): "yuv420p",
}


def pick_pix_fmt(codec: str, bit_depth: int, width: int, height: int) -> str:
    """The pixel format to encode in: keeps > 8-bit depth, handles odd sizes."""
    deep = bit_depth > 8
    odd = width % 2 == 1 or height % 2 == 1
    if codec.endswith("_nvenc"):
        return "p010le" if deep and not odd else ("yuv444p" if odd else "yuv420p")
    if codec == "dvvideo":
        return next((f for (w, h, _), f in DV_PICTURES.items() if (w, h) == (width, height)), "yuv420p")
    fmt = _PIX_FMTS.get((codec, deep, odd)) or _PIX_FMTS.get((codec, False, odd))  # 8-bit-only codecs
    if fmt is None:
        raise OutputError(
            f"output.codec = {codec} cannot encode a {width}x{height} picture (it needs even sides): "
            "write .mkv or .mp4 (libx264 keeps odd sides)"
        )
    return fmt


def video_encoder_opens(codec: str, width: int, height: int, pix_fmt: str) -> bool:
    """Whether ``codec`` opens here (NVENC is in the build but needs an NVIDIA GPU with NVENC)."""
    ctx: Any = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = Fraction(1, 25)
    try:
        ctx.open()
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def audio_encoder_opens(codec: str, source: Any) -> bool:
    """Whether ``codec`` opens for audio like ``source`` (a codec context): Opus takes only some
    sample rates, and a damaged header can leave a track with none."""
    try:
        ctx: Any = av.CodecContext.create(codec, "w")
        ctx.sample_rate = source.sample_rate
        ctx.layout = source.layout
        ctx.format = ctx.codec.audio_formats[0] if ctx.codec.audio_formats else source.format
        ctx.time_base = Fraction(1, source.sample_rate or 1)
        ctx.open()
    except (av.error.FFmpegError, ValueError, TypeError, ZeroDivisionError):
        return False
    return True


_NVENC = {"libx264": "h264_nvenc", "libx265": "hevc_nvenc"}


def nvenc_twin(codec: str, width: int, height: int, deep: bool) -> tuple[str, str] | None:
    """``codec: auto`` on a CUDA GPU: NVENC's twin of ``codec`` and its pixel format, if it opens
    here; else None, said once. Never assumed: H100, H200 and A100 have no NVENC."""
    nv = _NVENC.get(codec)
    if nv is None:
        return None
    fmt = pick_pix_fmt(nv, 10 if deep else 8, width, height)
    if video_encoder_opens(nv, width, height, fmt):
        return nv, fmt
    say_once("nvenc", f"{nv} cannot be opened here (this GPU has no NVENC); encoding with {codec}")
    return None


def choose_encoder(
    suffix: str, cfg: OutputConfig, hdr: Mapping[str, bytes] | None, width: int, height: int, deep: bool, nvenc: bool
) -> tuple[str, dict[str, str], str, str]:
    """The video encoder, its options and pixel format, and the audio encoder for a ``suffix`` file of
    pictures ``width`` x ``height`` (``deep``: over 8 bits): as planned, with NVIDIA's where asked
    (``nvenc``) and it opens, and libx264 where an NVENC encoder asked for by name does not."""
    plan = plan_output(suffix, cfg.codec, cfg.crf, cfg.preset, hdr)
    codec, options = plan.video, plan.options
    check_encoder(codec)
    pix_fmt = pick_pix_fmt(codec, 10 if deep else 8, width, height)
    if nvenc and (nv := nvenc_twin(codec, width, height, deep)) is not None:
        codec, pix_fmt = nv
        options = plan_output(suffix, codec, cfg.crf, cfg.preset, hdr).options
    elif codec.endswith("_nvenc") and not video_encoder_opens(codec, width, height, pix_fmt):
        log.warning("%s cannot be opened here (no NVIDIA encoder); falling back to libx264", codec)
        codec = "libx264"
        options = plan_output(suffix, codec, cfg.crf, cfg.preset, hdr).options
        pix_fmt = pick_pix_fmt(codec, 10 if deep else 8, width, height)
    return codec, options, pix_fmt, plan.audio
