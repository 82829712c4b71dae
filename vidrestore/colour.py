"""YUV <-> RGB in fp32 on any torch device: the BT.601 / 709 / 2020 matrices, limited and full range,
8 to 16 bits, 4:2:0 / 4:2:2 / 4:4:4.

The frame path keeps pictures in their decoded planes; these functions turn the parts a network
needs (the detector's small input, the face regions) into RGB and restored faces back into plane
values. They agree with swscale's accurate mode (``SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT``) within
one level, and a round trip moves a picture by well under a tenth of a level on average
(``tests/test_colour.py``).

Chroma is upsampled as swscale does it: bicubic (B = 0, C = 0.6), each chroma sample centred on its
block of luma pixels. Downsampling (paste-back) is a box average over that block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MATRICES", "PlaneFormat", "chroma_weights", "rgb_to_yuv", "yuv_to_rgb"]

# Kr, Kb by AVColorSpace value; anything else is BT.601, as swscale assumes
MATRICES: dict[int, tuple[float, float]] = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG (601)
    6: (0.299, 0.114),  # SMPTE 170M (601)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant
    10: (0.2627, 0.0593),  # BT.2020 constant luminance: converted as non-constant, like swscale
}
_BT601 = (0.299, 0.114)


@dataclass(frozen=True)
class PlaneFormat:
    """How a picture's three planes hold it: bit depth, chroma subsampling and the colour tags."""

    name: str  # FFmpeg's pixel format, e.g. yuv420p, yuv422p10le
    bits: int
    sub_x: int  # 2 for 4:2:0 and 4:2:2, else 1
    sub_y: int  # 2 for 4:2:0, else 1
    matrix: int = 2  # AVColorSpace (2: unspecified, taken as BT.601)
    full_range: bool = False

    @property
    def peak(self) -> int:
        return (1 << self.bits) - 1

    @property
    def dtype(self) -> np.dtype:  # type: ignore[type-arg]
        """The samples' numpy dtype: uint8 at 8 bits, uint16 holding the code values of deeper ones."""
        return np.dtype(np.uint8 if self.bits == 8 else np.uint16)

    def chroma_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.sub_y), -(-width // self.sub_x)

    def coefficients(self) -> tuple[float, float, float, float, float, float]:
        """``kr, kb`` and the code values: luma offset and span, chroma offset and span."""
        kr, kb = MATRICES.get(self.matrix, _BT601)
        scale = float(1 << (self.bits - 8))
        if self.full_range:
            return kr, kb, 0.0, float(self.peak), float(1 << (self.bits - 1)), float(self.peak)
        return kr, kb, 16 * scale, 219 * scale, 128 * scale, 224 * scale


def _cubic(d: torch.Tensor) -> torch.Tensor:
    """swscale's bicubic kernel (B = 0, C = 0.6) at distances ``d``."""
    a = -0.6
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _taps(n_out: int, n_in: int, sub: int, start: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For output samples ``start..start+n_out`` at full resolution: the four chroma samples around
    each (edges repeated) and their bicubic weights, as swscale upsamples chroma (centred sites)."""
    pos = torch.arange(start, start + n_out, device=device, dtype=torch.float32)
    at = (pos - (sub - 1) / 2) / sub
    base = at.floor()
    offsets = torch.arange(-1, 3, device=device, dtype=torch.float32)[:, None]
    index = base[None] + offsets
    weight = _cubic(at[None] - index)
    return index.clamp(0, n_in - 1).long(), weight / weight.sum(0, keepdim=True)


def _upsample(c: torch.Tensor, fmt: PlaneFormat, box: tuple[int, int, int, int]) -> torch.Tensor:
    """``(..., hc, wc)`` chroma -> its values at the luma pixels of ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    c = c.float()
    if fmt.sub_y > 1:
        index, weight = _taps(y1 - y0, c.shape[-2], fmt.sub_y, y0, c.device)
        c = sum((c[..., index[k], :] * weight[k][:, None] for k in range(4)), torch.zeros(()))
    else:
        c = c[..., y0:y1, :]
    if fmt.sub_x > 1:
        index, weight = _taps(x1 - x0, c.shape[-1], fmt.sub_x, x0, c.device)
        c = sum((c[..., index[k]] * weight[k] for k in range(4)), torch.zeros(()))
    else:
        c = c[..., x0:x1]
    return c


def yuv_to_rgb(
    y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, fmt: PlaneFormat, box: tuple[int, int, int, int] | None = None
) -> torch.Tensor:
    """Planes ``(..., H, W)`` and ``(..., Hc, Wc)`` (integers) -> RGB ``(..., 3, h, w)`` in [0, 1], fp32,
    for the luma pixels of ``box`` (x0, y0, x1, y1; the whole picture when None)."""
    if box is None:
        box = (0, 0, y.shape[-1], y.shape[-2])
    x0, y0, x1, y1 = box
    kr, kb, yo, ys, co, cs = fmt.coefficients()
    kg = 1 - kr - kb
    luma = (y[..., y0:y1, x0:x1].float() - yo) / ys
    cb = (_upsample(u, fmt, box) - co) / cs
    cr = (_upsample(v, fmt, box) - co) / cs
    r = luma + 2 * (1 - kr) * cr
    b = luma + 2 * (1 - kb) * cb
    g = luma - (2 * kb * (1 - kb) * cb + 2 * kr * (1 - kr) * cr) / kg
    return torch.stack([r, g, b], dim=-3).clamp(0, 1)


def rgb_to_yuv(rgb: torch.Tensor, fmt: PlaneFormat) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB ``(..., 3, h, w)`` in [0, 1] -> Y, Cb, Cr code values at full resolution, fp32, unrounded."""
    kr, kb, yo, ys, co, cs = fmt.coefficients()
    r, g, b = rgb.float().unbind(-3)
    luma = kr * r + (1 - kr - kb) * g + kb * b
    cb = (b - luma) / (2 * (1 - kb))
    cr = (r - luma) / (2 * (1 - kr))
    return luma * ys + yo, cb * cs + co, cr * cs + co


def chroma_weights(values: torch.Tensor, fmt: PlaneFormat) -> torch.Tensor:
    """``(..., h, w)`` at luma resolution (h, w multiples of the subsampling) -> box averages at chroma
    resolution."""
    if fmt.sub_x == 1 and fmt.sub_y == 1:
        return values
    *lead, h, w = values.shape
    blocks = values.reshape(*lead, h // fmt.sub_y, fmt.sub_y, w // fmt.sub_x, fmt.sub_x)
    return blocks.mean(dim=(-3, -1))
