"""The work of one ``restore`` command as a queue of tasks: whole files, and the segments of long
videos (:mod:`vidrestore.segments`), run by ``pipeline.workers`` local workers or by a Ray
cluster's actors (:mod:`vidrestore.cluster`). Every input feeds the same queue; a video whose last
segment finishes is joined at once, and its work folder removed.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidrestore.config import Config
from vidrestore.control import Stopped
from vidrestore.io.images import is_image
from vidrestore.models.store import ModelStore
from vidrestore.segments import (
    Manifest,
    Plan,
    Resume,
    Segment,
    SegmentResult,
    _warm_ahead,
    join_segments,
    open_manifest,
    plan_segments,
    remove_work,
    restore_segment,
)
from vidrestore.stats import RunStats

__all__ = ["FileWork", "Task", "plan_work", "run_local", "run_task"]

log = logging.getLogger(__name__)

TRACKS_PER_SEGMENT = 1_000_000
"""Segment k's track ids are reported from k x this (each segment's tracker numbers from 0)."""


@dataclass
class FileWork:
    """One input: run whole (``plan`` None or not cut), or as segments into a work folder."""

    src: Path
    dst: Path
    plan: Plan | None = None
    manifest: Manifest | None = None
    left: set[int] = field(default_factory=set)  # segments still to do
    attempts: dict[int, int] = field(default_factory=dict)
    joined: bool = False

    @property
    def segmented(self) -> bool:
        return self.manifest is not None


@dataclass
class Task:
    work: FileWork
    segment: Segment | None = None  # None: the whole file

    @property
    def frames(self) -> int:
        return self.segment.frames if self.segment is not None else 0

    def describe(self) -> dict[str, Any]:
        """What a remote worker needs (paths and numbers only: never frames)."""
        w = self.work
        out: dict[str, Any] = {"src": str(w.src), "dst": str(w.dst)}
        if self.segment is not None and w.manifest is not None:
            out["segment"] = self.segment.__dict__
            out["folder"] = str(w.manifest.folder)
        return out


def model_identity(config: Config, store: ModelStore) -> dict[str, str | None]:
    """The checksum of every model the run uses (a local ``*.weights`` file: its size and mtime)."""
    from vidrestore.report import models_for

    out: dict[str, str | None] = {name: store.registry[name].sha256 for name in models_for(config)}
    for key, value in (
        ("detector.weights", config.detector.weights),
        ("restorer.weights", config.restorer.weights),
        ("restorer.parsing_weights", config.restorer.parsing_weights),
        ("upscaler.weights", config.upscaler.weights),
    ):
        if value:
            st = Path(value).stat()
            out[key] = f"{Path(value).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return out


def plan_work(
    pairs: list[tuple[Path, Path]], config: Config, store: ModelStore, resume: Resume
) -> tuple[list[FileWork], list[Task]]:
    """Each input's work and the queue of tasks (finished segments of a resumed run left out)."""
    works, tasks = [], []
    seconds = config.pipeline.segment_seconds
    models: dict[str, str | None] | None = None
    for src, dst in pairs:
        work = FileWork(src, dst)
        works.append(work)
        if is_image(src) or seconds <= 0:
            tasks.append(Task(work))
            continue
        warm, _ = _warm_ahead(config)
        plan = plan_segments(src, seconds, warm)
        work.plan = plan
        if plan.whole is not None:
            if plan.frames and plan.whole.startswith(("video", "damaged", "a demuxing")):
                log.info("%s runs as one piece: it has %s", src, plan.whole)
            tasks.append(Task(work))
            continue
        models = models if models is not None else model_identity(config, store)
        dst.parent.mkdir(parents=True, exist_ok=True)
        work.manifest, done = open_manifest(src, dst, plan, config, models, resume)
        (work.manifest.folder / "frames.json").write_text(json.dumps(plan.times))
        if done:
            log.warning("%s: %d of %d segments are kept from an earlier run", src, len(done), len(plan.segments))
        work.left = {s.index for s in plan.segments if s.index not in done}
        tasks.extend(Task(work, s) for s in plan.segments if s.index in work.left)
        for index in done:
            entry = work.manifest.segments[index]
            entry["resumed"] = True
        if not work.left:
            tasks.append(Task(work))  # everything was done: only the join is left
    return works, tasks


def segment_file(work: FileWork, seg: Segment) -> Path:
    assert work.manifest is not None
    return work.manifest.folder / f"seg-{seg.index:05d}{work.dst.suffix}"


def run_task(
    task: Task,
    config: Config,
    stages: Callable[..., Any],
    stats: RunStats,
    progress: Callable[[int], None] | None = None,
    file_progress: bool = False,
    cancel: threading.Event | None = None,
) -> SegmentResult | None:
    """Run one task with these stages; a segment gives its result, a whole file None."""
    from vidrestore.io.atomic import check_target
    from vidrestore.pipeline import restore_file

    w = task.work
    if task.segment is None:
        if not w.segmented:
            w.dst.parent.mkdir(parents=True, exist_ok=True)
            check_target(w.dst, [w.src], config.output.overwrite)
            restore_file(w.src, w.dst, config, stages, stats, progress=file_progress)
        return None
    assert w.plan is not None
    dst = segment_file(w, task.segment)
    return restore_segment(w.src, task.segment, w.plan.times, dst, config, stages, stats, progress, cancel)


def finish(work: FileWork, config: Config, stats: RunStats) -> None:
    """Join a segmented input's finished segments into its output; remove the work folder."""
    assert work.manifest is not None and work.plan is not None
    files = [work.manifest.folder / e["file"] for e in work.manifest.segments]
    stats.source = str(work.src)
    t0 = time.perf_counter()
    written = join_segments(work.src, files, work.dst, config, stats)
    stats.add_time("join", time.perf_counter() - t0)
    if written != work.plan.frames:
        log.warning("%s: %d frames joined where the plan has %d", work.dst, written, work.plan.frames)
    stats.files += 1
    for e in work.manifest.segments:
        stats.segments.append(
            {
                "input": str(work.src),
                "segment": e["index"],
                "first_frame": e["first_frame"],
                "frames": e["frames"],
                "seconds": e.get("seconds"),
                "worker": e.get("worker"),
                "attempts": e.get("attempts", 1),
                "resumed": bool(e.get("resumed", False)),
            }
        )
    remove_work(work.manifest.folder)
    work.joined = True


class Done:
    """Records finished tasks: the manifest, the merged counts, and the join when a file is complete."""

    def __init__(self, config: Config, stats: RunStats) -> None:
        self.config = config
        self.stats = stats
        self.lock = threading.Lock()
        self.outputs: list[Path] = []

    def __call__(self, task: Task, result: SegmentResult | None, stats: RunStats, attempts: int = 1) -> None:
        w = task.work
        with self.lock:
            offset = TRACKS_PER_SEGMENT * task.segment.index if task.segment is not None else 0
            self.stats.merge(stats, track_offset=offset)
            if result is None and not w.segmented:
                self.outputs.append(w.dst)
                return
            if result is not None:
                assert w.manifest is not None
                w.manifest.record(result, attempts)
                w.left.discard(result.index)
            join = not w.left and not w.joined
            if join:
                w.joined = True  # claimed: one join per file
        if join:
            joined = RunStats()
            finish(w, self.config, joined)
            with self.lock:
                self.stats.merge(joined)
                self.outputs.append(w.dst)


def run_local(
    tasks: list[Task],
    config: Config,
    make_stages: Callable[[RunStats], Callable[..., Any]],
    done: Done,
    progress: Callable[[int], None] | None,
    first_stages: tuple[Callable[..., Any], RunStats] | None = None,
    file_progress: bool = False,
) -> None:
    """Run the tasks on ``pipeline.workers`` workers (threads; each builds its own stages, except
    the first, which may be given). With one worker, everything runs on this thread."""
    workers = max(1, min(config.pipeline.workers, len(tasks)))
    pending: queue.Queue[Task] = queue.Queue()
    for task in tasks:
        pending.put(task)
    abort = threading.Event()
    errors: list[BaseException] = []

    def work(stages: Callable[..., Any] | None, stats: RunStats | None) -> None:
        try:
            if stages is None or stats is None:
                stats = RunStats()
                stages = make_stages(stats)
            while not abort.is_set():
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                result = run_task(job, config, stages, stats, progress, file_progress and workers == 1, abort)
                done(job, result, stats.take())
        except BaseException as exc:
            errors.append(exc)
            abort.set()

    given = first_stages if first_stages is not None else (None, None)
    if workers == 1:
        work(*given)
    else:
        threads = [
            threading.Thread(
                target=work, args=given if k == 0 else (None, None), name=f"vidrestore-worker-{k}", daemon=True
            )
            for k in range(workers)
        ]
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.2)
        except KeyboardInterrupt:
            abort.set()
            for thread in threads:
                thread.join()
            raise
    first = next((e for e in errors if not isinstance(e, Stopped)), None)  # Stopped: a worker told to stop
    if first is not None:
        raise first
