"""One input, start to end: reader thread -> face stages (on the device) -> writer thread.

Every link is a bounded queue. The face stages run on the calling thread as a generator over
frames (their look-ahead is part of that buffering). :func:`drive` is the one loop: the whole-file
run, a segment's render and the join of segments all go through it. The first error anywhere stops
all threads, the temp output is removed, and the error surfaces as one :class:`PipelineError` line
with the stage and frame. Ctrl-C does the same and re-raises KeyboardInterrupt for the CLI to exit 130.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

from vidrestore.config import Config
from vidrestore.control import END, RunControl, Stopped
from vidrestore.device import on_cuda
from vidrestore.errors import PipelineError, VidrestoreError
from vidrestore.io.atomic import AtomicTarget
from vidrestore.io.deinterlace import FieldSettings
from vidrestore.io.images import is_image, read_animation, read_image, write_animation, write_image
from vidrestore.io.probe import frame_count
from vidrestore.io.reader import VideoReader
from vidrestore.io.writer import VideoWriter
from vidrestore.models.store import ModelStore
from vidrestore.progress import Progress
from vidrestore.records import Frame
from vidrestore.stages.assemble import Loaded, build_face_stages
from vidrestore.stats import RunStats

__all__ = [
    "FrameStages",
    "build_stages",
    "drive",
    "guarded",
    "open_reader",
    "record_damage",
    "record_fields",
    "restore_file",
    "writer_for",
]

log = logging.getLogger(__name__)

FrameStages = Callable[[Iterator[Frame]], Iterator[Frame]]
"""The face stages as one generator transform: frames in order in, the same frames out."""


def build_stages(config: Config, store: ModelStore, stats: RunStats, loaded: Loaded | None = None) -> FrameStages:
    """The face stages for ``config`` (models loaded once here, or taken from ``loaded``), or pass-through."""
    if config.detector.model == "none" and config.output.scale == 1:
        return _pass_through(stats)
    return build_face_stages(config, store, stats, loaded)


def _pass_through(stats: RunStats) -> FrameStages:
    def run(frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            stats.frames_passed_through += 1
            yield frame

    return run


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
    anim = read_animation(src)
    if anim is not None:  # every frame, through the stages as a clip (tracks, smoothing and fusion too)
        frames = list(guarded(stages(iter(anim.frames)), "restore", stats))
        stats.frames += len(frames)
        target = AtomicTarget(dst, config.output.overwrite)
        with target as tmp:
            write_animation(tmp, [f.rgb() for f in frames], anim, config.output.image_quality, dst.suffix)
            target.commit()
        return
    still = read_image(src)
    (frame,) = list(guarded(stages(iter([still.frame])), "restore", stats))
    stats.frames += 1
    target = AtomicTarget(dst, config.output.overwrite)
    with target as tmp:
        write_image(
            tmp, frame.rgb(), still.alpha, config.output.image_quality, still.icc_profile, fmt_suffix=dst.suffix
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


def _nvdec(config: Config) -> bool:
    """Whether to try NVIDIA's decoder: asked for, or auto with the networks on a CUDA GPU."""
    d = config.input.decoder
    return d == "nvdec" or (d == "auto" and on_cuda(config.device))


def _nvenc(config: Config) -> bool:
    """Whether ``output.codec: auto`` tries NVIDIA's encoder first: with the networks on a CUDA GPU."""
    return config.output.codec == "auto" and on_cuda(config.device)


def open_reader(
    src: Path,
    config: Config,
    control: RunControl,
    copy_streams: bool = True,
    decode_video: bool = True,
    seek_pts: int | None = None,
    output: Path | None = None,
) -> VideoReader:
    """The reader of ``src`` as ``config`` asks: ``copy_streams`` False reads the video alone (a
    segment's render); ``seek_pts`` starts at the keyframe at or before that time; ``output``: the
    file its pictures are written to (what it holds shapes the field stage)."""
    return VideoReader(
        src,
        control,
        queue_size=config.pipeline.queue_size,
        threads=config.pipeline.decode_threads,
        planes=config.pipeline.planes,
        nvdec=_nvdec(config),
        copy_audio=copy_streams and config.output.audio,
        copy_subtitles=copy_streams and config.output.subtitles,
        copy_other=copy_streams,
        strict=config.input.strict,
        decode_video=decode_video,
        seek_pts=seek_pts,
        fields=FieldSettings.of(config, output),
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
        nvenc=_nvenc(config),
    )


def drive(
    items: Iterator[Any],
    reader: VideoReader,
    writer: VideoWriter,
    control: RunControl,
    *,
    keep: Callable[[Any], bool] | None = None,
    reader_control: RunControl | None = None,
) -> int:
    """The one loop: every item (a frame, or with a template writer an encoded packet) that ``keep``
    takes goes to the writer, then the end. The first error stops everything; whatever happens, the
    stages' own threads stop (``items`` closed), the writer finishes or stops, the reader closes; then
    the first error is raised (Stopped, if the run was told to stop with no error). Returns the
    items written. ``reader_control``: the reader's own, when it may be left before its end (a
    segment stops reading past its look-ahead, and that must not stop the writer)."""
    written = 0
    stopped = False
    try:
        for item in items:
            if keep is not None and not keep(item):
                continue
            control.put(writer.frames, item)
            written += 1
        control.put(writer.frames, END)
    except Stopped:
        stopped = True
    except BaseException as exc:
        control.fail(exc)
    finally:
        if isinstance(items, Generator):
            items.close()  # stops the stages' own threads (overlapped detection) before the join below
        writer.join()
        reader.close()
    for error in (control.error, reader_control.error if reader_control is not None else None):
        if error is not None:
            raise error
    if stopped:
        raise Stopped
    return written


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
    reader = open_reader(src, config, control, output=dst)
    bar = _progress_bar(reader, src, progress)
    target = AtomicTarget(dst, config.output.overwrite)

    def each(frame: Frame) -> bool:
        if cancel is not None and cancel.is_set():
            raise KeyboardInterrupt  # canceled: cleaned up as Ctrl-C is
        stats.frames += 1
        if bar is not None:
            bar.update(1)
        return True

    with target as tmp:
        writer = writer_for(reader, tmp, config, control)
        writer.start()
        reader.start()
        try:
            drive(guarded(stages(iter(reader)), "restore", stats), reader, writer, control, keep=each)
        finally:
            if bar is not None:
                bar.close()
        record_damage(reader, stats)
        record_fields(reader, src, stats)
        if not reader.timed_by_count:  # AVI: ordering its times is how it is read (see VideoReader)
            stats.timestamps_repaired += reader.repair.repaired
        stats.timestamp_resets += reader.repair.resets + sum(c.resets for c in reader.clocks.values())
        target.commit()


def record_fields(reader: VideoReader, src: Path, stats: RunStats) -> None:
    """What the field stage found in ``src`` and did, for the closing lines and the report."""
    info = reader.info
    plan = info.fields
    if plan is None:
        return
    line = plan.line(src.name, info.width, info.height)
    stats.fields.append({"file": str(src), **plan.to_dict(), "line": line})


def record_damage(reader: VideoReader, stats: RunStats) -> None:
    """Add what ``reader`` found damaged, or possibly damaged (if anything), to the run's counts and report."""
    if reader.damage.worth_saying:
        stats.skipped_packets += reader.damage.packets_skipped
        stats.damaged.append(reader.damage.to_dict())
        stats.damage_lines.append(reader.damage.summary())


def _progress_bar(reader: VideoReader, src: Path, enabled: bool) -> Progress | None:
    """A bar on a terminal, a line every 10 s elsewhere; the total is the container's frame count, or
    its duration times its rate where it keeps no count (MKV, WebM, TS)."""
    if not enabled:
        return None
    info = reader.info
    return Progress(src.name, frame_count(info.frames, info.duration_s, info.rate) or None)
