"""Small faces upscaled on their crop, and every face aligned, in batches on the device.

Per face: if it is smaller than ``upscaler.below``, a square crop around it (with
``upscaler.margin``) goes through Real-ESRGAN, never the whole frame, and the face is aligned
from that sharper crop. Alignment warps only the frame region the aligned crop comes from, all
faces of a group in batched warps (sources padded to a shared size, the padding bounded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from vidrestore.device import constant
from vidrestore.geometry import (
    compose,
    estimate_similarity,
    invert,
    square_pixels,
    transformed_bounds,
    warp_batch,
)
from vidrestore.records import Face, Frame
from vidrestore.stages.networks import Upscaler, finite
from vidrestore.stages.picture import DevicePicture
from vidrestore.transfer import view_for

__all__ = ["Job", "Plan", "align_faces", "buckets", "pad_stack", "plan_face", "unupscaled", "upscale_small"]

log = logging.getLogger(__name__)

# Outside the picture an aligned crop is filled with this grey (RGB), as facexlib does.
_BORDER = (132 / 255, 133 / 255, 135 / 255)


@dataclass
class Plan:
    """One face's geometry, worked out on the host before any pixel moves."""

    frame_pos: int
    frame: Frame
    face: Face
    to_aligned: np.ndarray  # frame pixels -> aligned crop pixels
    box: tuple[int, int, int, int]  # the frame region the aligned crop is sampled from
    crop: tuple[int, int, int, int] | None = None  # small faces: the square crop that goes through the upscaler
    from_up: np.ndarray | None = None  # upscaled-crop pixels -> aligned crop pixels
    up: torch.Tensor | None = None  # (3, s*h, s*w): that crop, upscaled


@dataclass
class Job:
    """One aligned face on its way through restoration, fusion and paste-back."""

    frame_pos: int
    frame_index: int
    face: Face
    to_aligned: np.ndarray  # frame pixels -> aligned crop pixels
    aligned: torch.Tensor  # (3, S, S) unrestored crop
    clip: tuple[int, int, int, int]  # paste only inside this frame box (the upscaled crop's, when upscaled)
    restored: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # (1, S, S) in [0, 1]: where the restored face is pasted


def buckets(shapes: list[tuple[int, int]], waste: float = 2.0) -> list[list[int]]:
    """Indices of ``(h, w)`` shapes in batches that share one padded size, largest first: a shape joins
    a batch while the batch's padded area stays within ``waste`` x its own area."""
    order = sorted(range(len(shapes)), key=lambda i: shapes[i][0] * shapes[i][1], reverse=True)
    out: list[list[int]] = []
    h = w = 0
    for i in order:
        sh, sw = shapes[i]
        if out and max(h, sh) * max(w, sw) <= waste * sh * sw:
            out[-1].append(i)
            h, w = max(h, sh), max(w, sw)
        else:
            out.append([i])
            h, w = sh, sw
    return out


def pad_stack(images: list[torch.Tensor]) -> torch.Tensor:
    """``(C, h_i, w_i)`` tensors -> one ``(N, C, H, W)`` batch, each at the top left, zeros around it."""
    if all(im.shape == images[0].shape for im in images):
        return torch.stack(images)
    h, w = max(im.shape[1] for im in images), max(im.shape[2] for im in images)
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im
    return out


def to_up(scale: int, crop: tuple[int, int, int, int]) -> np.ndarray:
    """Frame pixel centre -> pixel centre of the upscaled crop: ``(x - x0 + 0.5) * s - 0.5``."""
    s, (x0, y0) = scale, crop[:2]
    return np.array([[s, 0.0, s * (0.5 - x0) - 0.5], [0.0, s, s * (0.5 - y0) - 0.5]])


def plan_face(
    pos: int, frame: Frame, face: Face, template: np.ndarray, size: int, upscale_below: int, margin: float, scale: int
) -> Plan | None:
    """Where the face's aligned crop comes from; None if it lies outside the picture. Raises
    ValueError if it cannot be aligned. ``scale``: the upscaler's (for faces under ``upscale_below``).

    Faces are in square (display) pixels; the picture is sampled in its stored ones, so the
    alignment is the similarity fitted in square pixels after the frame's :func:`square_pixels`:
    a face on a disc's anamorphic frame is aligned as it is seen, not squeezed. The small-face
    crop is square as seen too (narrower in stored pixels where they are wide)."""
    h, w = frame.size
    sar = float(frame.sar)
    to_aligned = compose(estimate_similarity(face.landmarks, template), square_pixels(sar))
    crop = from_up = None
    if face.size < upscale_below:
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        half = face.size * (0.5 + margin)
        cx = (cx + 0.5) / sar - 0.5  # the centre and half-width in stored pixels
        x0, y0 = max(int(np.floor(cx - half / sar)), 0), max(int(np.floor(cy - half)), 0)
        x1, y1 = min(int(np.ceil(cx + half / sar)), w), min(int(np.ceil(cy + half)), h)
        if x1 > x0 and y1 > y0:
            crop = (x0, y0, x1, y1)
            from_up = compose(to_aligned, invert(to_up(scale, crop)))  # upscaled crop -> stored frame -> aligned
    box = transformed_bounds(invert(to_aligned), size, size, w, h)
    if box[2] <= box[0] or box[3] <= box[1]:
        return None  # the face lies outside the picture
    return Plan(pos, frame, face, to_aligned, box, crop, from_up)


def upscale_small(
    upscaler: Upscaler, plans: list[Plan], pictures: dict[int, DevicePicture], batch_size: int
) -> list[tuple[list[Plan], torch.Tensor]]:
    """Real-ESRGAN on the square crop around each small face (never the frame), crops of one size
    in one batch. Returns whether each crop came out finite, on the device, unread: the caller reads
    them with the restorer's (one wait), and aligns a face whose crop did not from the frame
    (:func:`unupscaled`)."""
    small = [p for p in plans if p.crop is not None]
    if not small:
        return []
    by_shape: dict[tuple[int, int], list[Plan]] = {}
    for p in small:
        assert p.crop is not None
        by_shape.setdefault((p.crop[3] - p.crop[1], p.crop[2] - p.crop[0]), []).append(p)
    flags: list[tuple[list[Plan], torch.Tensor]] = []
    for same in by_shape.values():
        for start in range(0, len(same), batch_size):
            batch = same[start : start + batch_size]
            crops = []
            for p in batch:
                assert p.crop is not None
                crops.append(pictures[p.frame_pos].rgb(p.crop, view_for(p.frame.color_trc)))
            up = upscaler.upscale(torch.stack(crops))
            for p, one in zip(batch, up, strict=True):
                p.up = one
            flags.append((batch, finite(up)))
    return flags


def unupscaled(bad: list[Plan], pictures: dict[int, DevicePicture], size: int) -> list[Job]:
    """Faces whose upscaled crop came out NaN/inf, aligned from the frame instead."""
    for p in bad:
        log.warning(
            "frame %d: the upscaler gave NaN/inf; face %d is restored unupscaled", p.frame.index, p.face.track_id
        )
        p.crop, p.up = None, None
    return align_faces(bad, pictures, size, 1)


def align_faces(plans: list[Plan], pictures: dict[int, DevicePicture], size: int, scale: int) -> list[Job]:
    """Every face's aligned crop, from its frame region or its upscaled crop, in batched warps."""
    sources: list[torch.Tensor] = []
    matrices: list[np.ndarray] = []
    geometry: list[tuple[np.ndarray, tuple[int, int, int, int]]] = []
    for p in plans:
        if p.up is not None:
            assert p.crop is not None and p.from_up is not None
            source, matrix = p.up, p.from_up
            to_aligned, clip = compose(p.from_up, to_up(scale, p.crop)), p.crop
        else:
            x0, y0 = p.box[:2]
            source = pictures[p.frame_pos].rgb(p.box, view_for(p.frame.color_trc))
            matrix = compose(p.to_aligned, np.array([[1.0, 0, x0], [0, 1.0, y0]]))
            to_aligned = p.to_aligned
            h, w = p.frame.size
            clip = (0, 0, w, h)
        sources.append(source)
        matrices.append(matrix)
        geometry.append((to_aligned, clip))
    if not sources:
        return []
    aligned: dict[int, torch.Tensor] = {}
    border = constant(_BORDER, sources[0].device).view(3, 1, 1)
    for bucket in buckets([(s.shape[1], s.shape[2]) for s in sources]):
        # outside its own source every crop is the border grey: zeros of (source - border)
        stacked = pad_stack([sources[i] - border for i in bucket])
        crops = warp_batch(stacked, [matrices[i] for i in bucket], size, size) + border
        aligned.update(zip(bucket, crops, strict=True))
    return [
        Job(p.frame_pos, p.frame.index, p.face, to_aligned, aligned[i], clip)
        for i, (p, (to_aligned, clip)) in enumerate(zip(plans, geometry, strict=True))
    ]
