"""One segment through the face stages into its own file: warmed up before, looked ahead after,
only its own frames encoded, with the same encoder settings as every other segment."""

from __future__ import annotations

import bisect
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidrestore.config import Config
from vidrestore.control import END, RunControl, Stopped
from vidrestore.errors import PipelineError
from vidrestore.io.atomic import AtomicTarget
from vidrestore.io.writer import VideoWriter
from vidrestore.models.store import sha256_file
from vidrestore.records import Frame
from vidrestore.run.file import drive, guarded, open_reader, record_damage
from vidrestore.run.segments.plan import WHOLE_HINT, Segment, warm_ahead
from vidrestore.stats import RunStats

__all__ = ["SegmentResult", "render_segment"]


@dataclass
class SegmentResult:
    """What a finished segment sends back (never frames): its file, checksum, counts and timing."""

    index: int
    file: str
    sha256: str
    frames: int
    seconds: float
    worker: str
    stats: RunStats = field(default_factory=RunStats)


def _window(frames: Iterator[Frame], seg: Segment, times: list[int], warm: int, ahead: int) -> Iterator[Frame]:
    """The frames the face stages see for ``seg``: the last ``warm`` before it, its own, ``ahead``
    after it; each numbered by its place in the whole file."""
    before: deque[Frame] = deque(maxlen=warm)
    after = 0
    for frame in frames:
        k = bisect.bisect_left(times, frame.pts)
        if k == len(times) or times[k] != frame.pts:
            raise PipelineError(
                "segment", None, f"a frame at time {frame.pts} is not in the segment plan; {WHOLE_HINT}"
            )
        frame = replace(frame, index=k)
        if frame.pts < seg.start:
            before.append(frame)
            continue
        while before:
            yield before.popleft()
        if seg.end is not None and frame.pts >= seg.end:
            after += 1
            if after > ahead:
                return
        yield frame


def render_segment(
    src: Path,
    seg: Segment,
    times: list[int],
    dst: Path,
    config: Config,
    stages: Callable[[Iterator[Frame]], Iterator[Frame]],
    stats: RunStats,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> SegmentResult:
    """Restore ``seg`` of ``src`` into the segment file ``dst`` (atomically: a file under that name
    is always whole). ``stages`` is called once, for this segment (as for one file)."""
    t0 = time.perf_counter()
    warm, ahead = warm_ahead(config)
    stats.source = str(src)
    read_control, write_control = RunControl(), RunControl()  # the reader is left before its end
    reader = open_reader(src, config, read_control, copy_streams=False, seek_pts=seg.seek)
    none: queue.Queue[Any] = queue.Queue()
    none.put(END)

    def own(frame: Frame) -> bool:
        if cancel is not None and cancel.is_set():
            raise Stopped  # another worker failed: this one stops too
        if frame.pts < seg.start or (seg.end is not None and frame.pts >= seg.end):
            return False  # warm-up and look-ahead: run for their context only
        if progress is not None:
            progress(1)
        return True

    target = AtomicTarget(dst, overwrite=True)
    with target as part:
        writer = VideoWriter(
            part,
            lambda: reader.info,
            [],
            none,
            config.output,
            write_control,
            queue_size=config.pipeline.queue_size,
            threads=config.pipeline.encode_threads,
        )
        writer.start()
        reader.start()
        frames = guarded(stages(_window(iter(reader), seg, times, warm, ahead)), "restore", stats)
        written = drive(frames, reader, writer, write_control, keep=own, reader_control=read_control)
        if written != seg.frames:
            raise PipelineError(
                "segment",
                seg.first_frame,
                f"segment {seg.index} gave {written} frames, the plan {seg.frames}; {WHOLE_HINT}",
            )
        record_damage(reader, stats)
        target.commit()
    stats.frames += written
    worker = f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
    return SegmentResult(seg.index, dst.name, sha256_file(dst), written, time.perf_counter() - t0, worker, stats)
