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


def _source(frame: Frame) -> int:
    """The time of the decoded frame a picture came from (a deinterlaced field shares its frame's)."""
    return frame.pts if frame.source_pts is None else frame.source_pts


def _window(
    frames: Iterator[Frame], seg: Segment, times: list[int], warm: int, ahead: int, per: int = 1
) -> Iterator[Frame]:
    """The frames the face stages see for ``seg``: the last ``warm`` before it, its own, ``ahead``
    after it; each numbered by its place in the whole file (``per`` pictures to a decoded frame:
    two for video deinterlaced one picture per field)."""
    before: deque[Frame] = deque(maxlen=warm * per)
    after = 0
    last, nth = -1, 0
    for frame in frames:
        source = _source(frame)
        k = bisect.bisect_left(times, source)
        if k == len(times) or times[k] != source:
            raise PipelineError("segment", None, f"a frame at time {source} is not in the segment plan; {WHOLE_HINT}")
        nth = nth + 1 if k == last else 0
        last = k
        frame = replace(frame, index=k * per + min(nth, per - 1))
        if source < seg.start:
            before.append(frame)
            continue
        while before:
            yield before.popleft()
        if seg.end is not None and source >= seg.end:
            after += 1
            if after > ahead * per:
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
    reader = open_reader(src, config, read_control, copy_streams=False, seek_pts=seg.seek, output=dst)
    none: queue.Queue[Any] = queue.Queue()
    none.put(END)

    def own(frame: Frame) -> bool:
        if cancel is not None and cancel.is_set():
            raise Stopped  # another worker failed: this one stops too
        source = _source(frame)
        if source < seg.start or (seg.end is not None and source >= seg.end):
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
        plan = reader.info.fields
        per = int(plan.per_frame) if plan is not None else 1  # telecine (4/5) runs whole, never here
        frames = guarded(stages(_window(iter(reader), seg, times, warm, ahead, per)), "restore", stats)
        written = drive(frames, reader, writer, write_control, keep=own, reader_control=read_control)
        if written != seg.frames * per:
            raise PipelineError(
                "segment",
                seg.first_frame,
                f"segment {seg.index} gave {written} pictures, the plan {seg.frames * per}; {WHOLE_HINT}",
            )
        record_damage(reader, stats)
        target.commit()
    stats.frames += written
    worker = f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
    return SegmentResult(seg.index, dst.name, sha256_file(dst), written, time.perf_counter() - t0, worker, stats)
