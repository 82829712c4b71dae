"""Upscale small faces, align, restore in batches across frames, paste back.

Per face: if it is smaller than ``upscaler.below``, a square crop around it (with
``upscaler.margin``) goes through Real-ESRGAN, never the whole frame, and the face is
aligned from that sharper crop. Alignment warps only the frame region the aligned crop
comes from. Faces from several frames are restored in one batch. Paste-back touches
only each face's own region; every other pixel is the decoded pixel, bit for bit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import torch

from vidrestore.device import Transfers
from vidrestore.errors import PipelineError, VidrestoreError
from vidrestore.geometry import (
    compose,
    estimate_similarity,
    invert,
    map_points,
    template,
    transformed_bounds,
    warp_batch,
)
from vidrestore.records import Face, Frame
from vidrestore.stages.networks import FaceParser, NonFiniteOutput, Restorer, Upscaler, finite
from vidrestore.stages.temporal import TemporalFusion
from vidrestore.stats import RunStats
from vidrestore.transfer import SdrView, view_for

__all__ = ["RestoreStage", "feather_mask"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Outside the picture an aligned crop is filled with this grey (RGB), as facexlib does.
_BORDER = (132 / 255, 133 / 255, 135 / 255)


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


@dataclass
class _Plan:
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
class _Job:
    frame_pos: int
    frame_index: int
    face: Face
    to_aligned: np.ndarray  # frame pixels -> aligned crop pixels
    aligned: torch.Tensor  # (3, S, S) unrestored crop
    clip: tuple[int, int, int, int]  # paste only inside this frame box (the upscaled crop's, when upscaled)
    restored: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # (1, S, S) in [0, 1]: where the restored face is pasted


def _full(picture: torch.Tensor) -> float:
    return 255.0 if picture.dtype == torch.uint8 else 65535.0


def _to_float(pixels: torch.Tensor, view: SdrView | None = None) -> torch.Tensor:
    """``(h, w, 3)`` integer pixels of a device picture -> ``(3, h, w)`` floats in [0, 1]; HDR signals
    in their SDR view."""
    x = pixels.permute(2, 0, 1).float() / _full(pixels)
    return x if view is None else view.to_view(x)


@contextmanager
def _failures_name(frame_index: int, last: int | None = None) -> Iterator[None]:
    """An unexpected error inside the block becomes a PipelineError naming this frame, or the group's
    frames ``frame_index``..``last`` worked on together (exit 1)."""
    try:
        yield
    except (VidrestoreError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise PipelineError.during("restore", exc, frame_index, last, "working on") from exc


@dataclass
class _Pasted:
    """A restored face warped back onto its frame region, ready to composite."""

    frame_pos: int
    order: int
    region: tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame
    pixels: torch.Tensor  # (3, h, w) in [0, 1]
    alpha: torch.Tensor  # (1, h, w): the mask, warped
    amount: float  # blend x the face's weight


def _not_finite(flags: list[tuple[list[T], torch.Tensor]]) -> list[T]:
    """The items (faces) whose network output was not finite: the batches' device flags, read in one copy."""
    if not flags:
        return []
    ok = torch.cat([f for _, f in flags]).cpu().tolist()
    return [job for job, good in zip((j for batch, _ in flags for j in batch), ok, strict=True) if not good]


def _buckets(shapes: list[tuple[int, int]], waste: float = 2.0) -> list[list[int]]:
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


def _pad_stack(images: list[torch.Tensor]) -> torch.Tensor:
    """``(C, h_i, w_i)`` tensors -> one ``(N, C, H, W)`` batch, each at the top left, zeros around it."""
    if all(im.shape == images[0].shape for im in images):
        return torch.stack(images)
    h, w = max(im.shape[1] for im in images), max(im.shape[2] for im in images)
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im
    return out


class RestoreStage:
    """``run(frames)``: frames with ``faces`` in, frames with restored pictures out, same order."""

    def __init__(
        self,
        restorer: Restorer,
        device: torch.device,
        *,
        upscaler: Upscaler | None = None,
        upscale_below: int = 0,
        margin: float = 0.5,
        parser: FaceParser | None = None,
        blend: float = 1.0,
        batch_size: int = 8,
        max_frames: int = 16,
        stats: RunStats | None = None,
        temporal: TemporalFusion | None = None,
    ) -> None:
        self.restorer = restorer
        self.temporal = temporal  # fusion of each track's restored texture with its history (or only its figures)
        self._landmarks: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        self.device = device
        self.upscaler = upscaler
        self.upscale_below = upscale_below if upscaler is not None else 0
        self.margin = margin
        self.parser = parser
        self.blend = blend
        needs = restorer.needs  # what the model asks of this stage: crop size, landmark template, batching
        if needs.template != "ffhq":
            raise ValueError(f"unknown landmark template {needs.template!r}")
        self.batch_size = batch_size if needs.batches else 1
        self.max_frames = max(1, max_frames)
        self.size = needs.size
        self.template = template(self.size)
        self.feather = feather_mask(self.size, device)
        self.io = Transfers(device)  # every host <-> device move of a picture, counted
        self.stats = stats if stats is not None else RunStats()  # face counts and time per stage
        self.timer = self.stats.add_time

    def run(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """One input's frames in order -> the same frames with their faces restored."""
        self._landmarks.clear()  # a new input: no track carries over
        if self.temporal is not None:
            self.temporal.clear()
        held: list[Frame] = []
        faces = 0
        for frame in frames:
            held.append(frame)
            faces += len(frame.faces)
            if faces >= self.batch_size or len(held) >= self.max_frames:
                yield from self._process(held)
                held, faces = [], 0
        if held:
            yield from self._process(held)

    # -- one group of frames ---------------------------------------------------------

    def _process(self, frames: list[Frame]) -> Iterator[Frame]:
        """One group: every picture with faces goes to the device once; its small faces are upscaled in
        batches, all faces are aligned in one batched warp, restored in batches and composited there; it
        comes back once. Pictures without faces never move. Non-finite network output is looked for
        once per group and network, not after every call."""
        t0 = time.perf_counter()
        pictures = {pos: self._picture(f) for pos, f in enumerate(frames) if f.faces}
        plans = []
        for pos in pictures:
            frame = frames[pos]
            with _failures_name(frame.index):
                plans += [plan for face in frame.faces if (plan := self._plan(pos, frame, face))]
        t1 = time.perf_counter()
        group = (frames[0].index, frames[-1].index)
        with _failures_name(*group):
            self._upscale(plans, pictures)
        t2 = time.perf_counter()
        self.timer("upscale faces", t2 - t1)
        with _failures_name(*group):
            jobs = self._align(plans, pictures)
        t3 = time.perf_counter()
        self.timer("align", t3 - t2 + t1 - t0)
        self._restore_all(jobs)
        t2 = time.perf_counter()
        self.timer("restorer", t2 - t3)
        self._jitter(jobs)
        if self.temporal is not None:
            self._fuse(frames[0].index, jobs)
            t2, fused = time.perf_counter(), t2
            self.timer("temporal", t2 - fused)
        done = [job for job in jobs if job.restored is not None]
        by_frame: dict[int, list[_Pasted]] = {job.frame_pos: [] for job in done}
        with _failures_name(*group):
            self._masks(done)
            for pasted in self._warp_back(done, pictures):
                by_frame[pasted.frame_pos].append(pasted)
        for pos, frame in enumerate(frames):
            if pos not in by_frame:
                yield frame if frame.on_device is None else replace(frame, on_device=None)
                continue
            with _failures_name(frame.index):
                self._paste(pictures[pos], by_frame[pos], view_for(frame.color_trc))
                image = self.io.download(pictures.pop(pos), frame.image.dtype)
            yield replace(frame, image=image, on_device=None)
        self.timer("mask + paste", time.perf_counter() - t2)

    def _picture(self, frame: Frame) -> torch.Tensor:
        """The frame's picture on the device, written in place by paste-back: the one uploaded with
        its detection batch where there is one, else uploaded now."""
        held = frame.on_device
        if held is not None and held.device.type == self.device.type and held.shape == frame.image.shape:
            return held  # type: ignore[no-any-return]
        return self.io.upload(frame.image)

    def _fuse(self, first_index: int, jobs: list[_Job]) -> None:
        """Temporal fusion of the group, in frame order; a filled-in or failed face starts its track afresh."""
        assert self.temporal is not None
        self.temporal.forget_before(first_index)
        group: list[_Job] = []
        for job in jobs:
            if job.restored is None or job.face.interpolated:
                self._fuse_now(group)
                group = []
                self.temporal.reset(job.face.track_id)
            else:
                group.append(job)
        self._fuse_now(group)
        figures, sums = self.stats.figures(), self.stats.flicker
        for pair in self.temporal.take_figures():
            values = (pair.input, pair.per_frame, pair.output)
            figures.add_flicker(pair.track_id, pair.frame_index, values)
            for key, v in zip(("input", "per_frame", "output", "pairs"), (*values, 1.0), strict=True):
                sums[key] = sums.get(key, 0.0) + v

    def _fuse_now(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        assert self.temporal is not None
        faces = [(j.face.track_id, j.frame_index, j.aligned, j.restored) for j in jobs if j.restored is not None]
        for job, fused in zip(jobs, self.temporal.fuse_group(faces), strict=True):  # type: ignore[arg-type]
            job.restored = fused

    def _jitter(self, jobs: list[_Job]) -> None:
        """Landmark jitter per track, raw and as aligned (the second difference of the five points, px)."""
        figures = self.stats.figures()
        for job in jobs:
            face = job.face
            if face.landmarks_raw is None:
                continue
            seen = self._landmarks.get(face.track_id, [])
            seen = [s for s in seen if s[0] >= job.frame_index - 2][-2:]
            seen.append((job.frame_index, face.landmarks_raw, face.landmarks))
            self._landmarks[face.track_id] = seen
            if len(seen) == 3 and seen[0][0] == job.frame_index - 2:
                raw, smoothed = (
                    float(np.linalg.norm(seen[2][k] - 2 * seen[1][k] + seen[0][k], axis=1).mean()) for k in (1, 2)
                )
                self.stats.jitter["raw"] = self.stats.jitter.get("raw", 0.0) + raw
                self.stats.jitter["smoothed"] = self.stats.jitter.get("smoothed", 0.0) + smoothed
                self.stats.jitter["pairs"] = self.stats.jitter.get("pairs", 0.0) + 1
                figures.add_jitter(face.track_id, raw, smoothed)

    def _masks(self, jobs: list[_Job]) -> None:
        """The paste-back mask of every restored face: ParseNet once per batch, else the soft square."""
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start : start + self.batch_size]
            if self.parser is None:
                masks = self.feather[0].expand(len(batch), -1, -1, -1)
            else:
                masks = self.parser.masks(torch.stack([j.restored for j in batch if j.restored is not None]))
            for job, mask in zip(batch, masks, strict=True):
                job.mask = mask

    def _plan(self, pos: int, frame: Frame, face: Face) -> _Plan | None:
        """Where the face's aligned crop comes from; None if it cannot be aligned or lies outside."""
        h, w = frame.image.shape[:2]
        try:
            to_aligned = estimate_similarity(face.landmarks, self.template)
            crop = from_up = None
            if face.size < self.upscale_below:
                cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
                half = face.size * (0.5 + self.margin)
                x0, y0 = max(int(np.floor(cx - half)), 0), max(int(np.floor(cy - half)), 0)
                x1, y1 = min(int(np.ceil(cx + half)), w), min(int(np.ceil(cy + half)), h)
                if x1 > x0 and y1 > y0:
                    crop = (x0, y0, x1, y1)
                    from_up = estimate_similarity(map_points(self._to_up(crop), face.landmarks), self.template)
        except ValueError as exc:
            log.debug("frame %d: face %d cannot be aligned: %s", frame.index, face.track_id, exc)
            self.stats.faces_failed += 1
            return None
        box = transformed_bounds(invert(to_aligned), self.size, self.size, w, h)
        if box[2] <= box[0] or box[3] <= box[1]:
            return None  # the face lies outside the picture
        return _Plan(pos, frame, face, to_aligned, box, crop, from_up)

    def _to_up(self, crop: tuple[int, int, int, int]) -> np.ndarray:
        """Frame pixel centre -> pixel centre of the upscaled crop: ``(x - x0 + 0.5) * s - 0.5``."""
        assert self.upscaler is not None
        s, (x0, y0) = self.upscaler.scale, crop[:2]
        return np.array([[s, 0.0, s * (0.5 - x0) - 0.5], [0.0, s, s * (0.5 - y0) - 0.5]])

    def _upscale(self, plans: list[_Plan], pictures: dict[int, torch.Tensor]) -> None:
        """Real-ESRGAN on the square crop around each small face (never the frame), crops of one size
        in one batch; a crop that comes out non-finite leaves its face to be aligned from the frame."""
        small = [p for p in plans if p.crop is not None]
        if not small:
            return
        assert self.upscaler is not None
        by_shape: dict[tuple[int, int], list[_Plan]] = {}
        for p in small:
            assert p.crop is not None
            by_shape.setdefault((p.crop[3] - p.crop[1], p.crop[2] - p.crop[0]), []).append(p)
        flags: list[tuple[list[_Plan], torch.Tensor]] = []
        for same in by_shape.values():
            for start in range(0, len(same), self.batch_size):
                batch = same[start : start + self.batch_size]
                crops = []
                for p in batch:
                    assert p.crop is not None
                    x0, y0, x1, y1 = p.crop
                    crops.append(_to_float(pictures[p.frame_pos][y0:y1, x0:x1], view_for(p.frame.color_trc)))
                up = self.upscaler.upscale(torch.stack(crops))
                for p, one in zip(batch, up, strict=True):
                    p.up = one
                flags.append((batch, finite(up)))
        bad = _not_finite(flags)  # one look per group, not one per call
        self.stats.faces_upscaled += len(small) - len(bad)
        for p in bad:
            log.warning(
                "frame %d: the upscaler gave NaN/inf; face %d is restored unupscaled", p.frame.index, p.face.track_id
            )
            p.crop, p.up = None, None

    def _align(self, plans: list[_Plan], pictures: dict[int, torch.Tensor]) -> list[_Job]:
        """Every face's aligned crop, from its frame region or its upscaled crop, in batched warps."""
        sources: list[torch.Tensor] = []
        matrices: list[np.ndarray] = []
        geometry: list[tuple[np.ndarray, tuple[int, int, int, int]]] = []
        for p in plans:
            if p.up is not None:
                assert p.crop is not None and p.from_up is not None
                source, matrix = p.up, p.from_up
                to_aligned, clip = compose(p.from_up, self._to_up(p.crop)), p.crop
            else:
                x0, y0, x1, y1 = p.box
                source = _to_float(pictures[p.frame_pos][y0:y1, x0:x1], view_for(p.frame.color_trc))
                matrix = compose(p.to_aligned, np.array([[1.0, 0, x0], [0, 1.0, y0]]))
                to_aligned = p.to_aligned
                h, w = p.frame.image.shape[:2]
                clip = (0, 0, w, h)
            sources.append(source)
            matrices.append(matrix)
            geometry.append((to_aligned, clip))
        aligned: dict[int, torch.Tensor] = {}
        border = torch.tensor(_BORDER, device=self.device).view(3, 1, 1)
        for bucket in _buckets([(s.shape[1], s.shape[2]) for s in sources]):
            # outside its own source every crop is the border grey: zeros of (source - border)
            stacked = _pad_stack([sources[i] - border for i in bucket])
            crops = warp_batch(stacked, [matrices[i] for i in bucket], self.size, self.size) + border
            aligned.update(zip(bucket, crops, strict=True))
        return [
            _Job(p.frame_pos, p.frame.index, p.face, to_aligned, aligned[i], clip)
            for i, (p, (to_aligned, clip)) in enumerate(zip(plans, geometry, strict=True))
        ]

    def _restore_all(self, jobs: list[_Job]) -> None:
        """Restore every face of the group in batches; faces that come out non-finite are retried
        in fp32, then kept as they were. The output is looked at once per round, not per batch."""
        todo = jobs
        for fp32 in (False, True):
            flags: list[tuple[list[_Job], torch.Tensor]] = []
            for start in range(0, len(todo), self.batch_size):
                self._restore(todo[start : start + self.batch_size], fp32, flags)
            bad = _not_finite(flags)
            for job in bad:
                job.restored = None
            todo = bad
            if not todo:
                break
        for job in todo:
            log.warning(
                "frame %d: face %d came out of the restorer as NaN/inf even in fp32; keeping the original",
                job.frame_index,
                job.face.track_id,
            )
        self.stats.faces_failed += len(todo)
        for job in jobs:
            if job.restored is not None:
                self.stats.faces_restored += 1
                self.stats.faces_filled += int(job.face.interpolated)

    def _restore(self, jobs: list[_Job], fp32: bool, flags: list[tuple[list[_Job], torch.Tensor]]) -> None:
        """Restore a batch; ``flags`` gets whether each face came out finite (on the device, unread).
        Out of memory: split it and retry. Any other error stops the run, naming the frame."""
        if not jobs:
            return
        try:
            out = self.restorer.restore(torch.stack([j.aligned for j in jobs]), fp32=fp32)
        except torch.OutOfMemoryError as exc:
            if len(jobs) == 1:
                raise PipelineError("restore", jobs[0].frame_index, f"out of memory on one face ({exc})") from exc
            log.debug("a batch of %d faces ran out of memory; splitting it", len(jobs))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(jobs) // 2
            self._restore(jobs[:half], fp32, flags)
            self._restore(jobs[half:], fp32, flags)
            return
        except NonFiniteOutput:  # a restorer that looks for itself
            flags.append((jobs, torch.zeros(len(jobs), dtype=torch.bool, device=self.device)))
            return
        except (VidrestoreError, KeyboardInterrupt):
            raise
        except Exception as exc:
            first, last = jobs[0].frame_index, jobs[-1].frame_index
            raise PipelineError.during("restore", exc, first, last, "restoring the faces of") from exc
        for job, restored in zip(jobs, out, strict=True):
            job.restored = restored
        flags.append((jobs, finite(out)))

    def _warp_back(self, jobs: list[_Job], pictures: dict[int, torch.Tensor]) -> list[_Pasted]:
        """Each restored face and its mask, warped back onto its own frame region, in batched warps."""
        regions, backs, kept = [], [], []
        for job in jobs:
            if self.blend * job.face.weight <= 0 or job.restored is None or job.mask is None:
                continue
            h, w = pictures[job.frame_pos].shape[:2]
            bx0, by0, bx1, by1 = transformed_bounds(invert(job.to_aligned), self.size, self.size, w, h)
            cx0, cy0, cx1, cy1 = job.clip
            x0, y0, x1, y1 = max(bx0, cx0), max(by0, cy0), min(bx1, cx1), min(by1, cy1)
            if x1 <= x0 or y1 <= y0:
                continue
            # region pixel (x, y) -> aligned pixel: to_aligned ∘ shift(x0, y0); the warp wants aligned -> region
            backs.append(invert(compose(job.to_aligned, np.array([[1.0, 0, x0], [0, 1.0, y0]]))))
            regions.append((x0, y0, x1, y1))
            kept.append(job)
        out = []
        for bucket in _buckets([(y1 - y0, x1 - x0) for x0, y0, x1, y1 in regions]):
            h = max(regions[i][3] - regions[i][1] for i in bucket)
            w = max(regions[i][2] - regions[i][0] for i in bucket)
            both = torch.stack([torch.cat([kept[i].restored, kept[i].mask]) for i in bucket])  # type: ignore[list-item]
            warped = warp_batch(both, [backs[i] for i in bucket], w, h)
            for i, one in zip(bucket, warped, strict=True):
                x0, y0, x1, y1 = regions[i]
                one = one[:, : y1 - y0, : x1 - x0]
                amount = self.blend * kept[i].face.weight
                out.append(_Pasted(kept[i].frame_pos, i, regions[i], one[:3], one[3:], amount))
        out.sort(key=lambda p: p.order)  # overlapping faces are composited in the order they came
        return out

    def _paste(self, picture: torch.Tensor, faces: list[_Pasted], view: SdrView | None) -> None:
        """Composite the warped faces into the device ``picture``, in place, each inside its own region."""
        full = _full(picture)
        for face in faces:
            x0, y0, x1, y1 = face.region
            face_px = face.pixels if view is None else view.to_signal(face.pixels)  # back from the SDR view
            alpha = face.alpha.clamp(0, 1) * face.amount
            region = picture[y0:y1, x0:x1].permute(2, 0, 1).float()
            mixed = alpha * (face_px * full) + (1 - alpha) * region
            picture[y0:y1, x0:x1] = mixed.round().clamp(0, full).permute(1, 2, 0).to(picture.dtype)
