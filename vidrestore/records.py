"""The records that flow between stages: small, typed, checked on construction.

Convention: pictures are ``(H, W, 3)`` RGB arrays, ``uint8`` for 8-bit sources and
``uint16`` (full 16-bit scale) for deeper ones. Coordinates are ``(x, y)`` in source
pixels with pixel centres at integer positions. Landmarks are the 5 facexlib points in
order: left eye, right eye, nose tip, left mouth corner, right mouth corner (left and
right as seen in the picture).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = ["Face", "Frame"]


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
class Frame:
    """One decoded picture with its timing, in presentation order."""

    index: int
    pts: int
    time_base: Fraction
    image: np.ndarray
    duration: int = 0  # in time_base ticks; 0 when unknown
    rotation: int = 0  # display rotation, degrees counter-clockwise (the stream's display matrix)
    color_trc: int = 2  # transfer characteristic (AVColorTransferCharacteristic; 16 PQ, 18 HLG, 2 unknown)
    faces: tuple[Face, ...] = field(default=())
    on_device: Any = field(default=None, repr=False)
    """The same picture as the face stages already hold it on their device (a ``(H, W, 3)`` tensor,
    uploaded with its detection batch), so that it crosses once; None where it was not uploaded."""

    def __post_init__(self) -> None:
        img = self.image
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"Frame.image must be (H, W, 3) uint8/uint16, got {img.shape} {img.dtype}")

    @property
    def pts_seconds(self) -> float:
        return float(self.pts * self.time_base)
