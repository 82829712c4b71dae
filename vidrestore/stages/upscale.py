"""``output.scale`` 2 or 4: the whole frame through Real-ESRGAN (tiled), faces scaled with it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vidrestore.device import Transfers
from vidrestore.records import Face
from vidrestore.stages.networks import Upscaler
from vidrestore.transfer import view_for

__all__ = ["scale_face", "upscale_image"]


def scale_face(face: Face, s: float) -> Face:
    """A face's coordinates in a picture ``s`` times larger (pixel centres stay centres)."""

    def sc(a: np.ndarray) -> np.ndarray:
        return ((a + 0.5) * s - 0.5).astype(np.float32)

    raw = None if face.landmarks_raw is None else sc(face.landmarks_raw)
    return replace(face, box=sc(face.box), landmarks_raw=raw, landmarks=sc(face.landmarks))


def upscale_image(
    upscaler: Upscaler, io: Transfers, image: np.ndarray, scale: int, tile: int, color_trc: int = 2
) -> tuple[np.ndarray, float]:
    """The whole picture ``scale`` times larger through Real-ESRGAN; x4 models are resized to x2.
    HDR pictures are upscaled in their SDR view and mapped back. The picture moves through ``io``:
    up once, back once."""
    import torch

    full = 255.0 if image.dtype == np.uint8 else 65535.0
    view = view_for(color_trc)
    as_type = torch.int32 if full > 255 else torch.uint8

    def finish(up: torch.Tensor) -> torch.Tensor:
        if view is not None:
            up = view.to_signal(up)
        return (up[0].clamp(0, 1) * full).round().permute(1, 2, 0).to(as_type)

    x = io.upload(image).permute(2, 0, 1)[None].float() / full
    out = upscaler.upscale_tiled(x if view is None else view.to_view(x), tile, finish, factor=scale)
    back = io.download(out, image.dtype)
    io.wait()
    return back, float(scale)
