"""Reading the blocks of a damaged Matroska file that FFmpeg's demuxer steps over.

When a block in a cluster is damaged (a flipped lacing flag, a bad size), FFmpeg's Matroska demuxer
(7 and later) gives up on the rest of that cluster and resynchronises at the next top-level
element: every block after the damaged one, to the end of its cluster, is lost, which at the end of
a file is all of its tail. The blocks themselves are usually whole. :func:`salvage` walks the
clusters' EBML structure over a byte range the demuxer skipped and hands back each block it can
read as a packet of its stream, with its time; a block that does not parse is left out and counted.

Convention: positions are byte offsets in the file; a block's ``pos`` is where its content (track
number, time, flags, data) begins, as FFmpeg's ``AVPacket.pos`` says it. Times are in the segment's
timestamp scale (``TimestampScale`` ns per tick), which is the streams' time base when FFmpeg reads
them (1 ms by default).
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "Layout", "Salvaged", "read_layout", "salvage"]

log = logging.getLogger(__name__)

_SEGMENT = 0x18538067
_INFO = 0x1549A966
_TRACKS = 0x1654AE6B
_TRACK_ENTRY = 0xAE
_TRACK_NUMBER = 0xD7
_CODEC_DELAY = 0x56AA
_TIMESTAMP_SCALE = 0x2AD7B1
_CLUSTER = 0x1F43B675
_CLUSTER_BYTES = _CLUSTER.to_bytes(4, "big")
_TIMECODE = 0xE7
_SIMPLE_BLOCK = 0xA3
_BLOCK_GROUP = 0xA0
_BLOCK = 0xA1
_BLOCK_DURATION = 0x9B
_REFERENCE = 0xFB
_HEAD = 1 << 20  # the header (Info, Tracks) is looked for in the first MiB
MAX_SCAN = 1 << 16  # bytes searched for the next readable block after a damaged one
Data = bytes | mmap.mmap  # the file's bytes, or the file mapped
RESYNC_SECONDS = 5  # a block found after damage lies this near the last one that read
CLUSTER_REACH = 1 << 26  # how far back from a position its cluster's start is looked for (64 MiB)


@dataclass(frozen=True)
class Block:
    """One block read from the file: its stream, times (timestamp-scale ticks) and bytes."""

    stream: int  # the stream's index (the order of its TrackEntry)
    pts: int
    duration: int  # 0 when the block does not say
    keyframe: bool
    pos: int
    data: bytes


@dataclass(frozen=True)
class Layout:
    """What reading blocks needs from the header: track numbers to stream indices, the time scale."""

    streams: dict[int, int]  # TrackNumber -> stream index
    scale_ns: int
    delays_ns: dict[int, int] = field(default_factory=dict)  # TrackNumber -> CodecDelay, which FFmpeg takes off


def _vint(data: Data, at: int) -> tuple[int, int] | None:
    """An EBML variable-length size at ``at``: (value, length); None past the end or if malformed.
    All value bits set is the unknown size, given as -1."""
    if at >= len(data) or data[at] == 0:
        return None
    first = data[at]
    n = 8 - first.bit_length() + 1
    if at + n > len(data):
        return None
    value = first & ((1 << (8 - n)) - 1)
    for k in range(1, n):
        value = (value << 8) | data[at + k]
    return (-1 if value == (1 << (7 * n)) - 1 else value), n


def _id(data: Data, at: int) -> tuple[int, int] | None:
    """An EBML element ID at ``at`` (1-4 bytes, its marker bit kept): (id, length)."""
    if at >= len(data) or data[at] < 0x10:
        return None
    n = 8 - data[at].bit_length() + 1
    if at + n > len(data):
        return None
    return int.from_bytes(data[at : at + n], "big"), n


def _element(data: Data, at: int, end: int, clip: bool = False) -> tuple[int, int, int] | None:
    """(id, content start, content end) of the element at ``at``, which must end by ``end`` (or,
    with ``clip``, is cut at ``end``: a file cut short)."""
    head = _id(data, at)
    if head is None:
        return None
    ident, n = head
    size = _vint(data, at + n)
    if size is None:
        return None
    value, m = size
    start = at + n + m
    stop = end if value < 0 else start + value
    if stop > end and not clip:
        return None
    return ident, start, min(stop, end)


def _children(data: Data, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(id, element start, content start, content end) of each child in ``[start, end)``, while they parse."""
    at = start
    while at < end:
        got = _element(data, at, end)
        if got is None:
            return
        ident, c0, c1 = got
        yield ident, at, c0, c1
        at = c1


def _uint(data: Data, start: int, end: int) -> int:
    return int.from_bytes(data[start:end], "big") if end > start else 0


def read_layout(data: Data) -> Layout | None:
    """The track numbers and time scale from the file's header, or None where it does not parse."""
    streams: dict[int, int] = {}
    delays: dict[int, int] = {}
    scale = 1_000_000
    header = _element(data, 0, len(data))  # the EBML header
    segment = _element(data, header[2], len(data), clip=True) if header is not None else None
    if segment is None or segment[0] != _SEGMENT:
        return None
    for child, _, s0, s1 in _children(data, segment[1], min(segment[2], segment[1] + _HEAD)):
        if child == _INFO:
            for key, _, k0, k1 in _children(data, s0, s1):
                if key == _TIMESTAMP_SCALE:
                    scale = _uint(data, k0, k1) or scale
        elif child == _TRACKS:
            entries = [(e0, e1) for key, _, e0, e1 in _children(data, s0, s1) if key == _TRACK_ENTRY]
            for index, (e0, e1) in enumerate(entries):
                keys = {key: (k0, k1) for key, _, k0, k1 in _children(data, e0, e1)}
                if _TRACK_NUMBER in keys:
                    number = _uint(data, *keys[_TRACK_NUMBER])
                    streams[number] = index
                    if _CODEC_DELAY in keys:
                        delays[number] = _uint(data, *keys[_CODEC_DELAY])
        elif child == _CLUSTER:
            break
    return Layout(streams, scale, delays) if streams else None


def _block(
    data: Data, c0: int, c1: int, cluster_time: int, layout: Layout, duration: int, key: bool | None
) -> Block | None:
    """The Block or SimpleBlock whose content is ``[c0, c1)``; None if it does not parse (laced
    blocks are not taken apart: the frames of a lace have no times of their own)."""
    track = _vint(data, c0)
    if track is None or track[0] not in layout.streams or c0 + track[1] + 3 > c1:
        return None
    at = c0 + track[1]
    rel = int.from_bytes(data[at : at + 2], "big", signed=True)
    flags = data[at + 2]
    if flags & 0x06:
        return None
    keyframe = bool(flags & 0x80) if key is None else key
    delay = (2 * layout.delays_ns.get(track[0], 0) + layout.scale_ns) // (2 * layout.scale_ns)  # halves up, as FFmpeg
    return Block(layout.streams[track[0]], cluster_time + rel - delay, duration, keyframe, c0, data[at + 3 : c1])


def _cluster_blocks(data: Data, c0: int, c1: int, layout: Layout) -> Iterator[Block | int]:
    """The blocks of one cluster in order; the position of each stretch that does not parse."""
    cluster_time: int | None = None
    last: int | None = None  # the time of the cluster's latest block that read
    at = c0
    while at < c1:
        got = _element(data, at, c1)
        if got is not None and got[0] == _TIMECODE:
            cluster_time = last = _uint(data, got[1], got[2])
        elif got is not None and cluster_time is not None and got[0] in (_SIMPLE_BLOCK, _BLOCK_GROUP):
            block = _simple_or_group(data, got, cluster_time, layout)
            if block is not None:
                yield block
                last = block.pts
                at = got[2]
                continue
        if got is None or (cluster_time is not None and got[0] in (_SIMPLE_BLOCK, _BLOCK_GROUP)):
            yield at  # damaged here: look for the next block that reads
            if cluster_time is None or last is None:
                return
            found = _next_block(data, at + 1, c1, cluster_time, last, layout)
            if found is None:
                return
            at = found
            continue
        at = got[2]


def _simple_or_group(data: Data, got: tuple[int, int, int], cluster_time: int, layout: Layout) -> Block | None:
    ident, c0, c1 = got
    if ident == _SIMPLE_BLOCK:
        return _block(data, c0, c1, cluster_time, layout, 0, None)
    inner = {key: (k0, k1) for key, _, k0, k1 in _children(data, c0, c1)}
    if _BLOCK not in inner:
        return None
    duration = _uint(data, *inner[_BLOCK_DURATION]) if _BLOCK_DURATION in inner else 0
    return _block(data, *inner[_BLOCK], cluster_time, layout, duration, _REFERENCE not in inner)


def _next_block(data: Data, start: int, end: int, cluster_time: int, last: int, layout: Layout) -> int | None:
    """Where the next block begins after damage, within ``MAX_SCAN`` bytes; None if none is found.
    Media bytes can look like a block head, so a candidate must be one for certain: it parses, its
    time lies within ``RESYNC_SECONDS`` of the last block that read, and the element after it
    parses too (or it ends the cluster)."""
    reach = RESYNC_SECONDS * 1_000_000_000 // layout.scale_ns
    for at in range(start, min(end, start + MAX_SCAN)):
        if data[at] not in (_SIMPLE_BLOCK, _BLOCK_GROUP):
            continue
        got = _element(data, at, end)
        block = _simple_or_group(data, got, cluster_time, layout) if got is not None else None
        if block is None or got is None or abs(block.pts - last) > reach:
            continue
        if got[2] == end or _element(data, got[2], end) is not None:
            return at
    return None


@dataclass(frozen=True)
class Salvaged:
    """What :func:`salvage` read: the blocks, where damaged blocks lie, the time scale of their times."""

    blocks: list[Block]
    damaged: list[tuple[int, int | None]]  # where each damaged block lies, and its stream where that reads
    scale_ns: int = 1_000_000


def salvage(path: Path, start: int, stop: int | None) -> Salvaged:
    """Every readable block whose content begins in ``[start, stop)`` (``stop`` None: to the end of
    the file), walking the clusters that hold that range; and where the blocks that do not read lie
    (damaged blocks). Nothing when the file's header does not parse. The file is mapped, not read."""
    with path.open("rb") as fh:
        if path.stat().st_size == 0:
            return Salvaged([], [])
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _salvage(data, start, stop)


def _salvage(data: Data, start: int, stop: int | None) -> Salvaged:
    layout = read_layout(data[:_HEAD])
    if layout is None:
        return Salvaged([], [])
    stop = len(data) if stop is None else min(stop, len(data))
    at = data.rfind(_CLUSTER_BYTES, max(0, start - CLUSTER_REACH), start + 1)
    if at < 0:
        at = data.find(_CLUSTER_BYTES, start)
    blocks: list[Block] = []
    damaged: list[tuple[int, int | None]] = []
    while 0 <= at < stop:
        got = _element(data, at, len(data), clip=True)
        if got is None or got[0] != _CLUSTER:
            at = data.find(_CLUSTER_BYTES, at + 1)
            continue
        for item in _cluster_blocks(data, got[1], got[2], layout):
            if isinstance(item, int):
                if start <= item < stop:
                    damaged.append((item, _stream_at(data, item, layout)))
            elif start <= item.pos < stop:
                blocks.append(item)
        at = got[2] if got[2] > at else data.find(_CLUSTER_BYTES, at + 1)
    log.debug("%d blocks read from bytes %d-%d, %d damaged", len(blocks), start, stop, len(damaged))
    return Salvaged(blocks, damaged, layout.scale_ns)


def _stream_at(data: Data, at: int, layout: Layout) -> int | None:
    """The stream of the damaged block at ``at``, where its head still reads."""
    head = _id(data, at)
    size = _vint(data, at + head[1]) if head is not None and head[0] == _SIMPLE_BLOCK else None
    track = _vint(data, at + head[1] + size[1]) if head is not None and size is not None else None
    return layout.streams.get(track[0]) if track is not None else None
