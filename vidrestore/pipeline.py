"""Putting it together: reader thread -> face stages (on the device) -> writer thread.

Every link is a bounded queue. The face stages run on the calling thread as a
generator over frames (their look-ahead is part of that buffering). The first error
anywhere stops all threads, the temp output is removed, and the error surfaces as one
:class:`PipelineError` line with the stage and frame. Ctrl-C does the same and
re-raises KeyboardInterrupt for the CLI to exit 130.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidrestore.config import Config, config_to_dict
from vidrestore.control import END, RunControl, Stopped
from vidrestore.errors import InputError, OutputError, PipelineError, VidrestoreError
from vidrestore.io.atomic import AtomicTarget, check_target
from vidrestore.io.images import is_image, read_image, write_image
from vidrestore.io.reader import VideoReader
from vidrestore.io.writer import VideoWriter
from vidrestore.models.store import ModelStore
from vidrestore.records import Frame

__all__ = ["RunStats", "Summary", "dry_run", "expand_inputs", "models_for", "restore_file", "restore_paths"]

log = logging.getLogger(__name__)

FrameStages = Callable[[Iterator[Frame]], Iterator[Frame]]
"""The face stages as one generator transform: frames in order in, the same frames out."""


@dataclass
class RunStats:
    """Counts and timings, added to by every stage of one or more runs."""

    files: int = 0
    frames: int = 0
    faces_restored: int = 0
    faces_upscaled: int = 0
    faces_filled: int = 0
    faces_failed: int = 0
    frames_passed_through: int = 0
    skipped_packets: int = 0
    truncated: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def add_time(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds


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
        if s.stage_seconds:
            out.append("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in s.stage_seconds.items()))
        if s.skipped_packets:
            out.append(f"warning: {s.skipped_packets} damaged video packet(s) were skipped")
        out.extend(f"warning: {t}" for t in s.truncated)
        return out

    def report(self, config: Config, store: ModelStore) -> dict[str, Any]:
        import platform

        import av
        import torch

        from vidrestore import __version__

        used = {}
        for name in models_for(config):
            spec = store.registry[name]
            used[name] = {"sha256": spec.sha256, "path": str(store.path(name)), "url": spec.url}
        return {
            "outputs": [str(p) for p in self.outputs],
            "counts": {k: v for k, v in vars(self.stats).items() if k not in ("stage_seconds",)},
            "stage_seconds": self.stats.stage_seconds,
            "config": config_to_dict(config),
            "models": used,
            "versions": {"vidrestore": __version__, "python": platform.python_version(), "torch": torch.__version__,
                         "av": av.__version__, "ffmpeg": ".".join(map(str, av.library_versions["libavcodec"]))},
        }


def models_for(config: Config) -> list[str]:
    """Registry names of the models ``config`` uses from the cache (not local ``*.weights``)."""
    names = []
    if config.detector.model not in ("none", "centerface") and not config.detector.weights:
        names.append(config.detector.model)
    if config.detector.model != "none" and config.restorer.model != "none":
        if not config.restorer.weights:
            names.append(config.restorer.model)
        if config.restorer.parsing_mask and not config.restorer.parsing_weights:
            names.append("parsenet")
    wants_upscaler = config.output.scale > 1 or (config.detector.model != "none" and config.upscaler.below > 0)
    if config.upscaler.model != "none" and wants_upscaler and not config.upscaler.weights:
        names.append(config.upscaler.model)
    return names


def expand_inputs(inputs: Iterable[Path], output: Path) -> list[tuple[Path, Path]]:
    """Pair each input file with its output path (folders expand to their media files)."""
    from vidrestore.io.images import IMAGE_SUFFIXES

    pairs: list[tuple[Path, Path]] = []
    inputs = list(inputs)
    as_folder = len(inputs) > 1 or any(p.is_dir() for p in inputs)
    for src in inputs:
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and (p.suffix.lower() in IMAGE_SUFFIXES or p.suffix.lower() in VIDEO_SUFFIXES))
            if not files:
                raise InputError(f"{src}: the folder holds no video or image files")
            pairs.extend((f, output / f.relative_to(src.parent)) for f in files)
        elif as_folder:
            pairs.append((src, output / src.name))
        else:
            pairs.append((src, output))
    return pairs


VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts", ".mts", ".flv", ".wmv", ".mpg",
                            ".mpeg", ".3gp", ".ogv"})


def build_stages(config: Config, store: ModelStore, stats: RunStats) -> FrameStages:
    """The face stages for ``config`` (models loaded once here), or pass-through."""
    if config.detector.model == "none" and config.output.scale == 1:
        return _pass_through(stats)
    from vidrestore.stages import build_face_stages

    return build_face_stages(config, store, stats)


def _pass_through(stats: RunStats) -> FrameStages:
    def run(frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            stats.frames_passed_through += 1
            yield frame

    return run


def restore_paths(inputs: list[Path], output: Path, config: Config, store: ModelStore,
                  progress: bool = False) -> Summary:
    """Restore every input (files or folders) into ``output``; return what was done."""
    pairs = expand_inputs(inputs, output)
    if len(pairs) > 1 or any(p.is_dir() for p in inputs):
        if output.exists() and not output.is_dir():
            raise OutputError(f"{output}: several inputs need an output folder, and this is a file")
    for src, dst in pairs:
        if not src.exists():
            raise InputError(f"{src}: no such file")
    stats = RunStats()
    stages = build_stages(config, store, stats)
    start = time.perf_counter()
    outputs = []
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        check_target(dst, [s for s, _ in pairs], config.output.overwrite)
        restore_file(src, dst, config, stages, stats, progress=progress)
        outputs.append(dst)
    stats.wall_seconds = time.perf_counter() - start
    return Summary(stats, outputs)


def restore_file(src: Path, dst: Path, config: Config, stages: FrameStages, stats: RunStats,
                 progress: bool = False) -> None:
    """Restore one video or image ``src`` into ``dst`` (atomically)."""
    if is_image(src):
        _restore_image(src, dst, config, stages, stats)
    else:
        _restore_video(src, dst, config, stages, stats, progress)
    stats.files += 1


def _restore_image(src: Path, dst: Path, config: Config, stages: FrameStages, stats: RunStats) -> None:
    still = read_image(src)
    (frame,) = list(_guarded(stages(iter([still.frame])), "restore", stats))
    stats.frames += 1
    target = AtomicTarget(dst)
    with target as tmp:
        write_image(tmp, frame.image, still.alpha, config.output.image_quality, still.icc_profile,
                    fmt_suffix=dst.suffix)
        target.commit()


def _guarded(frames: Iterator[Frame], stage: str, stats: RunStats) -> Iterator[Frame]:
    """Re-raise a stage's unexpected error as PipelineError naming the stage and frame."""
    last = -1
    try:
        for frame in frames:
            last = frame.index
            yield frame
    except (VidrestoreError, KeyboardInterrupt, Stopped):
        raise
    except Exception as exc:
        where = getattr(exc, "frame_index", None)
        raise PipelineError(getattr(exc, "stage", stage), where if where is not None else last + 1,
                            f"{type(exc).__name__}: {exc}") from exc


def _restore_video(src: Path, dst: Path, config: Config, stages: FrameStages, stats: RunStats,
                   progress: bool) -> None:
    control = RunControl()
    reader = VideoReader(src, control, queue_size=config.pipeline.queue_size, threads=config.pipeline.decode_threads,
                         copy_audio=config.output.audio, copy_subtitles=config.output.subtitles)
    bar = _progress_bar(reader, src, progress)
    target = AtomicTarget(dst)
    with target as tmp:
        writer = VideoWriter(tmp, lambda: reader.info, reader.copy_streams, reader.packets, config.output, control,
                             queue_size=config.pipeline.queue_size, threads=config.pipeline.encode_threads)
        writer.start()
        reader.start()
        try:
            for frame in _guarded(stages(iter(reader)), "restore", stats):
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
            writer.join()
            reader.close()
            if bar is not None:
                bar.close()
        if control.error is not None:
            raise control.error
        stats.skipped_packets += reader.skipped_packets
        if reader.truncated_at is not None:
            stats.truncated.append(f"{src}: the input stopped at {reader.truncated_at:.2f} s (truncated?); "
                                   f"the output holds the {reader.decoded} frames before that")
        target.commit()


def _progress_bar(reader: VideoReader, src: Path, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    total = reader.info.frames or None
    return tqdm(total=total, unit="frame", desc=src.name, dynamic_ncols=True, leave=False)


def dry_run(inputs: list[Path], config: Config, store: ModelStore) -> list[str]:
    """Lines describing what a run would do: inputs, their streams, the models and whether present."""
    lines = []
    for src in inputs:
        if is_image(src):
            still = read_image(src)
            h, w = still.frame.image.shape[:2]
            lines.append(f"input {src}: image {w}x{h}" + (" with alpha" if still.alpha is not None else ""))
            continue
        reader = VideoReader(src, RunControl())
        try:
            i = reader.info
            lines.append(f"input {src}: video {i.codec} {i.width}x{i.height} {i.pix_fmt}, "
                         f"{float(i.rate or 0):.3f} fps, {i.duration_s or 0:.2f} s")
            lines.extend(f"  stream {s.index}: {s.kind} {s.codec}" + (f" [{s.language}]" if s.language else "")
                         for s in reader.stream_infos())
        finally:
            reader.close()
    for name in models_for(config):
        st = store.status(name)
        lines.append(f"model {name}: {'present' if st.present else 'missing'} at {st.path}")
    return lines
