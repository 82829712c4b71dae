"""The records that flow between stages: small, typed, checked on construction.

Convention: a video frame's picture is its decoded :class:`Planes` (YUV at the decoded depth, with
its matrix and range) where the format is planar YUV; images and other formats are ``(H, W, 3)``
RGB arrays, ``uint8`` for 8-bit sources and ``uint16`` (full 16-bit scale) for deeper ones.
Coordinates are ``(x, y)`` in source pixels with pixel centres at integer positions. Landmarks
are the 5 facexlib points in order: left eye, right eye, nose tip, left mouth corner, right mouth
corner (left and right as seen in the picture).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from vidrestore.colour import PlaneFormat, yuv_to_rgb

__all__ = ["Face", "Frame", "Planes"]


@dataclass(frozen=True, eq=False)
class Face:
    """One face in one frame.

    ``landmarks_raw`` is what the detector saw (``None`` where the face was filled in
    between detections); ``landmarks`` is what alignment uses (smoothed, or the raw
    points when smoothing is off). ``weight`` in [0, 1] scales the restored face's
    blend: below 1 while a track fades out.
    """

    track_id: int
    score: float
    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    landmarks_raw: np.ndarray | None  # (5, 2) float32
    landmarks: np.ndarray  # (5, 2) float32
    interpolated: bool = False
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.box.shape != (4,):
            raise ValueError(f"Face.box must have shape (4,), got {self.box.shape}")
        if self.landmarks.shape != (5, 2):
            raise ValueError(f"Face.landmarks must have shape (5, 2), got {self.landmarks.shape}")
        if self.landmarks_raw is not None and self.landmarks_raw.shape != (5, 2):
            raise ValueError(f"Face.landmarks_raw must have shape (5, 2), got {self.landmarks_raw.shape}")

    @property
    def size(self) -> float:
        """The face's size in source pixels: the longer side of its box."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass(frozen=True, eq=False)
class Planes:
    """A picture as it was decoded: three planes (Y at full size, Cb and Cr at the chroma size),
    ``uint8`` for 8-bit formats, ``uint16`` holding the code values of deeper ones."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    format: PlaneFormat

    def __post_init__(self) -> None:
        want = self.format.chroma_size(*self.y.shape)
        dtype = self.format.dtype
        for plane in (self.y, self.u, self.v):
            if plane.ndim != 2 or plane.dtype != dtype:
                name = self.format.name
                raise ValueError(f"Planes of {name} must be 2-D {dtype}, got {plane.shape} {plane.dtype}")
        if self.u.shape != want or self.v.shape != want:
            raise ValueError(f"chroma planes of {self.format.name} must be {want}, got {self.u.shape} {self.v.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of the same picture in RGB: ``(H, W, 3)``."""
        return (*self.y.shape, 3)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:  # type: ignore[type-arg]
        """The dtype of the same picture in RGB: uint8 for 8-bit formats, uint16 for deeper ones."""
        return self.format.dtype

    def rgb(self) -> np.ndarray:
        """The picture in RGB, ``(H, W, 3)`` (uint16 at full 16-bit scale for deeper formats): for the
        places that need it on the host (annotations, the Python API, whole-frame upscaling)."""
        y, u, v = (torch.from_numpy(p.astype(np.int32)) for p in (self.y, self.u, self.v))
        full = 255.0 if self.format.bits == 8 else 65535.0
        rgb = (yuv_to_rgb(y, u, v, self.format) * full).round().permute(1, 2, 0).numpy()
        return rgb.astype(self.dtype)


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded picture with its timing, in presentation order."""

    index: int
    pts: int
    time_base: Fraction
    image: np.ndarray | Planes  # RGB (H, W, 3) for images and converted formats, else the decoded planes
    duration: int = 0  # in time_base ticks; 0 when unknown
    rotation: int = 0  # display rotation, degrees counter-clockwise (the stream's display matrix)
    color_trc: int = 2  # transfer characteristic (AVColorTransferCharacteristic; 16 PQ, 18 HLG, 2 unknown)
    faces: tuple[Face, ...] = field(default=())
    sar: Fraction = Fraction(1)  # sample aspect ratio: the width of a pixel over its height
    source_pts: int | None = None  # the time of the decoded frame it came from (deinterlaced fields share one)
    on_device: Any = field(default=None, repr=False)
    """The same picture as the face stages already hold it on their device (a ``(H, W, 3)`` tensor,
    uploaded with its detection batch), so that it crosses once; None where it was not uploaded."""

    def __post_init__(self) -> None:
        img = self.image
        if isinstance(img, Planes):
            return
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"Frame.image must be (H, W, 3) uint8/uint16, got {img.shape} {img.dtype}")

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the picture."""
        return self.image.shape[0], self.image.shape[1]

    def rgb(self) -> np.ndarray:
        """The picture in RGB ``(H, W, 3)``, converted on the host where it is held as planes."""
        return self.image.rgb() if isinstance(self.image, Planes) else self.image

    @property
    def pts_seconds(self) -> float:
        return float(self.pts * self.time_base)
