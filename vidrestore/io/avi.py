"""What an AVI file's own header and index say it holds: AVI demuxers step over lost data
without a word, and AVI times count packets, so these are the traces of a loss."""

from __future__ import annotations

import struct
from pathlib import Path

from vidrestore.io.damage import DamageLog

__all__ = ["avi_header_seconds", "avi_index_counts", "avi_losses"]

AVI_HEADER_BYTES = 64 << 10  # where an AVI file's stream headers lie
AVI_INDEX_TAIL = 64 << 20  # how much of an AVI file's end is searched for its index (16 bytes a packet)


def avi_index_counts(path: Path) -> dict[int, tuple[int, int]] | None:
    """Per stream number, the chunks with data that an AVI file's ``idx1`` index lists, and their bytes;
    None when the file has none at its end (truncated, an OpenDML file, not an AVI). (Bytes, because
    FFmpeg's audio parsers split and join chunks into frames: a short first AC3 chunk comes out
    joined to the next, one packet fewer and not one byte.)

    The index is found from the end, where muxers put it: the chunk sizes in front of it no longer
    lead there once bytes have been lost in the middle.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
            return None
        tail_start = max(12, size - AVI_INDEX_TAIL)
        f.seek(tail_start)
        tail = f.read()
    at = len(tail)
    while (at := tail.rfind(b"idx1", 0, at)) >= 0:
        length = int.from_bytes(tail[at + 4 : at + 8], "little")
        if at + 8 + length in (len(tail), len(tail) - 1):  # this chunk runs to the end of the file
            break
    else:
        return None
    counts: dict[int, tuple[int, int]] = {}
    table = tail[at + 8 : at + 8 + length]
    for entry in range(0, len(table) - 15, 16):
        ckid = table[entry : entry + 4]
        size = int.from_bytes(table[entry + 12 : entry + 16], "little")
        if ckid[:2].isdigit() and size > 0:
            chunks, total = counts.get(int(ckid[:2]), (0, 0))
            counts[int(ckid[:2])] = (chunks + 1, total + size)
    return counts


def avi_header_seconds(path: Path) -> float | None:
    """How long an AVI file's header says its video is (the video ``strh``: length times scale over
    rate), or None. FFmpeg replaces this with what it finds when the index is gone."""
    with path.open("rb") as f:
        head = f.read(AVI_HEADER_BYTES)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return None
    at = 0
    while (at := head.find(b"strh", at + 1)) > 0 and at + 44 <= len(head):
        if head[at + 8 : at + 12] == b"vids":
            scale, rate, _, length = struct.unpack("<IIII", head[at + 28 : at + 44])
            return length * scale / rate if scale and rate and length else None
    return None


def avi_losses(
    path: Path, read: dict[int, tuple[int, int]], damage: DamageLog, last_end_s: float, tolerance: float
) -> bool:
    """Say in ``damage`` what the AVI file's index lists and was never read (``read``: per stream,
    the packets and bytes demuxed; compared in bytes, since FFmpeg's parsers join and split audio
    chunks). Without the index (it is at the end), the header's length says whether the file ends
    early (FFmpeg takes the duration from what it finds). Returns whether the file ends early."""
    listed = avi_index_counts(path)
    if listed is not None:
        for index, (count, size) in read.items():
            chunks, total = listed.get(index, (0, 0))
            if size < total:
                damage.missing(index, max(1, chunks - count))
        return False
    stated = avi_header_seconds(path)
    return stated is not None and last_end_s < stated - tolerance
