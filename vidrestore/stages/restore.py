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

import numpy as np
import torch

from vidrestore.device import Transfers
from vidrestore.errors import PipelineError, VidrestoreError
from vidrestore.geometry import compose, estimate_similarity, invert, template, transformed_bounds, warp
from vidrestore.records import Face, Frame
from vidrestore.stages.networks import FaceParser, NonFiniteOutput, Restorer, Upscaler
from vidrestore.stages.temporal import TemporalFusion
from vidrestore.stats import RunStats
from vidrestore.transfer import SdrView, view_for

__all__ = ["RestoreStage", "feather_mask"]

log = logging.getLogger(__name__)

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
def _failures_name(frame_index: int) -> Iterator[None]:
    """An unexpected error inside the block becomes a PipelineError naming this frame (exit 1)."""
    try:
        yield
    except (VidrestoreError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise PipelineError.during("restore", exc, frame_index) from exc


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
        """One group: every picture with faces goes to the device once; its faces are aligned,
        restored in batches and composited there; it comes back once. Pictures without faces never move."""
        t0, upscaled_before = time.perf_counter(), self.stats.stage_seconds.get("upscale faces", 0.0)
        pictures = {pos: self.io.upload(f.image) for pos, f in enumerate(frames) if f.faces}
        jobs = []
        for pos, picture in pictures.items():
            frame = frames[pos]
            with _failures_name(frame.index):
                jobs += [job for face in frame.faces if (job := self._prepare(pos, frame, face, picture))]
        t1 = time.perf_counter()
        upscaling = self.stats.stage_seconds.get("upscale faces", 0.0) - upscaled_before
        self.timer("align", t1 - t0 - upscaling)  # preparing the faces, less the upscaler's share
        for start in range(0, len(jobs), self.batch_size):
            self._restore(jobs[start : start + self.batch_size])
        t2 = time.perf_counter()
        self.timer("restorer", t2 - t1)
        self._jitter(jobs)
        if self.temporal is not None:
            self._fuse(frames[0].index, jobs)
            t2, fused = time.perf_counter(), t2
            self.timer("temporal", t2 - fused)
        done = [job for job in jobs if job.restored is not None]
        self._masks(done)
        by_frame: dict[int, list[_Job]] = {}
        for job in done:
            by_frame.setdefault(job.frame_pos, []).append(job)
        for pos, frame in enumerate(frames):
            if pos not in by_frame:
                yield frame
                continue
            with _failures_name(frame.index):
                self._paste(pictures[pos], by_frame[pos], view_for(frame.color_trc))
                image = self.io.download(pictures.pop(pos), frame.image.dtype)
            yield replace(frame, image=image)
        self.timer("mask + paste", time.perf_counter() - t2)

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

    def _prepare(self, pos: int, frame: Frame, face: Face, picture: torch.Tensor) -> _Job | None:
        h, w = frame.image.shape[:2]
        try:
            if face.size < self.upscale_below and self.upscaler is not None:
                try:
                    return self._prepare_upscaled(pos, frame, face, picture)
                except NonFiniteOutput:
                    log.warning(
                        "frame %d: the upscaler gave NaN/inf; face %d is restored unupscaled",
                        frame.index,
                        face.track_id,
                    )
            to_aligned = estimate_similarity(face.landmarks, self.template)
        except ValueError as exc:
            log.debug("frame %d: face %d cannot be aligned: %s", frame.index, face.track_id, exc)
            self.stats.faces_failed += 1
            return None
        x0, y0, x1, y1 = transformed_bounds(invert(to_aligned), self.size, self.size, w, h)
        if x1 <= x0 or y1 <= y0:
            return None  # the face lies outside the picture
        region = _to_float(picture[y0:y1, x0:x1], view_for(frame.color_trc))
        shift = np.array([[1.0, 0, x0], [0, 1.0, y0]])
        aligned = warp(region, compose(to_aligned, shift), self.size, self.size, border=_BORDER)
        return _Job(pos, frame.index, face, to_aligned, aligned, (0, 0, w, h))

    def _prepare_upscaled(self, pos: int, frame: Frame, face: Face, picture: torch.Tensor) -> _Job:
        """Real-ESRGAN on a square crop around the face (never the frame), then align from it."""
        assert self.upscaler is not None
        h, w = frame.image.shape[:2]
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        half = face.size * (0.5 + self.margin)
        x0, y0 = max(int(np.floor(cx - half)), 0), max(int(np.floor(cy - half)), 0)
        x1, y1 = min(int(np.ceil(cx + half)), w), min(int(np.ceil(cy + half)), h)
        crop = _to_float(picture[y0:y1, x0:x1], view_for(frame.color_trc))[None]
        t0 = time.perf_counter()
        up = self.upscaler.upscale(crop)[0]
        self.timer("upscale faces", time.perf_counter() - t0)
        s = self.upscaler.scale
        # frame pixel centre x -> upscaled-crop pixel centre (x - x0 + 0.5) * s - 0.5
        to_up = np.array([[s, 0.0, s * (0.5 - x0) - 0.5], [0.0, s, s * (0.5 - y0) - 0.5]])
        from_up = estimate_similarity(face.landmarks @ to_up[:, :2].T + to_up[:, 2], self.template)
        aligned = warp(up, from_up, self.size, self.size, border=_BORDER)
        self.stats.faces_upscaled += 1
        return _Job(pos, frame.index, face, compose(from_up, to_up), aligned, (x0, y0, x1, y1))

    def _restore(self, jobs: list[_Job], fp32: bool = False) -> None:
        """Restore a batch. Out of memory: split it and retry. Non-finite output: retry once in fp32,
        then keep those faces as they were. Any other error stops the run, naming the frame."""
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
            self._restore(jobs[:half], fp32)
            self._restore(jobs[half:], fp32)
            return
        except NonFiniteOutput:
            if not fp32:
                self._restore(jobs, fp32=True)
                return
            for job in jobs:
                log.warning(
                    "frame %d: face %d came out of the restorer as NaN/inf even in fp32; keeping the original",
                    job.frame_index,
                    job.face.track_id,
                )
            self.stats.faces_failed += len(jobs)
            return
        except (VidrestoreError, KeyboardInterrupt):
            raise
        except Exception as exc:
            first, last = jobs[0].frame_index, jobs[-1].frame_index
            raise PipelineError.during("restore", exc, first, last, "restoring the faces of") from exc
        for job, restored in zip(jobs, out, strict=True):
            job.restored = restored
            self.stats.faces_restored += 1
            self.stats.faces_filled += int(job.face.interpolated)

    def _paste(self, picture: torch.Tensor, jobs: list[_Job], view: SdrView | None) -> None:
        """Composite the restored faces into the device ``picture``, in place, each inside its own region."""
        h, w = picture.shape[:2]
        full = _full(picture)
        for job in jobs:
            amount = self.blend * job.face.weight
            if amount <= 0 or job.restored is None or job.mask is None:
                continue
            bx0, by0, bx1, by1 = transformed_bounds(invert(job.to_aligned), self.size, self.size, w, h)
            cx0, cy0, cx1, cy1 = job.clip
            x0, y0, x1, y1 = max(bx0, cx0), max(by0, cy0), min(bx1, cx1), min(by1, cy1)
            if x1 <= x0 or y1 <= y0:
                continue
            # region pixel (x, y) -> aligned pixel: to_aligned ∘ shift(x0, y0); warp wants aligned -> region
            back = invert(compose(job.to_aligned, np.array([[1.0, 0, x0], [0, 1.0, y0]])))
            face_px = warp(job.restored, back, x1 - x0, y1 - y0)
            if view is not None:  # restored in the SDR view: back to the picture's own transfer
                face_px = view.to_signal(face_px)
            alpha = warp(job.mask, back, x1 - x0, y1 - y0).clamp(0, 1) * amount
            region = picture[y0:y1, x0:x1].permute(2, 0, 1).float()
            mixed = alpha * (face_px * full) + (1 - alpha) * region
            picture[y0:y1, x0:x1] = mixed.round().clamp(0, full).permute(1, 2, 0).to(picture.dtype)
