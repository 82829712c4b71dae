"""One ``restore`` command: inputs (files and folders) -> tasks -> an executor -> a summary.

Every refusal that needs no model (an input that is not there, an output that would overwrite an
input or another file, a codec the container cannot hold) happens before any model loads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vidrestore.config import Config
from vidrestore.errors import InputError, OutputError
from vidrestore.io.atomic import check_target
from vidrestore.io.encoders import plan_output
from vidrestore.io.images import ANIMATED_SUFFIXES, IMAGE_SUFFIXES, frame_count, is_image
from vidrestore.models.store import ModelStore
from vidrestore.models.usage import check_present
from vidrestore.progress import Progress
from vidrestore.report import Summary
from vidrestore.run.file import FrameStages, build_stages
from vidrestore.run.local import run_local, run_processes, worker_count
from vidrestore.run.segments.manifest import Resume
from vidrestore.run.tasks import Done, plan_work
from vidrestore.stats import RunStats

__all__ = ["VIDEO_SUFFIXES", "Interrupted", "expand_inputs", "restore_paths"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run of several files: ``finished`` lists the outputs already complete."""

    def __init__(self, finished: list[Path]) -> None:
        super().__init__()
        self.finished = finished


def expand_inputs(inputs: Iterable[Path], output: Path, into_folder: bool = False) -> list[tuple[Path, Path]]:
    """Pair each input file with its output path (folders expand to their media files; several
    inputs, or ``into_folder``, put each output in the folder ``output`` under its input's name)."""
    pairs: list[tuple[Path, Path]] = []
    inputs = list(inputs)
    as_folder = into_folder or len(inputs) > 1 or any(p.is_dir() for p in inputs)
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
    ".mp4 .mkv .webm .mov .avi .m4v .ts .mts .m2ts .flv .wmv .asf .mpg .mpeg .vob .dv .3gp .ogv".split()
)


def restore_paths(
    inputs: list[Path],
    output: Path | str,
    config: Config,
    store: ModelStore,
    progress: bool = False,
    resume: Resume = "auto",
    ray: bool = False,
) -> Summary:
    """Restore every input (files or folders) into ``output`` (a folder when it exists as one, or
    when the string ends in ``/``; several inputs need one); return what was done.

        Videos longer than twice ``pipeline.segment_seconds`` run as segments (resumable: see
        :mod:`vidrestore.run.segments`); every input feeds one queue of tasks, run by
        ``pipeline.workers`` local workers, or by a Ray cluster with ``ray``."""
    pairs, created = _plan_outputs(inputs, output, config)
    check_present(config, store)  # offline: every missing model named at once, before any loads
    stats = RunStats()
    first: tuple[FrameStages, RunStats] | None = None
    processes = config.pipeline.workers != 1 and config.pipeline.worker_kind == "processes"
    if not ray and not processes:  # the models load (or fail) before any work starts (workers do their own)
        worker_stats = RunStats()
        first = (build_stages(config, store, worker_stats), worker_stats)
    start = time.perf_counter()
    done = Done(config, stats)
    bar: Any = None
    try:
        _, tasks = plan_work(pairs, config, store, resume)
        workers, why = worker_count(config, len(tasks))
        if why:
            stats.notes.append(why)
        frames = sum(t.frames for t in tasks)
        if progress and frames:
            bar = Progress("segments", frames)
        update = bar.update if bar is not None else None
        if ray:
            from vidrestore.run.ray import run_ray  # the ray extra, only when asked for

            run_ray(tasks, config, store, done, update)
        elif processes and workers > 1:
            run_processes(tasks, config, store, done, update, workers)
        else:
            make = lambda st: build_stages(config, store, st)  # noqa: E731
            run_local(tasks, config, make, done, update, first, file_progress=progress, workers=workers)
    except KeyboardInterrupt as exc:
        raise Interrupted(_in_order(done.outputs, pairs)) from exc
    finally:
        if bar is not None:
            bar.close()
    stats.wall_seconds = time.perf_counter() - start
    return Summary(stats, _in_order(done.outputs, pairs), created)


def _plan_outputs(inputs: list[Path], output: Path | str, config: Config) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Each input's output, every refusal that needs no model made now (before any model loads, and
    naming the paths as the user typed them), and the output folders that had to be made."""
    typed = str(output)
    out = Path(output)
    meant_folder = typed.endswith(("/", os.sep))
    several, folders = len(inputs) > 1, any(p.is_dir() for p in inputs)
    if (several or folders or meant_folder) and out.exists() and not out.is_dir():
        raise OutputError(f"{typed}: several inputs need an output folder, and this is a file")
    if several and not out.is_dir() and not meant_folder:  # -o x.mp4 once quietly made a folder x.mp4/
        raise OutputError(
            f"{typed}: several inputs need an output folder: an existing one, or a path ending in '/' to make one"
        )
    for src in inputs:
        if not src.exists():
            raise InputError(f"{src}: no such file")
    pairs = expand_inputs(inputs, out, into_folder=meant_folder or out.is_dir())
    sources = [s for s, _ in pairs]
    for src, dst in pairs:  # refuse before any work or model loading, not after the first file
        if is_image(src):
            if dst.suffix.lower() not in IMAGE_SUFFIXES:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES))
                raise OutputError(f"{dst}: {src.name} is an image, so its output must be one too ({kinds})")
            if dst.suffix.lower() not in ANIMATED_SUFFIXES and (count := frame_count(src)) > 1:
                raise OutputError(
                    f"{dst}: {src.name} is animated ({count} frames), and a {dst.suffix} file holds one picture: "
                    "write .gif, .webp or .png"
                )
        else:
            if dst.suffix.lower() in IMAGE_SUFFIXES:
                raise OutputError(f"{dst}: {src.name} is a video, so its output must be one too (.mp4, .mkv, ...)")
            o = config.output
            plan_output(dst.suffix, o.codec, o.crf, o.preset)
        if dst.parent.is_dir():
            check_target(dst, sources, config.output.overwrite)
    created = []
    for parent in sorted({dst.parent for _, dst in pairs}):
        missing = [p for p in (parent, *parent.parents) if not p.exists()]
        if missing:
            parent.mkdir(parents=True, exist_ok=True)
            created.append(missing[-1])  # the outermost folder that was made
    return pairs, sorted(set(created))


def _in_order(outputs: list[Path], pairs: list[tuple[Path, Path]]) -> list[Path]:
    finished = set(outputs)
    return [dst for _, dst in pairs if dst in finished]
