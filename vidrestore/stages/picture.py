"""A frame's picture while the face stages hold it on the device: RGB for images and converted
formats, the decoded planes for YUV video.

Alignment and the small-face upscaler read regions of it as RGB floats (:meth:`rgb`); paste-back
writes the restored faces into it (:meth:`composite`). For planes, only those regions are ever
converted: luma is written at full resolution, chroma at its own resolution with the mask
box-averaged to it, and every sample outside a face's region, in every plane, stays as decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch

from vidrestore.colour import PlaneFormat, chroma_weights, rgb_to_yuv, yuv_to_rgb
from vidrestore.device import Transfers
from vidrestore.records import Planes
from vidrestore.transfer import SdrView

__all__ = ["DevicePicture", "Pasted", "PlanesPicture", "RgbPicture", "on_device", "same_form", "small_rgb"]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1


@dataclass
class Pasted:
    """A restored face warped back onto its frame region, ready to composite."""

    frame_pos: int
    order: int
    region: Box  # in the frame
    pixels: torch.Tensor  # (3, h, w) RGB in [0, 1]: the SDR view for HDR pictures
    alpha: torch.Tensor  # (1, h, w): the mask, warped
    amount: float  # blend x the face's weight


class DevicePicture(Protocol):
    size: tuple[int, int]  # height, width

    def rgb(self, box: Box, view: SdrView | None) -> torch.Tensor:
        """``(3, h, w)`` floats in [0, 1] of the region ``box``; HDR signals in their SDR view."""
        ...

    def composite(self, faces: list[Pasted], view: SdrView | None) -> None:
        """The faces blended in, in place, each inside its own region, in the order given."""
        ...

    def download(self, io: Transfers) -> np.ndarray | Planes:
        """Back on the host in the form it came in."""
        ...

    def tensors(self) -> list[torch.Tensor]:
        """The device tensors that hold it."""
        ...


def full_scale(picture: torch.Tensor) -> float:
    """The white level of a device RGB picture's integer pixels."""
    return 255.0 if picture.dtype == torch.uint8 else 65535.0


class RgbPicture:
    """``(H, W, 3)`` integers (uint8, or int32 holding 16-bit values), back on the host as uint8 or uint16."""

    def __init__(self, pixels: torch.Tensor) -> None:
        self.pixels = pixels
        self.dtype = np.dtype(np.uint8 if pixels.dtype == torch.uint8 else np.uint16)
        self.size = (int(pixels.shape[0]), int(pixels.shape[1]))

    def rgb(self, box: Box, view: SdrView | None) -> torch.Tensor:
        x0, y0, x1, y1 = box
        x = self.pixels[y0:y1, x0:x1].permute(2, 0, 1).float() / full_scale(self.pixels)
        return x if view is None else view.to_view(x)

    def composite(self, faces: list[Pasted], view: SdrView | None) -> None:
        full = full_scale(self.pixels)
        for face in faces:
            x0, y0, x1, y1 = face.region
            face_px = face.pixels if view is None else view.to_signal(face.pixels)  # back from the SDR view
            alpha = face.alpha.clamp(0, 1) * face.amount
            region = self.pixels[y0:y1, x0:x1].permute(2, 0, 1).float()
            mixed = alpha * (face_px * full) + (1 - alpha) * region
            self.pixels[y0:y1, x0:x1] = mixed.round().clamp(0, full).permute(1, 2, 0).to(self.pixels.dtype)

    def download(self, io: Transfers) -> np.ndarray:
        return io.download(self.pixels, self.dtype)

    def tensors(self) -> list[torch.Tensor]:
        return [self.pixels]


class PlanesPicture:
    """Y, Cb and Cr as decoded: ``(H, W)`` and ``(Hc, Wc)`` integers (uint8, or int16 holding up to
    15-bit code values)."""

    def __init__(self, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, fmt: PlaneFormat) -> None:
        self.y, self.u, self.v, self.format = y, u, v, fmt
        self.size = (int(y.shape[0]), int(y.shape[1]))

    def rgb(self, box: Box, view: SdrView | None) -> torch.Tensor:
        x = yuv_to_rgb(self.y, self.u, self.v, self.format, box)
        return x if view is None else view.to_view(x)

    def composite(self, faces: list[Pasted], view: SdrView | None) -> None:
        f = self.format
        peak = float(f.peak)
        for face in faces:
            x0, y0, x1, y1 = face.region
            face_px = face.pixels if view is None else view.to_signal(face.pixels)
            alpha = (face.alpha.clamp(0, 1) * face.amount)[0]
            luma, cb, cr = rgb_to_yuv(face_px.clamp(0, 1), f)
            region = self.y[y0:y1, x0:x1].float()
            self.y[y0:y1, x0:x1] = (alpha * luma + (1 - alpha) * region).round().clamp(0, peak).to(self.y.dtype)
            # chroma: the region grown to whole chroma samples; outside the face alpha is 0 there
            cx0, cy0 = x0 // f.sub_x, y0 // f.sub_y
            cx1, cy1 = -(-x1 // f.sub_x), -(-y1 // f.sub_y)
            ph, pw = (cy1 - cy0) * f.sub_y, (cx1 - cx0) * f.sub_x
            oy, ox = y0 - cy0 * f.sub_y, x0 - cx0 * f.sub_x
            grown = alpha.new_zeros((3, ph, pw))
            grown[0, oy : oy + y1 - y0, ox : ox + x1 - x0] = alpha
            grown[1, oy : oy + y1 - y0, ox : ox + x1 - x0] = alpha * cb
            grown[2, oy : oy + y1 - y0, ox : ox + x1 - x0] = alpha * cr
            weight, mixed_cb, mixed_cr = chroma_weights(grown, f).unbind(0)
            for plane, mixed in ((self.u, mixed_cb), (self.v, mixed_cr)):
                old = plane[cy0:cy1, cx0:cx1].float()
                plane[cy0:cy1, cx0:cx1] = (mixed + (1 - weight) * old).round().clamp(0, peak).to(plane.dtype)

    def download(self, io: Transfers) -> Planes:
        return io.download_planes(self.y, self.u, self.v, self.format)

    def tensors(self) -> list[torch.Tensor]:
        return [self.y, self.u, self.v]


def on_device(image: np.ndarray | Planes, io: Transfers) -> DevicePicture:
    """A host picture uploaded through ``io`` (a private copy: paste-back writes into it)."""
    if isinstance(image, Planes):
        y, u, v = io.upload_planes([image])
        return PlanesPicture(y[0], u[0], v[0], image.format)
    return RgbPicture(io.upload(image))


def small_rgb(planes: Planes, width: int, height: int) -> np.ndarray:
    """Planes shrunk to ``width`` x ``height`` (area average, each plane on its own) and then made
    RGB uint8: a detector's input at its working size, for the price of converting that size only."""
    f = planes.format
    shrunk = [cv2.resize(p, (width, height), interpolation=cv2.INTER_AREA) for p in (planes.y, planes.u, planes.v)]
    at = PlaneFormat(f.name, f.bits, 1, 1, f.matrix, f.full_range)
    y, u, v = (torch.from_numpy(p.astype(np.int32)) for p in shrunk)
    rgb = yuv_to_rgb(y, u, v, at) * 255.0
    return rgb.round().permute(1, 2, 0).numpy().astype(np.uint8)  # type: ignore[no-any-return]


def same_form(a: np.ndarray | Planes, b: np.ndarray | Planes) -> bool:
    """Whether two host pictures can share a batch: one size, and one form (RGB of one dtype, or
    planes of one format)."""
    if isinstance(a, Planes) or isinstance(b, Planes):
        return isinstance(a, Planes) and isinstance(b, Planes) and a.format == b.format and a.shape == b.shape
    return a.shape == b.shape and a.dtype == b.dtype
