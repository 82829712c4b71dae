"""The join: the segments' video packets (no re-encode) with the original's other streams copied,
through the same writer and the same loop as a whole-file run, moved into place atomically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av

from vidrestore.config import Config
from vidrestore.control import RunControl
from vidrestore.io.atomic import AtomicTarget
from vidrestore.run.file import drive, open_reader, record_damage, writer_for
from vidrestore.stats import RunStats

__all__ = ["join_segments"]


def join_segments(src: Path, files: list[Path], dst: Path, config: Config, stats: RunStats) -> int:
    """The segments' video packets (no re-encode) with ``src``'s other streams copied, into ``dst``
    (atomically); returns the video packets written."""
    control = RunControl()
    reader = open_reader(src, config, control, decode_video=False)
    opened = [av.open(str(f)) for f in files]
    target = AtomicTarget(dst, config.output.overwrite)
    try:
        with target as tmp:
            writer = writer_for(reader, tmp, config, control, template=opened[0].streams.video[0])
            writer.start()
            reader.start()
            drive(_packets(opened, _decode_times(files)), reader, writer, control)
            record_damage(reader, stats)
            target.commit()
    finally:
        for c in opened:
            c.close()
    return writer.frames_written


def _packets(opened: list[Any], times: list[int]) -> Iterator[Any]:
    """Every segment's video packets in order, each given its decode time over the whole."""
    dts = iter(times)
    for seg in opened:
        for packet in seg.demux(seg.streams.video[0]):
            if packet.size:
                packet.dts = next(dts)
                yield packet


def _decode_times(files: list[Path]) -> list[int]:
    """A decode time for every video packet of the segments, in order. Each segment's encoder
    started afresh (and Matroska stores no decode times at all), so the times are set anew over
    the whole: the i-th packet decodes at the i-th frame time, less the largest reordering delay,
    which keeps them increasing across the seams and never after a packet's presentation time."""
    shown: list[int] = []
    for f in files:
        with av.open(str(f)) as seg:
            shown += [int(p.pts) for p in seg.demux(seg.streams.video[0]) if p.size and p.pts is not None]
    order = sorted(shown)
    delay = max([0, *(t - pts for t, pts in zip(order, shown, strict=True))])
    return [t - delay for t in order]
