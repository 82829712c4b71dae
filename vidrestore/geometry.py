"""Face alignment geometry: the FFHQ template, similarity transforms, device warps.

Convention: a transform ``M`` is a ``(2, 3)`` float64 matrix mapping *source* pixel
coordinates ``(x, y, 1)`` to *destination* pixel coordinates, as OpenCV's warpAffine
takes it; pixel centres sit at integer coordinates. :func:`warp` samples
``dst(p) = src(M^-1 p)`` bilinearly on the tensor's device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FFHQ_TEMPLATE_512",
    "compose",
    "estimate_similarity",
    "invert",
    "map_points",
    "square_pixels",
    "template",
    "transformed_bounds",
    "warp",
    "warp_batch",
]

FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)
"""Where the 5 landmarks sit in an aligned 512x512 FFHQ face (the template facexlib uses)."""


def template(size: int) -> np.ndarray:
    """The FFHQ template scaled to a ``size`` x ``size`` crop."""
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def estimate_similarity(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The similarity transform (rotation, uniform scale, shift) taking ``points`` to ``target``.

    The least-squares fit over all five points (closed form, as complex numbers: ``t = a p + b``).
    facexlib fits by least median (LMEDS), which takes the exact fit of the best pair of points: on
    a still that is within a fraction of a pixel of this one, but in video a landmark moving by a
    tenth of a pixel can make it switch pairs, and the aligned face jumps by pixels from one frame
    to the next. This fit moves smoothly with the landmarks. ``points`` and ``target``: ``(5, 2)``.
    Returns ``(2, 3)`` float64.
    """
    p, t = points.astype(np.float64), target.astype(np.float64)
    mp, mt = p.mean(axis=0), t.mean(axis=0)
    zp = (p[:, 0] - mp[0]) + 1j * (p[:, 1] - mp[1])
    zt = (t[:, 0] - mt[0]) + 1j * (t[:, 1] - mt[1])
    energy = float(np.vdot(zp, zp).real)
    if energy < 1e-9:
        raise ValueError("cannot fit a similarity transform to degenerate landmarks")
    a = np.vdot(zp, zt) / energy
    r = np.array([[a.real, -a.imag], [a.imag, a.real]])
    return np.hstack([r, (mt - r @ mp)[:, None]])


def square_pixels(sar: float) -> np.ndarray:
    """Stored pixels -> square (display) pixels for pixels ``sar`` times as wide as they are tall: the
    centre of stored column ``x`` is at ``(x + 0.5) * sar - 0.5`` (the picture's edges stay its edges);
    rows are unchanged. The identity for square pixels."""
    return np.array([[sar, 0.0, 0.5 * sar - 0.5], [0.0, 1.0, 0.0]])


def _h(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer ∘ inner``: first ``inner``, then ``outer``."""
    out: np.ndarray = (_h(outer) @ _h(inner))[:2]
    return out


def invert(m: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.linalg.inv(_h(m))[:2]
    return out


def map_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``m`` to ``(N, 2)`` points."""
    out: np.ndarray = points @ m[:, :2].T + m[:, 2]
    return out


def transformed_bounds(m: np.ndarray, width: int, height: int, limit_w: int, limit_h: int) -> tuple[int, int, int, int]:
    """Integer box ``(x0, y0, x1, y1)`` (end exclusive) holding the image of a ``width`` x ``height``
    rectangle under ``m``, grown by one pixel for bilinear support and clipped to the limits."""
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    pts = map_points(m, corners)
    x0 = max(int(np.floor(pts[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 2, limit_w)
    y1 = min(int(np.ceil(pts[:, 1].max())) + 2, limit_h)
    return x0, y0, max(x0, x1), max(y0, y1)


def warp_batch(src: torch.Tensor, ms: Sequence[np.ndarray], out_w: int, out_h: int) -> torch.Tensor:
    """Bilinear ``dst_i = src_i ∘ M_i^-1`` of ``(N, C, H, W)`` float sources into ``(N, C, out_h, out_w)``,
    in one sampling call. Outside each source: zeros.

    Sources of different sizes share one batch by padding them with zeros to a common size: pixel
    ``(x, y)`` of a source is the same point before and after padding, so the result is the same.
    """
    h, w = src.shape[-2:]
    inv = torch.as_tensor(np.stack([invert(m) for m in ms]), dtype=torch.float32, device=src.device)
    ys, xs = torch.meshgrid(
        torch.arange(out_h, dtype=torch.float32, device=src.device),
        torch.arange(out_w, dtype=torch.float32, device=src.device),
        indexing="ij",
    )
    sx = inv[:, 0, 0, None, None] * xs + inv[:, 0, 1, None, None] * ys + inv[:, 0, 2, None, None]
    sy = inv[:, 1, 0, None, None] * xs + inv[:, 1, 1, None, None] * ys + inv[:, 1, 2, None, None]
    # align_corners=False: pixel centre i sits at (2i + 1) / size - 1
    grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], dim=-1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp(
    src: torch.Tensor, m: np.ndarray, out_w: int, out_h: int, border: tuple[float, ...] | None = None
) -> torch.Tensor:
    """Bilinear ``dst = src ∘ M^-1`` of a ``(C, H, W)`` float tensor into ``(C, out_h, out_w)``.

    Outside the source, ``border`` (one value per channel) is used, else zeros.
    """
    if border is None:
        return warp_batch(src[None], [m], out_w, out_h)[0]
    b = torch.tensor(border, dtype=src.dtype, device=src.device).view(-1, 1, 1)
    return warp_batch((src - b)[None], [m], out_w, out_h)[0] + b
