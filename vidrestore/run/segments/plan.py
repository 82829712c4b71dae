"""Cutting a long video at its keyframes into segments (demuxing only, no decoding)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from vidrestore.config import Config
from vidrestore.errors import InputError
from vidrestore.io.probe import main_video_stream, open_input

__all__ = ["WHOLE_HINT", "Plan", "Segment", "plan_segments", "warm_ahead"]

WHOLE_HINT = "run it whole with --set pipeline.segment_seconds=0"


@dataclass(frozen=True)
class Segment:
    """Frames ``first_frame`` .. ``first_frame + frames - 1`` of a video: times ``start`` (a keyframe)
    up to ``end`` (the next segment's start; None: the end of the file), in the video's time base.
    Decoding starts at the keyframe ``seek`` (None: the file's start), ``warm`` frames before."""

    index: int
    start: int
    end: int | None
    first_frame: int
    frames: int
    seek: int | None


@dataclass
class Plan:
    """The segments of one input, or why it runs whole."""

    segments: list[Segment]
    time_base: Fraction
    times: list[int]  # every frame's time, in order (what a frame's index is looked up in)
    whole: str | None = None  # why the input runs as one piece (None: it is cut)

    @property
    def frames(self) -> int:
        return len(self.times)


def warm_ahead(config: Config) -> tuple[int, int]:
    """Frames decoded and run before a segment (warm-up) and after it (look-ahead)."""
    s = config.smoothing
    warm = s.window + s.max_gap + 12  # tracks found and smoothed; fusion's history decays (0.6^12 < 0.3%)
    ahead = s.window // 2 + s.max_gap + s.fade_frames + 2  # the smoother's window, gap filling, fades
    return warm, ahead


def plan_segments(src: Path, seconds: float, warm: int) -> Plan:
    """Cut ``src`` at keyframes into segments of about ``seconds`` (demuxing only, no decoding)."""
    container = open_input(src)
    try:
        video = main_video_stream(container.streams.video)
        if video is None:
            raise InputError(f"{src}: has no video stream")
        tb = video.time_base or Fraction(1, 90000)
        times: list[int] = []
        keys: list[int] = []
        why = None
        latest: int | None = None
        try:
            for packet in container.demux(video):
                if not packet.size:
                    continue
                if packet.pts is None:
                    why = "video packets without a time"
                    break
                if packet.is_corrupt:
                    why = "damaged video packets"
                    break
                if latest is not None and packet.pts < latest - round(1 / tb):
                    why = "video times that jump back"
                    break
                latest = packet.pts if latest is None else max(latest, packet.pts)
                times.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except av.error.FFmpegError as exc:
            why = f"a demuxing error ({exc.strerror or exc})"
    finally:
        container.close()
    times.sort()
    if why is None and len(set(times)) != len(times):
        why = "video frames sharing a time"
    if why is not None or not times:
        return Plan([], tb, times, whole=why or "no video packets")
    cuts = [times[0]]
    step = round(seconds / tb) if seconds > 0 else 0
    end = times[-1]
    for key in sorted(set(keys)):
        if step and key >= cuts[-1] + step and end - key >= step // 2:
            cuts.append(key)
    if len(cuts) == 1:
        return Plan([], tb, times, whole=f"shorter than {2 * seconds:g} s" if step else "segment_seconds is 0")
    segments = []
    for k, start in enumerate(cuts):
        stop = cuts[k + 1] if k + 1 < len(cuts) else None
        first = bisect.bisect_left(times, start)
        last = bisect.bisect_left(times, stop) if stop is not None else len(times)
        seek = None
        if k > 0:
            warm_from = times[max(0, first - warm)]
            seek = max((key for key in keys if key <= warm_from), default=None)
        segments.append(Segment(k, start, stop, first, last - first, seek))
    return Plan(segments, tb, times)
