"""The networks the face stages call, each behind a narrow, batch-in batch-out interface.

Convention for every method here: images are float32 tensors ``(N, 3, H, W)``, RGB, in
``[0, 1]``, on the placement's device; outputs likewise. The networks themselves may run
in bf16/fp16; inputs are cast on the way in and outputs back to float32.

Adding another restorer (CodeFormer, say) means one class with ``size`` and
``restore()`` like :class:`GFPGANRestorer`, and one entry in ``build_restorer``.
"""

from __future__ import annotations

import copy
import logging
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidrestore.device import Placement

__all__ = ["FaceParser", "GFPGANRestorer", "NonFiniteOutput", "Restorer", "Upscaler", "gaussian_blur"]

log = logging.getLogger(__name__)


class NonFiniteOutput(RuntimeError):
    """A network gave NaN or inf (half precision overflow, usually)."""


class Restorer(Protocol):
    size: int

    def restore(self, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        """Aligned ``(N, 3, size, size)`` faces in, restored faces out; ``fp32`` forces full precision
        (the retry after a half-precision overflow)."""
        ...


def _check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(x).all():
        raise NonFiniteOutput(f"{what} produced NaN/inf values")
    return x


class GFPGANRestorer:
    """GFPGAN v1.3/v1.4 (``GFPGANv1Clean``) with its noise fixed, so equal inputs give equal outputs.

    ``randomize_noise=False`` uses the StyleGAN decoder's stored noise buffers instead of
    drawing new noise on every call (which flickers in video).
    """

    def __init__(self, model: nn.Module, placement: Placement) -> None:
        self.model = model.to(placement.device, placement.dtype)
        self.placement = placement
        self.size = int(2**model.log_size)  # type: ignore[operator]
        self._full: nn.Module | None = None  # an fp32 copy, made on the first half-precision overflow

    def _fp32_model(self) -> nn.Module:
        if self.placement.dtype == torch.float32:
            return self.model
        if self._full is None:
            log.warning("the restorer overflowed in %s; retrying such batches in fp32", self.placement.dtype)
            self._full = copy.deepcopy(self.model).float()
        return self._full

    @torch.inference_mode()
    def restore(self, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        model = self._fp32_model() if fp32 else self.model
        x = (faces * 2 - 1).to(torch.float32 if fp32 else self.placement.dtype)
        out, _ = model(x, return_rgb=False, randomize_noise=False)
        out = _check_finite(out.float(), "the restorer")
        return (out.clamp(-1, 1) + 1) / 2


class Upscaler:
    """Real-ESRGAN (RRDBNet or SRVGGNetCompact): ``(N, 3, h, w)`` -> ``(N, 3, h*scale, w*scale)``."""

    def __init__(self, model: nn.Module, placement: Placement) -> None:
        self.model = model.to(placement.device, placement.dtype)
        self.placement = placement
        self.scale = int(getattr(model, "scale", getattr(model, "upscale", 4)))
        # RRDBNet x2 and x1 fold 2x2 and 4x4 pixels into channels first: sides must be multiples of that
        self.multiple = {2: 2, 1: 4}.get(self.scale, 1) if hasattr(model, "conv_first") else 1

    @torch.inference_mode()
    def upscale(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        m = self.multiple
        pad_h, pad_w = -h % m, -w % m
        if pad_h or pad_w:  # pad by mirroring, then cut the upscaled padding off again
            images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
        out = self.model(images.to(self.placement.dtype)).float()
        out = out[..., : h * self.scale, : w * self.scale]
        return _check_finite(out, "the upscaler").clamp(0, 1)

    def upscale_tiled(self, image: torch.Tensor, tile: int, pad: int = 16) -> torch.Tensor:
        """Upscale one large ``(1, 3, H, W)`` image in overlapping tiles (bounded memory)."""
        _, _, h, w = image.shape
        s = self.scale
        out = torch.empty((1, 3, h * s, w * s), device=image.device)
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                y0, x0 = max(y - pad, 0), max(x - pad, 0)
                y1, x1 = min(y + tile + pad, h), min(x + tile + pad, w)
                up = self.upscale(image[:, :, y0:y1, x0:x1])
                ty1, tx1 = min(y + tile, h), min(x + tile, w)
                out[:, :, y * s : ty1 * s, x * s : tx1 * s] = up[
                    :, :, (y - y0) * s : (ty1 - y0) * s, (x - x0) * s : (tx1 - x0) * s
                ]
        return out


def gaussian_blur(x: torch.Tensor, ksize: int, sigma: float) -> torch.Tensor:
    """OpenCV-equivalent Gaussian blur (reflect-101 borders) of ``(N, C, H, W)``, separable."""
    k = torch.as_tensor(cv2.getGaussianKernel(ksize, sigma)[:, 0], dtype=x.dtype, device=x.device)
    c = x.shape[1]
    r = ksize // 2
    x = F.pad(x, (r, r, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, ksize), groups=c)
    x = F.pad(x, (0, 0, r, r), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, ksize, 1), groups=c)


# facexlib's ParseNet classes kept in the face mask (skin, brows, eyes, nose, mouth, lips, ...)
_KEEP = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=np.float32)


class FaceParser:
    """ParseNet face parsing -> a soft mask of the face in aligned-crop space.

    The mask is what GFPGAN's own paste-back uses: face classes kept, blurred twice with a
    101 px Gaussian (sigma 11) at 512, borders cut. Because of that blur, parsing at 256
    instead of 512 changes the mask very little and costs a quarter (ParseNet at 512 costs
    more than GFPGAN itself).
    """

    def __init__(self, model: nn.Module, placement: Placement, size: int = 256) -> None:
        self.model = model.to(placement.device, placement.dtype)
        self.placement = placement
        self.size = size
        self.keep = torch.as_tensor(_KEEP, device=placement.device)

    @torch.inference_mode()
    def masks(self, faces: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` restored faces -> ``(N, 1, S, S)`` masks in [0, 1]."""
        s = faces.shape[-1]
        p = self.size
        x = faces if s == p else F.interpolate(faces, size=(p, p), mode="bilinear", antialias=True, align_corners=False)
        logits = self.model(((x * 2) - 1).to(self.placement.dtype))[0].float()
        mask = self.keep[logits.argmax(dim=1)][:, None] * 255.0
        if p != 512:
            mask = F.interpolate(mask, size=(512, 512), mode="bilinear", align_corners=False)
        mask = gaussian_blur(gaussian_blur(mask, 101, 11), 101, 11)
        t = 10  # the blur drags the crop's black border in: cut it off
        mask[:, :, :t, :] = 0
        mask[:, :, -t:, :] = 0
        mask[:, :, :, :t] = 0
        mask[:, :, :, -t:] = 0
        mask = mask / 255.0
        if s != 512:
            mask = F.interpolate(mask, size=(s, s), mode="bilinear", align_corners=False)
        return mask
