"""The networks the face stages call, each behind a narrow, batch-in batch-out interface.

Convention for every method here: images are float32 tensors ``(N, 3, H, W)``, RGB, in
``[0, 1]``, on the placement's device; outputs likewise. The networks themselves may run
in bf16/fp16; inputs are cast on the way in and outputs back to float32.

Restorers: the face stage talks to :class:`Restorer` only (aligned crops in, restored crops out,
and :class:`RestorerNeeds` saying what the model needs). Adding one means a class here, an entry
in :func:`build_restorer`, a loader in ``models/loading.py`` and a registry entry.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidrestore.device import Placement, Transfers
from vidrestore.models.engine import EngineMaker, NetShape, eager_maker

__all__ = [
    "CodeFormerRestorer",
    "FaceParser",
    "GFPGANRestorer",
    "NonFiniteOutput",
    "Restorer",
    "RestorerNeeds",
    "Upscaler",
    "build_restorer",
    "finite",
    "gaussian_blur",
    "not_finite",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class NonFiniteOutput(RuntimeError):
    """A network gave NaN or inf (half precision overflow, usually)."""


@dataclass(frozen=True)
class RestorerNeeds:
    """What a restorer needs from the face stage, and what it offers.

    ``size``: the side of the aligned crop; ``value_range``: what the network takes and gives
    (the restorer converts from and to ``[0, 1]`` itself); ``template``: where the five landmarks
    go in the crop (``ffhq``: facexlib's FFHQ template, scaled to ``size``); ``bf16``/``fp16``:
    whether half precision is safe; ``batches``: whether several faces may go in one call;
    ``knobs``: the config keys it reads besides its weights.
    """

    size: int = 512
    value_range: tuple[float, float] = (-1.0, 1.0)
    template: str = "ffhq"
    bf16: bool = True
    fp16: bool = True
    batches: bool = True
    knobs: tuple[str, ...] = ()


class Restorer(Protocol):
    needs: RestorerNeeds

    @property
    def size(self) -> int: ...

    def restore(self, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        """Aligned ``(N, 3, size, size)`` faces in, restored faces out; ``fp32`` forces full precision
        (the retry after a half-precision overflow)."""
        ...


def finite(x: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool, on ``x``'s device: whether each item of the batch is free of NaN and inf. Not
    read here: the caller reads the flags of many batches at once, so the stream does not stall."""
    return torch.isfinite(x).flatten(1).all(dim=1)


def not_finite(flags: list[tuple[list[T], torch.Tensor]], io: Transfers) -> list[T]:
    """The items (faces) whose network output was not finite: the batches' device flags (from
    :func:`finite`), read back through ``io`` in one copy, since each read waits for the device."""
    if not flags:
        return []
    ok = io.read(torch.cat([f for _, f in flags])).tolist()
    return [item for item, good in zip((i for batch, _ in flags for i in batch), ok, strict=True) if not good]


class _HalfRetry:
    """A network in the placement's precision, with an fp32 copy made on the first overflow."""

    def __init__(self, model: nn.Module, placement: Placement, needs: RestorerNeeds) -> None:
        dtype = placement.dtype
        if (dtype == torch.float16 and not needs.fp16) or (dtype == torch.bfloat16 and not needs.bf16):
            ok_bf16 = needs.bf16 and placement.device.type == "cuda" and torch.cuda.is_bf16_supported()
            dtype = torch.bfloat16 if ok_bf16 else torch.float32
            log.info("this restorer is not safe in %s; running it in %s", placement.dtype, dtype)
        self.dtype = dtype
        self.model = model.to(placement.device, dtype)
        self.needs = needs
        self._full: nn.Module | None = None

    @property
    def size(self) -> int:
        return self.needs.size

    def _pick(self, fp32: bool) -> tuple[nn.Module, torch.dtype]:
        if not fp32 or self.dtype == torch.float32:
            return self.model, self.dtype
        if self._full is None:
            log.warning("the restorer overflowed in %s; retrying such batches in fp32", self.dtype)
            self._full = copy.deepcopy(self.model).float()
        return self._full, torch.float32


class GFPGANRestorer(_HalfRetry):
    """GFPGAN v1.2/v1.3/v1.4 (``GFPGANv1Clean``) and RestoreFormer: both take ``[-1, 1]`` crops and
    are called as the ``gfpgan`` package's ``GFPGANer`` calls them, with GFPGAN's noise fixed, so
    equal inputs give equal outputs (``randomize_noise=False`` uses the StyleGAN decoder's stored
    noise instead of drawing new noise on every call, which flickers in video; RestoreFormer has
    no noise and ignores it)."""

    def __init__(self, model: nn.Module, placement: Placement, make: EngineMaker = eager_maker) -> None:
        size = int(2**model.log_size) if hasattr(model, "log_size") else 512  # type: ignore[operator]
        super().__init__(model, placement, RestorerNeeds(size=size))
        self.net = make("restorer", _GFPGANCall(self.model), NetShape((1, 3, size, size)))

    @torch.inference_mode()
    def restore(self, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        model, dtype = self._pick(fp32)
        x = (faces * 2 - 1).to(dtype)
        out = self.net(x) if model is self.model else _GFPGANCall(model)(x)  # the fp32 retry runs eagerly
        assert isinstance(out, torch.Tensor)
        restored: torch.Tensor = (out.float().clamp(-1, 1) + 1) / 2  # NaN stays NaN: the stage looks for it
        return restored


class _GFPGANCall(nn.Module):
    """GFPGAN called as ``GFPGANer`` calls it, as a module of one input and one output (what an
    engine exports or compiles)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x, return_rgb=False, randomize_noise=False)[0]
        return out


class CodeFormerRestorer(_HalfRetry):
    """CodeFormer, with its fidelity weight ``w`` (``restorer.fidelity``): 0 leans on the learned
    codebook (more invented detail), 1 keeps to the input (more faithful, steadier in video).

    Called as CodeFormer's own inference script calls it (``[-1, 1]`` crops, ``adain``); spandrel's
    class names the weight ``weight`` (its ``w=`` would be swallowed silently), so it is passed by
    that name. Not safe in fp16 (spandrel says so): fp16 placements run it in bf16 or fp32.
    """

    def __init__(self, model: nn.Module, placement: Placement, fidelity: float) -> None:
        super().__init__(model, placement, RestorerNeeds(fp16=False, knobs=("restorer.fidelity",)))
        self.fidelity = float(fidelity)

    @torch.inference_mode()
    def restore(self, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        model, dtype = self._pick(fp32)
        out = model((faces * 2 - 1).to(dtype), weight=self.fidelity)[0]
        restored: torch.Tensor = (out.float().clamp(-1, 1) + 1) / 2  # NaN stays NaN: the stage looks for it
        return restored


def build_restorer(
    arch: str, model: nn.Module, placement: Placement, fidelity: float = 0.5, make: EngineMaker = eager_maker
) -> Restorer:
    """The restorer for a loaded network of family ``arch`` (CodeFormer runs eagerly whatever the
    engine: its fidelity is a call argument, not an input an exported graph takes)."""
    if arch == "codeformer":
        return CodeFormerRestorer(model, placement, fidelity)
    if arch in ("gfpgan_v1_clean", "restoreformer"):
        return GFPGANRestorer(model, placement, make)
    raise ValueError(f"{arch} is not a face restorer")


class Upscaler:
    """Real-ESRGAN (RRDBNet or SRVGGNetCompact): ``(N, 3, h, w)`` -> ``(N, 3, h*scale, w*scale)``."""

    def __init__(self, model: nn.Module, placement: Placement, make: EngineMaker = eager_maker) -> None:
        self.model = model.to(placement.device, placement.dtype)
        self.placement = placement
        self.scale = int(getattr(model, "scale", getattr(model, "upscale", 4)))
        # RRDBNet x2 and x1 fold 2x2 and 4x4 pixels into channels first: sides must be multiples of that
        self.multiple = {2: 2, 1: 4}.get(self.scale, 1) if hasattr(model, "conv_first") else 1
        self.net = make("upscaler", self.model, NetShape((1, 3, 64, 64), {0: "batch", 2: "height", 3: "width"}))

    @torch.inference_mode()
    def upscale(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        m = self.multiple
        pad_h, pad_w = -h % m, -w % m
        if pad_h or pad_w:  # pad by mirroring, then cut the upscaled padding off again
            images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
        out = self.net(images.to(self.placement.dtype))
        assert isinstance(out, torch.Tensor)
        out = out.float()
        up: torch.Tensor = out[..., : h * self.scale, : w * self.scale].clamp(0, 1)  # NaN stays NaN: see finite()
        return up

    def upscale_tiled(
        self,
        image: torch.Tensor,
        tile: int,
        finish: Callable[[torch.Tensor], torch.Tensor],
        factor: int | None = None,
        pad: int = 16,
    ) -> torch.Tensor:
        """Upscale one large ``(1, 3, H, W)`` image ``factor`` times (default: the model's scale) in
        overlapping tiles. Each tile is resized to ``factor`` (when the model's scale differs) and
        handed to ``finish`` (``(1, 3, h, w)`` float -> ``(h, w, C)`` in the picture's own type) as it
        comes, so only the finished picture is ever held whole: a few bytes per output pixel, not the
        dozens that a float picture and its clamped, rounded copies cost."""
        _, _, h, w = image.shape
        s, f = self.scale, factor or self.scale
        out: torch.Tensor | None = None
        ok = torch.ones((), dtype=torch.bool, device=image.device)
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                y0, x0 = max(y - pad, 0), max(x - pad, 0)
                y1, x1 = min(y + tile + pad, h), min(x + tile + pad, w)
                up = self.upscale(image[:, :, y0:y1, x0:x1])
                if f != s:  # the padding gives the resize the same neighbours as a whole-picture resize
                    size = ((y1 - y0) * f, (x1 - x0) * f)
                    up = F.interpolate(up, size=size, mode="bicubic", antialias=True, align_corners=False)
                ty1, tx1 = min(y + tile, h), min(x + tile, w)
                part = up[:, :, (y - y0) * f : (ty1 - y0) * f, (x - x0) * f : (tx1 - x0) * f]
                ok &= finite(part)[0]  # read once per picture, not once per tile
                done = finish(part)
                if out is None:
                    out = torch.empty((h * f, w * f, done.shape[2]), dtype=done.dtype, device=done.device)
                out[y * f : ty1 * f, x * f : tx1 * f] = done
        if not bool(ok):
            raise NonFiniteOutput("the upscaler produced NaN/inf values")
        assert out is not None
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


class _FirstOutput(nn.Module):
    """A network's first output only (ParseNet also gives a restored image nobody uses)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)[0]
        return out


# facexlib's ParseNet classes kept in the face mask (skin, brows, eyes, nose, mouth, lips, ...)
_KEEP = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=np.float32)


class FaceParser:
    """ParseNet face parsing -> a soft mask of the face in aligned-crop space.

    The mask is what GFPGAN's own paste-back uses: face classes kept, blurred twice with a
    101 px Gaussian (sigma 11) at 512, borders cut. Because of that blur, parsing at 256
    instead of 512 changes the mask very little and costs a quarter (ParseNet at 512 costs
    more than GFPGAN itself).
    """

    def __init__(
        self, model: nn.Module, placement: Placement, size: int = 256, make: EngineMaker = eager_maker
    ) -> None:
        self.model = model.to(placement.device, placement.dtype)
        self.placement = placement
        self.size = size
        self.keep = torch.as_tensor(_KEEP, device=placement.device)
        self.net = make("parser", _FirstOutput(self.model), NetShape((1, 3, size, size)))

    @torch.inference_mode()
    def masks(self, faces: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` restored faces -> ``(N, 1, S, S)`` masks in [0, 1]."""
        s = faces.shape[-1]
        p = self.size
        x = faces if s == p else F.interpolate(faces, size=(p, p), mode="bilinear", antialias=True, align_corners=False)
        out = self.net(((x * 2) - 1).to(self.placement.dtype))
        assert isinstance(out, torch.Tensor)
        logits = out.float()
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
