"""Restoration of a group of frames: small faces upscaled on their crop and every face aligned
(:mod:`.align`), restored in batches across frames (here, with an fp32 retry for faces that come out
non-finite), fused with each track's history (:mod:`.fuse`), and pasted back (:mod:`.paste`).

A picture with faces goes to the device once, is restored in place there and comes back once;
pictures without faces never move. Non-finite network output is looked for once per group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.profiler import record_function

from vidrestore.device import Transfers
from vidrestore.errors import PipelineError, VidrestoreError
from vidrestore.geometry import template
from vidrestore.records import Face, Frame, Planes
from vidrestore.stages.align import Job, Plan, align_faces, plan_face, unupscaled, upscale_small
from vidrestore.stages.fuse import TemporalFusion
from vidrestore.stages.networks import FaceParser, NonFiniteOutput, Restorer, Upscaler, finite
from vidrestore.stages.networks import not_finite as _not_finite
from vidrestore.stages.paste import feather_mask, masks, warp_back
from vidrestore.stages.picture import DevicePicture, Pasted, PlanesPicture, RgbPicture, on_device
from vidrestore.stats import RunStats
from vidrestore.transfer import view_for

__all__ = ["RestoreStage"]

log = logging.getLogger(__name__)


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

    @contextmanager
    def _span(self, name: str, first: int, last: int | None = None) -> Iterator[None]:
        """One step of a group: its host time added to the stage times, its work labelled for the
        profiler (``vidrestore:<name>``: bench.gpu's GPU time per stage), an error naming the frames."""
        t0 = time.perf_counter()
        with record_function(f"vidrestore:{name}"), _failures_name(first, last):
            yield
        self.timer(name, time.perf_counter() - t0)

    def _process(self, frames: list[Frame]) -> Iterator[Frame]:
        """One group: every picture with faces goes to the device once; its small faces are upscaled in
        batches, all faces are aligned in one batched warp, restored in batches and composited there; it
        comes back once. Pictures without faces never move. The host waits for the device twice per
        group: once for the restorer's flags, once for the finished pictures."""
        first, last = frames[0].index, frames[-1].index
        with self._span("align", first, last):
            pictures = {pos: self._picture(f) for pos, f in enumerate(frames) if f.faces}
            plans = []
            for pos in pictures:
                frame = frames[pos]
                with _failures_name(frame.index):
                    plans += [plan for face in frame.faces if (plan := self._plan(pos, frame, face))]
        up_flags: list[tuple[list[Plan], torch.Tensor]] = []
        with self._span("upscale faces", first, last):
            if self.upscaler is not None:
                up_flags = upscale_small(self.upscaler, plans, pictures, self.batch_size)
        with self._span("align", first, last):
            scale = self.upscaler.scale if self.upscaler is not None else 1
            jobs = align_faces(plans, pictures, self.size, scale)
            if self.temporal is not None:  # the fusion's flows start now, on their threads, while the restorer runs
                self.temporal.prepare([(j.face.track_id, j.frame_index, j.aligned) for j in jobs], self.io)
        with self._span("restorer", first, last):
            self._restore_all(jobs, up_flags, plans, pictures)
        self._jitter(jobs)
        if self.temporal is not None:
            with self._span("temporal", first, last):
                self._fuse(frames[0].index, jobs)
        with self._span("mask + paste", first, last):
            images = self._paste(frames, jobs, pictures)
        for pos, frame in enumerate(frames):
            image = images.get(pos)
            yield replace(frame, on_device=None) if image is None else replace(frame, image=image, on_device=None)

    def _paste(
        self, frames: list[Frame], jobs: list[Job], pictures: dict[int, DevicePicture]
    ) -> dict[int, np.ndarray | Planes]:
        """Masks, warps back and composites the group's faces; every picture with one comes back."""
        done = [job for job in jobs if job.restored is not None]
        by_frame: dict[int, list[Pasted]] = {job.frame_pos: [] for job in done}
        masks(done, self.parser, self.feather, self.batch_size)
        for pasted in warp_back(done, pictures, self.size, self.blend):
            by_frame[pasted.frame_pos].append(pasted)
        images = {}
        for pos, faces in by_frame.items():
            frame = frames[pos]
            with _failures_name(frame.index):
                pictures[pos].composite(faces, view_for(frame.color_trc))
                images[pos] = pictures[pos].download(self.io)  # started; complete after the wait below
        pictures.clear()
        if images:
            self.io.wait()  # the group's one look at the device's results
        if self.temporal is not None:
            self._flicker_figures()
        return images

    def _picture(self, frame: Frame) -> DevicePicture:
        """The frame's picture on the device, written in place by paste-back: the one uploaded with
        its detection batch where there is one, else uploaded now."""
        held = frame.on_device
        if isinstance(held, (RgbPicture, PlanesPicture)) and held.size == frame.size:
            if self.device.type == "cuda":  # uploaded on the detection stream, used and freed on this one
                for t in held.tensors():
                    t.record_stream(torch.cuda.current_stream(self.device))
            return held
        return on_device(frame.image, self.io)

    def _fuse(self, first_index: int, jobs: list[Job]) -> None:
        """Temporal fusion of the group, in frame order; a filled-in or failed face starts its track afresh."""
        assert self.temporal is not None
        self.temporal.forget_before(first_index)
        group: list[Job] = []
        for job in jobs:
            if job.restored is None or job.face.interpolated:
                self._fuse_now(group)
                group = []
                self.temporal.reset(job.face.track_id)
            else:
                group.append(job)
        self._fuse_now(group)

    def _flicker_figures(self) -> None:
        """The group's flicker figures into the run's stats: copied back with its pictures."""
        assert self.temporal is not None
        figures, sums = self.stats.figures(), self.stats.flicker
        for pair in self.temporal.take_figures():
            values = (pair.input, pair.per_frame, pair.output)
            figures.add_flicker(pair.track_id, pair.frame_index, values)
            for key, v in zip(("input", "per_frame", "output", "pairs"), (*values, 1.0), strict=True):
                sums[key] = sums.get(key, 0.0) + v

    def _fuse_now(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        assert self.temporal is not None
        faces = [(j.face.track_id, j.frame_index, j.aligned, j.restored) for j in jobs if j.restored is not None]
        for job, fused in zip(jobs, self.temporal.fuse_group(faces, self.io), strict=True):  # type: ignore[arg-type]
            job.restored = fused

    def _jitter(self, jobs: list[Job]) -> None:
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

    def _plan(self, pos: int, frame: Frame, face: Face) -> Plan | None:
        """Where the face's aligned crop comes from; None if it cannot be aligned or lies outside."""
        scale = self.upscaler.scale if self.upscaler is not None else 1
        try:
            return plan_face(pos, frame, face, self.template, self.size, self.upscale_below, self.margin, scale)
        except ValueError as exc:
            log.debug("frame %d: face %d cannot be aligned: %s", frame.index, face.track_id, exc)
            self.stats.faces_failed += 1
            return None

    def _restore_all(
        self,
        jobs: list[Job],
        up_flags: list[tuple[list[Plan], torch.Tensor]],
        plans: list[Plan],
        pictures: dict[int, DevicePicture],
    ) -> None:
        """Restore every face of the group in batches; faces that come out non-finite are retried
        in fp32, then kept as they were. The output is looked at once per round, not per batch, and
        the small-face upscaler's with the first round's: a face whose upscaled crop was NaN/inf is
        aligned from the frame and restored again (``jobs`` is updated in place; jobs[i] is plans[i]'s)."""
        todo = jobs
        for fp32 in (False, True):
            flags: list[tuple[list[Any], torch.Tensor]] = []
            for start in range(0, len(todo), self.batch_size):
                self._restore(todo[start : start + self.batch_size], fp32, flags)
            bad = _not_finite([*up_flags, *flags] if not fp32 else flags, self.io)
            if not fp32 and up_flags:
                bad = self._after_upscaler(bad, up_flags, jobs, plans, pictures)
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

    def _after_upscaler(
        self,
        bad: list[Any],
        up_flags: list[tuple[list[Plan], torch.Tensor]],
        jobs: list[Job],
        plans: list[Plan],
        pictures: dict[int, DevicePicture],
    ) -> list[Job]:
        """The first round's non-finite faces, with those whose upscaled crop was NaN/inf aligned from
        the frame and restored again in their place (a rare path: one more wait)."""
        failed = [x for x in bad if isinstance(x, Plan)]
        self.stats.faces_upscaled += sum(len(b) for b, _ in up_flags) - len(failed)
        if not failed:
            return bad
        where = {id(p): i for i, p in enumerate(plans)}
        redone = unupscaled(failed, pictures, self.size)
        for plan, job in zip(failed, redone, strict=True):
            jobs[where[id(plan)]] = job
        if self.temporal is not None:  # their prepared flows came from the crops they no longer have
            self.temporal.unprepare([(j.face.track_id, j.frame_index) for j in redone])
        flags: list[tuple[list[Any], torch.Tensor]] = []
        for start in range(0, len(redone), self.batch_size):
            self._restore(redone[start : start + self.batch_size], False, flags)
        alive = {id(j) for j in jobs}  # the replaced jobs' NaN crops made NaN faces too: not theirs to retry
        kept = [j for j in bad if isinstance(j, Job) and id(j) in alive]
        return [*kept, *_not_finite(flags, self.io)]

    def _restore(self, jobs: list[Job], fp32: bool, flags: list[tuple[list[Any], torch.Tensor]]) -> None:
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
