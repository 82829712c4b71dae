"""Damaged copies of clips, for the tests and the damage benchmark: nothing here is used by a run.

Footage people bring is often damaged as well as degraded (failing SD cards, half-copied
transfers, bit rot). :func:`damage` makes a seeded, reproducible damaged copy of a file in one
of these ways:

* ``flip``: bytes flipped at random places (bit rot);
* ``zero``: a range of bytes zeroed (a bad sector);
* ``remove``: a range of bytes cut out (a lost block);
* ``duplicate``: a range of bytes written twice (a repeated block);
* ``index``: the container's own index damaged: the sample tables in an MP4/MOV ``moov``,
  ``idx1`` in an AVI, the Cues of a Matroska/WebM file;
* ``sample-size``: one audio sample's size entry in an MP4/MOV made huge, so the demuxer
  reads on to the end of the file (the case that once cost everything after it);
* ``truncate``: the end of the file cut off (a half-copied transfer).

The byte damage (``flip``, ``zero``, ``remove``, ``duplicate``) stays out of the first 2 % and
the index, so it hits the media data, as the bulk of a file is; ``index`` hits only the index.
"""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CONTAINERS", "KINDS", "Damaged", "damage", "ffmpeg_frames", "make_corpus", "make_source"]

KINDS = ("flip", "zero", "remove", "duplicate", "index", "sample-size", "truncate")
CONTAINERS = ("mp4", "mov", "mkv", "avi", "webm")

# -- finding the index ------------------------------------------------------------------------

_MP4_PARENTS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"udta"}


def _mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """``(type, offset, size)`` of every box, depth first (parents before children)."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos, size
        if kind in _MP4_PARENTS:
            yield from _mp4_boxes(data, pos + header, pos + size)
        pos += size


def _mp4_tracks(data: bytes) -> list[dict[bytes, tuple[int, int]]]:
    """Per ``trak``: its boxes by type (``hdlr``, ``stsz``, ``stco``...) as ``(offset, size)``."""
    tracks: list[dict[bytes, tuple[int, int]]] = []
    trak_end = -1
    for kind, pos, size in _mp4_boxes(data):
        if kind == b"trak":
            tracks.append({})
            trak_end = pos + size
        elif tracks and pos < trak_end:
            tracks[-1].setdefault(kind, (pos, size))
    return tracks


def _handler(data: bytes, box: tuple[int, int]) -> bytes:
    pos, _ = box
    return data[pos + 16 : pos + 20]  # size, 'hdlr', version+flags, pre_defined, then the handler type


def _index_range(data: bytes, container: str) -> tuple[int, int] | None:
    """Where the container's index lies: ``(offset, size)``, or None if it has none."""
    if container in ("mp4", "mov"):
        for kind, pos, size in _mp4_boxes(data):
            if kind == b"moov":
                return pos, size
        return None
    if container == "avi":
        at = data.rfind(b"idx1")
        if at < 0:
            return None
        return at, 8 + struct.unpack("<I", data[at + 4 : at + 8])[0]
    at = data.rfind(b"\x1c\x53\xbb\x6b")  # the Cues element's ID
    if at < 0:
        return None
    first = data[at + 4]
    length = 1 + next(i for i in range(8) if first & (0x80 >> i))
    value = int.from_bytes(data[at + 4 : at + 4 + length], "big") & ((1 << (7 * length)) - 1)
    return at, 4 + length + value


def _sample_tables(data: bytes) -> list[tuple[int, int]]:
    """The sample tables (``stsz``, ``stco``, ``stsc``, ``stts``) of every track, as ``(offset, size)``."""
    return [t[k] for t in _mp4_tracks(data) for k in (b"stsz", b"stco", b"stsc", b"stts") if k in t]


# -- the kinds of damage ----------------------------------------------------------------------


def _media_range(data: bytes, container: str) -> tuple[int, int]:
    """The part of the file that byte damage may hit: past the first 2 % and not the index."""
    lo, hi = max(64, len(data) // 50), len(data)
    index = _index_range(data, container)
    if index is not None:
        pos, size = index
        if pos > len(data) // 2:
            hi = pos
        else:
            lo = max(lo, pos + size)
    return lo, max(lo + 1, hi)


def _flip(data: bytearray, rng: random.Random, lo: int, hi: int, count: int) -> None:
    for _ in range(count):
        at = rng.randrange(lo, hi)
        data[at] ^= 1 << rng.randrange(8)


def _damage_index(data: bytearray, container: str, rng: random.Random) -> None:
    if container in ("mp4", "mov"):
        tables = _sample_tables(bytes(data))
        for pos, size in rng.sample(tables, k=min(2, len(tables))):
            _flip(data, rng, pos + 16, pos + size, 6)
        return
    index = _index_range(bytes(data), container)
    if index is None:
        raise ValueError(f"this {container} file has no index to damage")
    pos, size = index
    _flip(data, rng, pos + 8, pos + size, max(8, size // 64))


def _chunk_firsts(data: bytes, track: dict[bytes, tuple[int, int]]) -> list[int]:
    """The sample numbers that open a chunk of two or more samples (from ``stsc`` and ``stco``)."""
    pos, _ = track[b"stsc"]
    entries = [struct.unpack(">II", data[pos + 16 + 12 * i : pos + 24 + 12 * i]) for i in range(_count(data, pos))]
    offsets = track.get(b"stco") or track.get(b"co64")
    if offsets is None:
        return []
    chunks = _count(data, offsets[0])
    firsts, sample = [], 0
    for i, (first_chunk, per_chunk) in enumerate(entries):
        last_chunk = entries[i + 1][0] - 1 if i + 1 < len(entries) else chunks
        for _ in range(first_chunk, last_chunk + 1):
            if per_chunk > 1:
                firsts.append(sample)
            sample += per_chunk
    return firsts


def _count(data: bytes, box: int) -> int:
    """The entry count of a full box with a plain table (``stsc``, ``stco``)."""
    return int(struct.unpack(">I", data[box + 12 : box + 16])[0])


def _damage_sample_size(data: bytearray, rng: random.Random) -> None:
    """Make one audio sample huge: one that opens a chunk, so the samples after it in the chunk
    are placed past the end of the file (where FFmpeg's demuxer takes the end of data for the end)."""
    raw = bytes(data)
    audio = [t for t in _mp4_tracks(raw) if b"hdlr" in t and _handler(raw, t[b"hdlr"]) == b"soun" and b"stsz" in t]
    candidates = []
    for t in audio:
        pos, _ = t[b"stsz"]
        count = struct.unpack(">I", raw[pos + 16 : pos + 20])[0]
        if struct.unpack(">I", raw[pos + 12 : pos + 16])[0] == 0:  # a table, not one size for all
            candidates += [pos + 20 + 4 * k for k in _chunk_firsts(raw, t) if count // 4 <= k <= count * 3 // 5]
    if not candidates:
        raise ValueError("sample-size damage needs an MP4/MOV audio track with chunks of several samples")
    entry = rng.choice(candidates)
    data[entry + 1] ^= 0x7F  # tens of megabytes: past the end of any test file


def damage(src: Path, dst: Path, kind: str, seed: int) -> Path:
    """Write a damaged copy of ``src`` to ``dst`` (the container is ``src``'s suffix); return ``dst``."""
    container = src.suffix.lstrip(".").lower()
    rng = random.Random(f"{kind}:{container}:{seed}")
    data = bytearray(src.read_bytes())
    lo, hi = _media_range(bytes(data), container)
    span = hi - lo
    if kind == "flip":
        _flip(data, rng, lo, hi, 60)
    elif kind in ("zero", "remove", "duplicate"):
        length = rng.randrange(span // 100 + 1, span // 20 + 2)
        at = rng.randrange(lo, max(lo + 1, hi - length))
        if kind == "zero":
            data[at : at + length] = bytes(length)
        elif kind == "remove":
            del data[at : at + length]
        else:
            data[at:at] = data[at : at + length]
    elif kind == "index":
        _damage_index(data, container, rng)
    elif kind == "sample-size":
        _damage_sample_size(data, rng)
    elif kind == "truncate":
        del data[rng.randrange(len(data) // 3, len(data) * 4 // 5) :]
    else:
        raise ValueError(f"unknown kind of damage {kind!r} (one of {', '.join(KINDS)})")
    dst.write_bytes(bytes(data))
    return dst


@dataclass(frozen=True)
class Damaged:
    """One file of the corpus: what was done to which clip."""

    path: Path
    source: Path
    container: str
    kind: str
    seed: int


def make_source(path: Path, frames: int = 100, audio_tracks: int = 2, size: tuple[int, int] = (256, 144)) -> Path:
    """A clip to damage: the moving face, ``audio_tracks`` tone tracks (the second at 24 kHz, as a
    commentary track might be, so the MP4 muxer writes the first in chunks of several samples),
    keyframes every 25 frames. The same bytes every time: one encoder thread, FFmpeg's bitexact
    muxing, and a width whose chroma rows need no padding (x264 reads the padding PyAV leaves
    unset: at 192 pixels wide its output changes from run to run).

    The codecs are the container's usual ones: H.264 + AAC (MP4, MOV, MKV), MPEG-4 Part 2 + MP3
    (AVI), VP9 + Opus (WebM). The MP4 has its index first (as web uploads do), the MOV last (as
    cameras write it).
    """
    import math

    from testkit.clips import make_face_clip

    container = path.suffix.lstrip(".").lower()
    codec = {"avi": "mpeg4", "webm": "libvpx-vp9"}.get(container, "libx264")
    audio = {"avi": "libmp3lame", "webm": "libopus"}.get(container, "aac")
    make_face_clip(
        path,
        frames=frames,
        sample_rate=[48000, 24000][:audio_tracks] + [48000] * max(0, audio_tracks - 2),
        size=size,
        face_scale=0.3,
        trajectory=lambda i: (20 * math.sin(i / 9), 10 * math.cos(i / 7), 0.0),
        codec=codec,
        audio=audio,
        audio_tracks=audio_tracks,
        gop=25,
        container_options={"fflags": "+bitexact", **({"movflags": "+faststart"} if container == "mp4" else {})},
        threads=1,
    )
    return path


def make_corpus(
    folder: Path,
    seeds: Sequence[int] = (0, 1),
    containers: Sequence[str] = CONTAINERS,
    kinds: Sequence[str] = KINDS,
    frames: int = 100,
) -> list[Damaged]:
    """Sources in ``folder`` (one per container) and their damaged copies: every kind, every seed."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Damaged] = []
    for container in containers:
        src = make_source(folder / f"source.{container}", frames=frames)
        for kind in kinds:
            if kind == "sample-size" and container not in ("mp4", "mov"):
                continue
            for seed in seeds:
                dst = damage(src, folder / f"{kind}-{seed}.{container}", kind, seed)
                out.append(Damaged(dst, src, container, kind, seed))
    return out


def ffmpeg_cli() -> str:
    """The ffmpeg command-line tool's path; FileNotFoundError where it is not installed."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("the ffmpeg command-line tool is not installed (Debian: apt-get install ffmpeg)")
    return ffmpeg


def run_ffmpeg(args: list[str], timeout: float) -> None:
    """Run the ffmpeg CLI quietly on ``args``, overwriting its outputs; an error raises."""
    subprocess.run([ffmpeg_cli(), "-nostdin", "-v", "error", "-y", *args], check=True, timeout=timeout)


def ffmpeg_frames(path: Path) -> int:
    """How many video frames the ffmpeg command-line tool decodes from ``path`` (``ffmpeg -i PATH
    -f null -``): the yardstick for damaged files. Raises FileNotFoundError without ``ffmpeg``."""
    out = subprocess.run(
        [ffmpeg_cli(), "-nostdin", "-v", "quiet", "-i", str(path), "-f", "null", "-progress", "pipe:1", "-"],
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    counts = re.findall(r"^frame=(\d+)", out, re.M)
    return int(counts[-1]) if counts else 0
