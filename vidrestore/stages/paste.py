"""Paste-back: each restored face, with its mask, warped back into its own frame region, on the
device, to be composited there by the picture (:mod:`.picture`), RGB or planes. Every pixel outside a
face's region is the decoded pixel, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from vidrestore.geometry import compose, invert, transformed_bounds, warp_batch
from vidrestore.stages.align import Job, buckets
from vidrestore.stages.networks import FaceParser
from vidrestore.stages.picture import DevicePicture, Pasted

__all__ = ["feather_mask", "masks", "warp_back"]


def feather_mask(size: int, device: torch.device) -> torch.Tensor:
    """A soft square ``(1, 1, size, size)`` mask: 1 in the middle, falling to 0 at the edges.

    The ramp spans the outer ~12% of the crop, so the restored face meets the frame
    without a visible seam.
    """
    ramp = max(2, size // 8)
    edge = max(1, size // 128)
    idx = torch.arange(size, device=device, dtype=torch.float32)
    dist = torch.minimum(idx, size - 1 - idx) - edge  # distance from the cut-off edge
    line = ((dist + 0.5) / ramp).clamp(0, 1)
    line = line * line * (3 - 2 * line)  # smoothstep: no kink where the ramp ends
    return (line[:, None] * line[None, :])[None, None]


def masks(jobs: list[Job], parser: FaceParser | None, feather: torch.Tensor, batch_size: int) -> None:
    """The paste-back mask of every restored face: ParseNet once per batch, else the soft square."""
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        if parser is None:
            found = feather[0].expand(len(batch), -1, -1, -1)
        else:
            found = parser.masks(torch.stack([j.restored for j in batch if j.restored is not None]))
        for job, mask in zip(batch, found, strict=True):
            job.mask = mask


def warp_back(jobs: list[Job], pictures: dict[int, DevicePicture], size: int, blend: float) -> list[Pasted]:
    """Each restored face and its mask, warped back onto its own frame region, in batched warps."""
    regions, backs, kept = [], [], []
    for job in jobs:
        if blend * job.face.weight <= 0 or job.restored is None or job.mask is None:
            continue
        h, w = pictures[job.frame_pos].size
        bx0, by0, bx1, by1 = transformed_bounds(invert(job.to_aligned), size, size, w, h)
        cx0, cy0, cx1, cy1 = job.clip
        x0, y0, x1, y1 = max(bx0, cx0), max(by0, cy0), min(bx1, cx1), min(by1, cy1)
        if x1 <= x0 or y1 <= y0:
            continue
        # region pixel (x, y) -> aligned pixel: to_aligned ∘ shift(x0, y0); the warp wants aligned -> region
        backs.append(invert(compose(job.to_aligned, np.array([[1.0, 0, x0], [0, 1.0, y0]]))))
        regions.append((x0, y0, x1, y1))
        kept.append(job)
    out = []
    for bucket in buckets([(y1 - y0, x1 - x0) for x0, y0, x1, y1 in regions]):
        h = max(regions[i][3] - regions[i][1] for i in bucket)
        w = max(regions[i][2] - regions[i][0] for i in bucket)
        both = torch.stack([torch.cat([kept[i].restored, kept[i].mask]) for i in bucket])  # type: ignore[list-item]
        warped = warp_batch(both, [backs[i] for i in bucket], w, h)
        for i, one in zip(bucket, warped, strict=True):
            x0, y0, x1, y1 = regions[i]
            one = one[:, : y1 - y0, : x1 - x0]
            amount = blend * kept[i].face.weight
            out.append(Pasted(kept[i].frame_pos, i, regions[i], one[:3], one[3:], amount))
    out.sort(key=lambda p: p.order)  # overlapping faces are composited in the order they came
    return out
