"""Putting it together: reader thread -> face stages (on the device) -> writer thread.

Every link is a bounded queue. The face stages run on the calling thread as a
generator over frames (their look-ahead is part of that buffering). The first error
anywhere stops all threads, the temp output is removed, and the error surfaces as one
:class:`PipelineError` line with the stage and frame. Ctrl-C does the same and
re-raises KeyboardInterrupt for the CLI to exit 130.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidrestore.config import Config
from vidrestore.control import END, RunControl, Stopped
from vidrestore.errors import InputError, OutputError, PipelineError, VidrestoreError
from vidrestore.io.atomic import AtomicTarget, check_target
from vidrestore.io.encoders import plan_output
from vidrestore.io.images import is_image, read_image, write_image
from vidrestore.io.reader import VideoReader
from vidrestore.io.writer import VideoWriter
from vidrestore.models.store import ModelStore
from vidrestore.records import Frame
from vidrestore.segments import Resume
from vidrestore.stats import RunStats

__all__ = [
    "FrameStages",
    "Interrupted",
    "RunStats",
    "Summary",
    "expand_inputs",
    "guarded",
    "open_reader",
    "record_damage",
    "restore_file",
    "restore_paths",
    "writer_for",
]

log = logging.getLogger(__name__)

FrameStages = Callable[[Iterator[Frame]], Iterator[Frame]]
"""The face stages as one generator transform: frames in order in, the same frames out."""


@dataclass
class Summary:
    """What a ``restore`` run did, for the closing lines and ``--report``."""

    stats: RunStats
    outputs: list[Path]

    def lines(self) -> list[str]:
        s = self.stats
        fps = s.frames / s.wall_seconds if s.wall_seconds > 0 else 0.0
        out = [
            f"done: {s.files} file(s), {s.frames} frames in {s.wall_seconds:.1f} s ({fps:.1f} frames/s)",
            f"faces: {s.faces_restored} restored, {s.faces_upscaled} upscaled first, {s.faces_filled} filled in, "
            f"{s.faces_failed} failed (kept original); {s.frames_passed_through} frames had no face",
        ]
        t = s.temporal()
        if "flicker_output" in t:
            out.append(
                f"flicker: {t['flicker_input']:.2f} in, {t['flicker_per_frame']:.2f} restored per frame -> "
                f"{t['flicker_output']:.2f} out (grey levels)"
                + (
                    f"; landmark jitter {t['landmark_jitter_raw_px']:.2f} -> {t['landmark_jitter_smoothed_px']:.2f} px"
                    if "landmark_jitter_raw_px" in t
                    else ""
                )
            )
        if s.segments:
            resumed = sum(1 for g in s.segments if g["resumed"])
            retried = sum(g["attempts"] - 1 for g in s.segments if not g["resumed"])
            workers = len({g["worker"] for g in s.segments if not g["resumed"]})
            out.append(
                f"segments: {len(s.segments)} ({resumed} kept from an earlier run, {retried} retried) "
                f"on {workers} worker(s)"
            )
        if s.stage_seconds:
            out.append("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in s.stage_seconds.items()))
        if s.timestamps_repaired:
            out.append(
                f"warning: {s.timestamps_repaired} frame timestamp(s) were out of order or missing and were repaired"
                " (as FFmpeg's best-effort timestamps)"
            )
        if s.timestamp_resets:
            out.append(
                f"warning: the input's timestamps jumped back {s.timestamp_resets} time(s) (joined recordings?); "
                "later frames and packets were shifted to carry on in sync"
            )
        out.extend(f"warning: {t}" for t in s.damage_lines)
        return out


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run of several files: ``finished`` lists the outputs already complete."""

    def __init__(self, finished: list[Path]) -> None:
        super().__init__()
        self.finished = finished


def expand_inputs(inputs: Iterable[Path], output: Path) -> list[tuple[Path, Path]]:
    """Pair each input file with its output path (folders expand to their media files)."""
    from vidrestore.io.images import IMAGE_SUFFIXES

    pairs: list[tuple[Path, Path]] = []
    inputs = list(inputs)
    as_folder = len(inputs) > 1 or any(p.is_dir() for p in inputs)
    for src in inputs:
        if src.is_dir():
            files = sorted(
                p
                for p in src.rglob("*")
                if p.is_file()
                and not p.name.startswith(".")
                and (p.suffix.lower() in IMAGE_SUFFIXES or p.suffix.lower() in VIDEO_SUFFIXES)
            )
            if not files:
                raise InputError(f"{src}: the folder holds no video or image files")
            pairs.extend((f, output / f.relative_to(src.parent)) for f in files)
        elif as_folder:
            pairs.append((src, output / src.name))
        else:
            pairs.append((src, output))
    return pairs


VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts", ".mts", ".flv", ".wmv", ".mpg", ".mpeg", ".3gp", ".ogv"}
)


def build_stages(config: Config, store: ModelStore, stats: RunStats) -> FrameStages:
    """The face stages for ``config`` (models loaded once here), or pass-through."""
    if config.detector.model == "none" and config.output.scale == 1:
        return _pass_through(stats)
    from vidrestore.stages.assemble import build_face_stages

    return build_face_stages(config, store, stats)


def _pass_through(stats: RunStats) -> FrameStages:
    def run(frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            stats.frames_passed_through += 1
            yield frame

    return run


def restore_paths(
    inputs: list[Path],
    output: Path,
    config: Config,
    store: ModelStore,
    progress: bool = False,
    resume: Resume = "auto",
    ray: bool = False,
) -> Summary:
    """Restore every input (files or folders) into ``output``; return what was done.

    Videos longer than twice ``pipeline.segment_seconds`` run as segments (resumable: see
    :mod:`vidrestore.segments`); every input feeds one queue of tasks, run by
    ``pipeline.workers`` local workers, or by a Ray cluster with ``ray``."""
    from vidrestore.runner import Done, plan_work, run_local

    pairs = expand_inputs(inputs, output)
    if len(pairs) > 1 or any(p.is_dir() for p in inputs):
        if output.exists() and not output.is_dir():
            raise OutputError(f"{output}: several inputs need an output folder, and this is a file")
    sources = [s for s, _ in pairs]
    for src, dst in pairs:  # refuse before any work or model loading, not after the first file
        if not src.exists():
            raise InputError(f"{src}: no such file")
        if dst.parent.is_dir():
            check_target(dst, sources, config.output.overwrite)
        if not is_image(src):
            o = config.output
            plan_output(dst.suffix, o.codec, o.crf, o.preset)
    stats = RunStats()
    first: tuple[FrameStages, RunStats] | None = None
    if not ray:  # the models load (or fail) before any work starts
        worker_stats = RunStats()
        first = (build_stages(config, store, worker_stats), worker_stats)
    start = time.perf_counter()
    done = Done(config, stats)
    bar: Any = None
    try:
        _, tasks = plan_work(pairs, config, store, resume)
        frames = sum(t.frames for t in tasks)
        if progress and frames:
            from tqdm import tqdm

            bar = tqdm(total=frames, unit="frame", desc="segments", leave=False)
        update = bar.update if bar is not None else None
        if ray:
            from vidrestore.cluster import run_ray

            run_ray(tasks, config, store, done, update)
        else:
            run_local(
                tasks, config, lambda st: build_stages(config, store, st), done, update, first, file_progress=progress
            )
    except KeyboardInterrupt as exc:
        raise Interrupted(_in_order(done.outputs, pairs)) from exc
    finally:
        if bar is not None:
            bar.close()
    stats.wall_seconds = time.perf_counter() - start
    return Summary(stats, _in_order(done.outputs, pairs))


def _in_order(outputs: list[Path], pairs: list[tuple[Path, Path]]) -> list[Path]:
    finished = set(outputs)
    return [dst for _, dst in pairs if dst in finished]


def restore_file(
    src: Path,
    dst: Path,
    config: Config,
    stages: FrameStages,
    stats: RunStats,
    progress: bool = False,
    cancel: threading.Event | None = None,
) -> None:
    """Restore one video or image ``src`` into ``dst`` (atomically). ``cancel`` set: the run stops
    at the next frame with KeyboardInterrupt, nothing written."""
    stats.source = str(src)
    if is_image(src):
        _restore_image(src, dst, config, stages, stats)
    else:
        _restore_video(src, dst, config, stages, stats, progress, cancel)
    stats.files += 1


def _restore_image(src: Path, dst: Path, config: Config, stages: FrameStages, stats: RunStats) -> None:
    still = read_image(src)
    (frame,) = list(guarded(stages(iter([still.frame])), "restore", stats))
    stats.frames += 1
    target = AtomicTarget(dst, config.output.overwrite)
    with target as tmp:
        write_image(
            tmp, frame.image, still.alpha, config.output.image_quality, still.icc_profile, fmt_suffix=dst.suffix
        )
        target.commit()


def guarded(frames: Iterator[Frame], stage: str, stats: RunStats) -> Generator[Frame, None, None]:
    """Re-raise a stage's unexpected error as PipelineError naming the stage and frame."""
    last = -1
    try:
        for frame in frames:
            last = frame.index
            yield frame
    except (VidrestoreError, KeyboardInterrupt, Stopped):
        raise
    except Exception as exc:  # stages name their own frames (PipelineError); anything else: the next one
        raise PipelineError.during(stage, exc, last + 1) from exc


def open_reader(
    src: Path, config: Config, control: RunControl, copy_streams: bool = True, decode_video: bool = True
) -> VideoReader:
    return VideoReader(
        src,
        control,
        queue_size=config.pipeline.queue_size,
        threads=config.pipeline.decode_threads,
        copy_audio=copy_streams and config.output.audio,
        copy_subtitles=copy_streams and config.output.subtitles,
        strict=config.input.strict,
        decode_video=decode_video,
    )


def writer_for(
    reader: VideoReader, path: Path, config: Config, control: RunControl, template: Any = None
) -> VideoWriter:
    """The writer of ``path`` that copies ``reader``'s other streams beside the video (encoded from
    frames, or with ``template`` the packets of an encoded stream)."""
    return VideoWriter(
        path,
        lambda: reader.info,
        reader.copy_streams,
        reader.packets,
        config.output,
        control,
        queue_size=config.pipeline.queue_size,
        threads=config.pipeline.encode_threads,
        attachments=reader.attachments,
        template=template,
    )


def _restore_video(
    src: Path,
    dst: Path,
    config: Config,
    stages: FrameStages,
    stats: RunStats,
    progress: bool,
    cancel: threading.Event | None = None,
) -> None:
    control = RunControl()
    reader = open_reader(src, config, control)
    bar = _progress_bar(reader, src, progress)
    target = AtomicTarget(dst, config.output.overwrite)
    with target as tmp:
        writer = writer_for(reader, tmp, config, control)
        writer.start()
        reader.start()
        restored = guarded(stages(iter(reader)), "restore", stats)
        try:
            for frame in restored:
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt  # canceled: cleaned up as Ctrl-C is
                control.put(writer.frames, frame)
                stats.frames += 1
                if bar is not None:
                    bar.update(1)
            control.put(writer.frames, END)
        except Stopped:
            pass
        except BaseException as exc:
            control.fail(exc)
        finally:
            restored.close()  # stops the stages' own threads (overlapped detection) before the join below
            writer.join()
            reader.close()
            if bar is not None:
                bar.close()
        if control.error is not None:
            raise control.error
        record_damage(reader, stats)
        if not reader.timed_by_count:  # AVI: ordering its times is how it is read (see VideoReader)
            stats.timestamps_repaired += reader.repair.repaired
        stats.timestamp_resets += reader.repair.resets + sum(c.resets for c in reader.clocks.values())
        target.commit()


def record_damage(reader: VideoReader, stats: RunStats) -> None:
    """Add what ``reader`` found damaged, or possibly damaged (if anything), to the run's counts and report."""
    if reader.damage.worth_saying:
        stats.skipped_packets += reader.damage.packets_skipped
        stats.damaged.append(reader.damage.to_dict())
        stats.damage_lines.append(reader.damage.summary())


def _progress_bar(reader: VideoReader, src: Path, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    total = reader.info.frames or None
    return tqdm(total=total, unit="frame", desc=src.name, dynamic_ncols=True, leave=False)
