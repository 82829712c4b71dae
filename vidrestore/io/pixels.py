"""Decoded pictures as they come: their planes where the format is planar YUV (or NV12 / P010, whose
chroma is only interleaved), else RGB once through swscale with the input's own matrix and range,
accurate rounding. And planes back into a frame for the encoder."""

from __future__ import annotations

from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation

from vidrestore.colour import PlaneFormat
from vidrestore.records import Planes

__all__ = ["SWS_COLORSPACE", "SWS_FLAGS", "encoder_frame", "planes_of", "to_rgb", "video_frame"]

# planar YUV kept as decoded: name -> bits, horizontal and vertical chroma subsampling
_PLANAR = {
    f"yuv{kind}p{depth}": (bits, sx, sy)
    for kind, sx, sy in (("420", 2, 2), ("422", 2, 1), ("444", 1, 1))
    for depth, bits in (("", 8), ("10le", 10), ("12le", 12))
}
_FULL_RANGE_NAMES = {"yuvj420p": "yuv420p", "yuvj422p": "yuv422p", "yuvj444p": "yuv444p"}
_INTERLEAVED = {"nv12": ("yuv420p", 8, 0), "p010le": ("yuv420p10le", 10, 6)}  # chroma interleaved; bits shifted up

# swscale colour matrices by AVColorSpace value (others: swscale's default, BT.601)
SWS_COLORSPACE = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}

# Accurate rounding and full-resolution chroma: without them every YUV->RGB->YUV round trip
# darkens the picture by about one level (measured: luma mean -1.08 per trip).
SWS_FLAGS = (
    Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP
)


def to_rgb(frame: av.VideoFrame, deep: bool) -> np.ndarray:
    """A decoded frame as ``(H, W, 3)`` RGB: uint8, or uint16 when ``deep`` (> 8-bit source)."""
    kwargs: dict[str, Any] = {"interpolation": SWS_FLAGS}
    cs = SWS_COLORSPACE.get(int(frame.colorspace))
    if cs is not None:
        kwargs["src_colorspace"] = cs
    if int(frame.color_range) in (1, 2):
        kwargs["src_color_range"] = int(frame.color_range)
    rgb = frame.reformat(format="rgb48le" if deep else "rgb24", **kwargs)
    return rgb.to_ndarray()  # type: ignore[no-any-return]


def _plane(frame: av.VideoFrame, i: int, dtype: np.dtype, width: int) -> np.ndarray:  # type: ignore[type-arg]
    """Plane ``i`` of a frame without its line padding, as ``dtype`` samples (a view)."""
    plane = frame.planes[i]
    rows: np.ndarray = np.frombuffer(memoryview(plane), dtype).reshape(
        plane.height, plane.line_size // np.dtype(dtype).itemsize
    )
    return rows[:, :width]


def planes_of(frame: av.VideoFrame) -> Planes | None:
    """The frame's planes, copied out of FFmpeg's buffers; None for formats that are not planar YUV
    (RGB, grey, alpha, palettes, bit depths over 12), which go through :func:`to_rgb` instead."""
    name = frame.format.name
    full = int(frame.color_range) == 2
    if name in _FULL_RANGE_NAMES:
        name, full = _FULL_RANGE_NAMES[name], True
    w, h = frame.width, frame.height
    matrix = int(frame.colorspace)
    if name in _PLANAR:
        bits, sx, sy = _PLANAR[name]
        fmt = PlaneFormat(name, bits, sx, sy, matrix, full)
        cw = fmt.chroma_size(h, w)[1]
        y, u, v = (_plane(frame, i, fmt.dtype, width).copy() for i, width in enumerate((w, cw, cw)))
        return Planes(y, u, v, fmt)
    if name in _INTERLEAVED:
        planar, bits, shift = _INTERLEAVED[name]
        fmt = PlaneFormat(planar, bits, 2, 2, matrix, full)
        cw = fmt.chroma_size(h, w)[1]
        y = _plane(frame, 0, fmt.dtype, w) >> shift
        uv = _plane(frame, 1, fmt.dtype, 2 * cw) >> shift
        return Planes(y.copy(), uv[:, 0::2].copy(), uv[:, 1::2].copy(), fmt)
    return None


def video_frame(planes: Planes) -> av.VideoFrame:
    """A new frame in the planes' own format holding their samples, tagged with their matrix and range."""
    fmt = planes.format
    h, w = planes.y.shape
    frame = av.VideoFrame(w, h, fmt.name)
    for i, src in enumerate((planes.y, planes.u, planes.v)):
        _plane(frame, i, fmt.dtype, src.shape[1])[:] = src
    frame.colorspace = fmt.matrix
    frame.color_range = 2 if fmt.full_range else 1
    return frame


def encoder_frame(image: np.ndarray | Planes, reformat: dict[str, Any]) -> av.VideoFrame:
    """The picture as the encoder takes it (``reformat``: swscale's arguments to its format and
    range): planes already in them go in as they are (every sample the decoder gave, bit for bit);
    anything else through swscale, from the planes' own matrix and range or from RGB."""
    if not isinstance(image, Planes):
        rgb = av.VideoFrame.from_ndarray(image, format="rgb24" if image.dtype == np.uint8 else "rgb48le")
        return rgb.reformat(**reformat)
    frame = video_frame(image)
    f = image.format
    src_range = 2 if f.full_range else 1
    if f.name == reformat["format"] and src_range == reformat["dst_color_range"]:
        return frame
    args: dict[str, Any] = {**reformat, "src_color_range": src_range}
    if (cs := SWS_COLORSPACE.get(f.matrix)) is not None:
        args["src_colorspace"] = cs
    return frame.reformat(**args)
