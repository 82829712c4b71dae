"""Putting it together: reader thread -> face stages (on the device) -> writer thread.

Every link is a bounded queue. The face stages run on the calling thread as a
generator over frames (their look-ahead is part of that buffering). The first error
anywhere stops all threads, the temp output is removed, and the error surfaces as one
:class:`PipelineError` line with the stage and frame. Ctrl-C does the same and
re-raises KeyboardInterrupt for the CLI to exit 130.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidrestore.config import Config, config_to_dict
from vidrestore.control import END, RunControl, Stopped
from vidrestore.errors import ConfigError, InputError, OutputError, PipelineError, VidrestoreError
from vidrestore.io.atomic import AtomicTarget, check_target
from vidrestore.io.encoders import plan_output
from vidrestore.io.images import is_image, read_image, write_image
from vidrestore.io.reader import VideoReader
from vidrestore.io.writer import VideoWriter
from vidrestore.models.store import ModelStore
from vidrestore.records import Face, Frame
from vidrestore.stats import RunStats

__all__ = [
    "InspectSummary",
    "Interrupted",
    "RunStats",
    "Summary",
    "annotate",
    "dry_run",
    "expand_inputs",
    "frame_json",
    "inspect_path",
    "models_for",
    "restore_file",
    "restore_paths",
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
        if s.stage_seconds:
            out.append("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in s.stage_seconds.items()))
        if s.skipped_packets:
            out.append(f"warning: {s.skipped_packets} damaged video packet(s) were skipped")
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
            "versions": {
                "vidrestore": __version__,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "av": av.__version__,
                "ffmpeg": ".".join(map(str, av.library_versions["libavcodec"])),
            },
        }


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run of several files: ``finished`` lists the outputs already complete."""

    def __init__(self, finished: list[Path]) -> None:
        super().__init__()
        self.finished = finished


def models_for(config: Config) -> list[str]:
    """Registry names of the models ``config`` uses from the cache (not local ``*.weights``)."""
    names: list[str] = []
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
    from vidrestore.stages import build_face_stages

    return build_face_stages(config, store, stats)


def _pass_through(stats: RunStats) -> FrameStages:
    def run(frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            stats.frames_passed_through += 1
            yield frame

    return run


def restore_paths(
    inputs: list[Path], output: Path, config: Config, store: ModelStore, progress: bool = False
) -> Summary:
    """Restore every input (files or folders) into ``output``; return what was done."""
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
    stages = build_stages(config, store, stats)
    start = time.perf_counter()
    outputs: list[Path] = []
    try:
        for src, dst in pairs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            check_target(dst, sources, config.output.overwrite)
            restore_file(src, dst, config, stages, stats, progress=progress)
            outputs.append(dst)
    except KeyboardInterrupt as exc:
        raise Interrupted(outputs) from exc
    stats.wall_seconds = time.perf_counter() - start
    return Summary(stats, outputs)


def restore_file(
    src: Path, dst: Path, config: Config, stages: FrameStages, stats: RunStats, progress: bool = False
) -> None:
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
    target = AtomicTarget(dst, config.output.overwrite)
    with target as tmp:
        write_image(
            tmp, frame.image, still.alpha, config.output.image_quality, still.icc_profile, fmt_suffix=dst.suffix
        )
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
        raise PipelineError(
            getattr(exc, "stage", stage), where if where is not None else last + 1, f"{type(exc).__name__}: {exc}"
        ) from exc


def _open_reader(src: Path, config: Config, control: RunControl, copy_streams: bool = True) -> VideoReader:
    return VideoReader(
        src,
        control,
        queue_size=config.pipeline.queue_size,
        threads=config.pipeline.decode_threads,
        copy_audio=copy_streams and config.output.audio,
        copy_subtitles=copy_streams and config.output.subtitles,
    )


def _restore_video(src: Path, dst: Path, config: Config, stages: FrameStages, stats: RunStats, progress: bool) -> None:
    control = RunControl()
    reader = _open_reader(src, config, control)
    bar = _progress_bar(reader, src, progress)
    target = AtomicTarget(dst, config.output.overwrite)
    with target as tmp:
        writer = VideoWriter(
            tmp,
            lambda: reader.info,
            reader.copy_streams,
            reader.packets,
            config.output,
            control,
            queue_size=config.pipeline.queue_size,
            threads=config.pipeline.encode_threads,
            attachments=reader.attachments,
        )
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
        stats.timestamps_repaired += reader.repair.repaired
        stats.timestamp_resets += reader.repair.resets + sum(c.resets for c in reader.clocks.values())
        if reader.truncated_at is not None:
            stats.truncated.append(
                f"{src}: the input stopped at {reader.truncated_at:.2f} s (truncated?); "
                f"the output holds the {reader.decoded} frames before that"
            )
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
            lines.append(
                f"input {src}: video {i.codec} {i.width}x{i.height} {i.pix_fmt}, "
                f"{float(i.rate or 0):.3f} fps, {i.duration_s or 0:.2f} s"
            )
            lines.extend(
                f"  stream {s.index}: {s.kind} {s.codec}" + (f" [{s.language}]" if s.language else "")
                for s in reader.stream_infos()
            )
        finally:
            reader.close()
    for name in models_for(config):
        st = store.status(name)
        lines.append(f"model {name}: {'present' if st.present else 'missing'} at {st.path}")
    return lines


def _face_json(face: Face) -> dict[str, Any]:
    def pts(a: Any) -> Any:
        return None if a is None else [[round(float(x), 2), round(float(y), 2)] for x, y in a]

    return {
        "track_id": face.track_id,
        "score": round(face.score, 4),
        "box": [round(float(v), 2) for v in face.box],
        "landmarks_raw": pts(face.landmarks_raw),
        "landmarks": pts(face.landmarks),
        "interpolated": face.interpolated,
        "weight": round(face.weight, 3),
    }


def frame_json(frame: Frame) -> dict[str, Any]:
    """One frame's entry in ``inspect --json`` (the contract in DESIGN.md)."""
    return {
        "index": frame.index,
        "pts": frame.pts,
        "time": round(frame.pts_seconds, 6),
        "faces": [_face_json(f) for f in frame.faces],
    }


def annotate(frame: Frame) -> Frame:
    """Draw boxes, landmarks and track ids (filled-in faces dashed-grey, raw points red)."""
    import cv2
    import numpy as np

    img = np.ascontiguousarray(frame.image if frame.image.dtype == np.uint8 else (frame.image >> 8).astype(np.uint8))
    thick = max(1, round(max(img.shape[:2]) / 500))
    for face in frame.faces:
        colour = (160, 160, 160) if face.interpolated else (0, 220, 0)
        x1, y1, x2, y2 = (round(v) for v in face.box)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick)
        cv2.putText(
            img,
            f"#{face.track_id}" + (" filled" if face.interpolated else ""),
            (x1, max(y1 - 4, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            colour,
            thick,
        )
        if face.landmarks_raw is not None:
            for x, y in face.landmarks_raw:
                cv2.circle(img, (round(x), round(y)), thick + 1, (255, 60, 60), -1)
        for x, y in face.landmarks:
            cv2.circle(img, (round(x), round(y)), thick, (255, 255, 0), -1)
    return replace(frame, image=img)


def inspect_path(
    src: Path,
    config: Config,
    store: ModelStore,
    json_out: str | None = None,
    annotate_out: Path | None = None,
    progress: bool = False,
) -> InspectSummary:
    """Detect and track faces in ``src``; write JSON and/or an annotated video; return the tally."""
    from vidrestore.device import resolve_placement
    from vidrestore.stages import FaceStages, build_detector

    if config.detector.model == "none":
        raise ConfigError("inspect needs a detector: set detector.model (centerface needs no download)")
    if annotate_out is not None:
        check_target(annotate_out, [src], config.output.overwrite)
    placement = resolve_placement(config.device, config.precision)
    stages = FaceStages(config, build_detector(config, store, placement), None)
    if json_out not in (None, "-"):
        check_target(Path(json_out), [src], config.output.overwrite)
    sink = _JsonSink(json_out, src, config.output.overwrite)
    tally = InspectSummary()
    try:

        def track_and_record(frames: Iterator[Frame]) -> Iterator[Frame]:
            for frame in stages.track(frames):
                sink.add(frame)
                tally.add(frame)
                yield annotate(frame) if annotate_out is not None else frame

        stats = RunStats()
        if annotate_out is not None:
            restore_file(src, annotate_out, config, track_and_record, stats, progress=progress)
        elif is_image(src):
            for _ in track_and_record(iter([read_image(src).frame])):
                stats.frames += 1
        else:
            control = RunControl()
            reader = _open_reader(src, config, control, copy_streams=False)
            try:
                for _ in _guarded(track_and_record(iter(reader)), "inspect", stats):
                    stats.frames += 1
            finally:
                reader.close()
            if control.error is not None:
                raise control.error
        sink.close(ok=True)
    except BaseException:
        sink.close(ok=False)
        raise
    return tally


@dataclass
class InspectSummary:
    """What ``inspect`` found: frames, frames with faces, and per track its span and face sizes."""

    frames: int = 0
    frames_with_faces: int = 0
    tracks: dict[int, list[tuple[int, float, bool]]] = field(default_factory=dict)  # (frame, size, filled)

    def add(self, frame: Frame) -> None:
        self.frames += 1
        self.frames_with_faces += bool(frame.faces)
        for face in frame.faces:
            self.tracks.setdefault(face.track_id, []).append((frame.index, face.size, face.interpolated))

    def lines(self) -> list[str]:
        out = [f"{self.frames} frames, {self.frames_with_faces} with faces, {len(self.tracks)} track(s)"]
        if self.tracks:
            out.append(f"{'track':>5}  {'frames':>13}  {'seen':>5}  {'filled':>6}  face size px (min/median/max)")
        for tid, seen in sorted(self.tracks.items()):
            sizes = sorted(size for _, size, _ in seen)
            span = f"{seen[0][0]}-{seen[-1][0]}"
            filled = sum(f for _, _, f in seen)
            mid = sizes[len(sizes) // 2]
            out.append(
                f"{tid:>5}  {span:>13}  {len(seen):>5}  {filled:>6}  {sizes[0]:.0f} / {mid:.0f} / {sizes[-1]:.0f}"
            )
        return out


class _JsonSink:
    """Streams ``inspect`` JSON to a file (atomically) or stdout, one frame at a time."""

    def __init__(self, target: str | None, src: Path, overwrite: bool = False) -> None:
        import sys

        self.first = True
        self.fh: Any = None
        self.atomic: AtomicTarget | None = None
        if target is None:
            return
        if target == "-":
            self.fh = sys.stdout
        else:
            self.atomic = AtomicTarget(Path(target), overwrite)
            self.fh = self.atomic.tmp.open("w", encoding="utf-8")
        self.fh.write('{"input": ' + json.dumps(str(src)) + ', "frames": [\n')

    def add(self, frame: Frame) -> None:
        if self.fh is None:
            return
        self.fh.write(("" if self.first else ",\n") + json.dumps(frame_json(frame)))
        self.first = False

    def close(self, ok: bool) -> None:
        if self.fh is None:
            return
        if ok:
            self.fh.write("\n]}\n")
        if self.atomic is not None:
            self.fh.close()
            if ok:
                self.atomic.commit()
            else:
                self.atomic.tmp.unlink(missing_ok=True)
        else:
            self.fh.flush()
        self.fh = None
