"""The work of one ``restore`` command as a queue of tasks: whole files, and the segments of long
videos, planned here; :func:`run_task` is the one way a task runs, on this machine's workers
(:mod:`.local`) and on a cluster's actors (:mod:`.ray`) alike. A video whose last segment finishes
is joined at once, and its work folder removed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidrestore.config import Config, load_config
from vidrestore.io.atomic import check_target
from vidrestore.io.deinterlace import FieldSettings, whole_file_reason
from vidrestore.io.images import is_image
from vidrestore.models.registry import DEFAULT_REGISTRY
from vidrestore.models.store import ModelStore
from vidrestore.models.usage import model_identity
from vidrestore.run.file import build_stages, restore_file
from vidrestore.run.segments.join import join_segments
from vidrestore.run.segments.manifest import Manifest, Resume, open_manifest, remove_work
from vidrestore.run.segments.plan import Plan, Segment, plan_segments, warm_ahead
from vidrestore.run.segments.render import SegmentResult, render_segment
from vidrestore.stats import RunStats

__all__ = ["Done", "FileWork", "SegmentActor", "Task", "TaskSpec", "plan_work", "run_task"]

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


@dataclass(frozen=True)
class TaskSpec:
    """What running a task needs, as plain data a remote worker can be sent (never frames): the
    input and output, and for a segment, the segment and its work folder (where ``frames.json``
    holds every frame's time)."""

    src: Path
    dst: Path
    segment: Segment | None = None
    folder: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"src": str(self.src), "dst": str(self.dst)}
        if self.segment is not None and self.folder is not None:
            out["segment"] = self.segment.__dict__
            out["folder"] = str(self.folder)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        seg = Segment(**d["segment"]) if "segment" in d else None
        return cls(Path(d["src"]), Path(d["dst"]), seg, Path(d["folder"]) if "folder" in d else None)

    def times(self) -> list[int]:
        """Every frame's time, as the driver planned it (a segment's only)."""
        assert self.folder is not None
        return json.loads((self.folder / "frames.json").read_text())  # type: ignore[no-any-return]


@dataclass
class Task:
    work: FileWork
    segment: Segment | None = None  # None: the whole file

    @property
    def frames(self) -> int:
        return self.segment.frames if self.segment is not None else 0

    def spec(self) -> TaskSpec:
        """The task as data; a segmented input's whole-file task (only the join is left) keeps its folder."""
        w = self.work
        return TaskSpec(w.src, w.dst, self.segment, w.manifest.folder if w.manifest is not None else None)


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
        warm, _ = warm_ahead(config)
        plan = plan_segments(src, seconds, warm)
        if plan.whole is None:
            plan.whole = whole_file_reason(src, FieldSettings.of(config, dst))
        work.plan = plan
        if plan.whole is not None:
            if plan.frames and plan.whole.startswith(("video", "damaged", "a demuxing", "telecined", "mixed")):
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


def run_task(
    spec: TaskSpec,
    config: Config,
    stages: Callable[..., Any],
    stats: RunStats,
    progress: Callable[[int], None] | None = None,
    file_progress: bool = False,
    cancel: threading.Event | None = None,
    times: list[int] | None = None,
) -> SegmentResult | None:
    """Run one task with these stages; a segment gives its result, a whole file None. ``times``:
    the input's frame times, where the caller holds them (else read from the work folder)."""
    if spec.segment is None:
        if spec.folder is None:
            spec.dst.parent.mkdir(parents=True, exist_ok=True)
            check_target(spec.dst, [spec.src], config.output.overwrite)
            restore_file(spec.src, spec.dst, config, stages, stats, progress=file_progress)
        return None  # a segmented input's last task: only its join is left, done as its segments finish
    assert spec.folder is not None
    dst = spec.folder / f"seg-{spec.segment.index:05d}{spec.dst.suffix}"
    times = times if times is not None else spec.times()
    return render_segment(spec.src, spec.segment, times, dst, config, stages, stats, progress, cancel)


def finish(work: FileWork, config: Config, stats: RunStats) -> None:
    """Join a segmented input's finished segments into its output; remove the work folder."""
    assert work.manifest is not None and work.plan is not None
    files = [work.manifest.folder / e["file"] for e in work.manifest.segments]
    stats.source = str(work.src)
    t0 = time.perf_counter()
    written = join_segments(work.src, files, work.dst, config, stats)
    stats.add_time("join", time.perf_counter() - t0)
    planned = sum(int(e.get("pictures", e.get("frames", 0))) for e in work.manifest.segments)
    if written != planned:
        log.warning("%s: %d frames joined where the segments have %d", work.dst, written, planned)
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


class SegmentActor:
    """One worker in a process of its own (a Ray actor, or a spawned local worker process): the
    models loaded once from plain settings, then one task after another."""

    def __init__(self, config: dict[str, Any], weights_dir: str, offline: bool) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            json.dump(config, fh)  # JSON is YAML: the config goes through the one loader
        self.config = load_config(fh.name)
        Path(fh.name).unlink()
        self.store = ModelStore(Path(weights_dir), DEFAULT_REGISTRY, fetch_missing=not offline)
        self.stats = RunStats()
        self.stages = build_stages(self.config, self.store, self.stats)
        self._times: dict[str, list[int]] = {}

    def pid(self) -> int:
        return os.getpid()

    def run(self, task: dict[str, Any]) -> tuple[SegmentResult | None, RunStats]:
        """One task (:meth:`TaskSpec.to_dict`) through :func:`run_task`, as a local worker runs it;
        returns its result and counts."""
        spec = TaskSpec.from_dict(task)
        times = None
        if spec.segment is not None and spec.folder is not None:
            key = str(spec.folder)
            if key not in self._times:  # each frame's time, written by the driver beside the segments
                self._times = {key: spec.times()}
            times = self._times[key]
        result = run_task(spec, self.config, self.stages, self.stats, times=times)
        if result is not None:
            result.stats = RunStats()  # the counts travel once, beside the result
        return result, self.stats.take()
