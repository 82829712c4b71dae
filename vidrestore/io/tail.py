"""Decoding the end of a damaged file again, for the frames a frame-threaded decoder drops.

A frame-threaded decoder that meets an error while it drains drops the frames still in flight
(FFmpeg 7/8: up to ``threads - 1`` frames at the end of a damaged file). A second, slice-threaded
decoder recovers them; frames already had are skipped by their time. Seeking to the last frame's
time finds the keyframe before it where the container has an index (MP4, AVI, Matroska); where it
has none (MPEG-TS) it lands on that frame's own packet, with no reference, so the next place to
start from is the last keyframe the first pass sent.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import av.error

from vidrestore.errors import InputError
from vidrestore.io.probe import open_input

__all__ = ["decode_after"]

log = logging.getLogger(__name__)


def decode_after(path: Path, video_index: int, starts: Sequence[int | None], last: int) -> Iterator[av.VideoFrame]:
    """The frames of stream ``video_index`` after time ``last``, decoded from the keyframe at or
    before the first of ``starts`` that gives any (None entries and repeats skipped)."""
    for start in dict.fromkeys(s for s in starts if s is not None):
        found = False
        for frame in _decode_from(path, video_index, start, last):
            found = True
            yield frame
        if found:
            return


def _decode_from(path: Path, video_index: int, target: int, last: int) -> Iterator[av.VideoFrame]:
    try:
        other = open_input(path)
    except InputError:
        return
    with other:
        if video_index >= len(other.streams):  # FLV makes streams as it meets them
            return
        v = other.streams[video_index]
        cc = v.codec_context
        if cc is None:
            return
        cc.thread_type = "SLICE"
        try:
            other.seek(target, stream=v, backward=True)
        except av.error.FFmpegError as exc:
            log.debug("%s: cannot seek to decode the end again: %s", path, exc)
            return
        for packet in itertools.chain(_video_packets(other, v), [None]):
            try:
                frames = v.decode(packet)
            except av.error.FFmpegError:
                continue
            for frame in frames:
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is not None and pts > last:
                    yield frame


def _video_packets(container: Any, video: Any) -> Iterator[Any]:
    """The video packets from where ``container`` stands to where demuxing stops (an error included,
    or a stream the file makes part-way, which PyAV cannot index: FLV does, when damage flips its
    audio flags)."""
    demux = container.demux(video)
    while True:
        try:
            packet = next(demux)
        except (StopIteration, av.error.FFmpegError, IndexError):
            return
        if packet.size:
            yield packet
