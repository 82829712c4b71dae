"""Reading back what a clip holds, independently of vidrestore's reader."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass
class Probe:
    frames: int = 0
    pts: list[int] = field(default_factory=list)
    time_base: Fraction = Fraction(1)
    video_start_s: float = 0.0
    video_end_s: float = 0.0
    width: int = 0
    height: int = 0
    pix_fmt: str = ""
    codec: str = ""
    rotation: int = 0
    color: tuple[int, int, int, int] = (0, 0, 0, 0)
    video_language: str | None = None
    container_metadata: dict[str, str] = field(default_factory=dict)
    audio: dict[int, list[str]] = field(default_factory=dict)  # per audio track: sha1 of each packet
    audio_span_s: dict[int, tuple[float, float]] = field(default_factory=dict)
    audio_languages: list[str | None] = field(default_factory=list)
    subtitles: list[tuple[str, str | None, list[str]]] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)

    @property
    def frame_duration_s(self) -> float:
        return (self.video_end_s - self.video_start_s) / max(self.frames, 1)


def probe(path: Path, keep_images: bool = False) -> Probe:
    out = Probe()
    with av.open(str(path)) as c:
        # the main video: not cover art (an attached picture, or a one-picture MJPEG track)
        v = next(s for s in c.streams.video if s.codec_context.name != "mjpeg" and not s.disposition & 1024)
        out.time_base = v.time_base
        out.codec = v.codec_context.name
        out.width, out.height, out.pix_fmt = v.codec_context.width, v.codec_context.height, v.codec_context.pix_fmt
        cc = v.codec_context
        out.color = (int(cc.color_primaries), int(cc.color_trc), int(cc.colorspace), int(cc.color_range))
        out.video_language = v.metadata.get("language")
        out.container_metadata = dict(c.metadata)
        audio_idx = [s.index for s in c.streams if s.type == "audio"]
        out.audio_languages = [c.streams[i].metadata.get("language") for i in audio_idx]
        subs = {
            s.index: (s.codec_context.name if s.codec_context else "?", s.metadata.get("language"), [])
            for s in c.streams
            if s.type == "subtitle"
        }
        for i in audio_idx:
            out.audio[i] = []
        last_dur = 0
        for packet in c.demux():
            if packet.size == 0:
                continue
            s = packet.stream
            if s.type == "audio":
                out.audio[s.index].append(hashlib.sha1(bytes(packet)).hexdigest())
                t0 = float(packet.pts * packet.time_base)
                t1 = t0 + float((packet.duration or 0) * packet.time_base)
                lo, hi = out.audio_span_s.get(s.index, (t0, t1))
                out.audio_span_s[s.index] = (min(lo, t0), max(hi, t1))
            elif s.type == "subtitle":
                subs[s.index][2].append(hashlib.sha1(bytes(packet)).hexdigest())
            elif s.index == v.index:
                for frame in v.decode(packet):
                    out.pts.append(frame.pts)
                    out.rotation = int(frame.rotation)
                    last_dur = frame.duration or 0
                    if keep_images:
                        out.images.append(frame.to_ndarray(format="rgb24"))
        for frame in v.decode(None):
            out.pts.append(frame.pts)
            last_dur = frame.duration or 0
            if keep_images:
                out.images.append(frame.to_ndarray(format="rgb24"))
        out.frames = len(out.pts)
        out.subtitles = list(subs.values())
        if out.pts:
            out.video_start_s = float(out.pts[0] * v.time_base)
            out.video_end_s = float((out.pts[-1] + last_dur) * v.time_base)
    return out


def seconds(p: Probe) -> list[float]:
    return [float(x * p.time_base) for x in p.pts]


def best_effort_seconds(path: Path) -> list[float | None]:
    """FFmpeg's own best-effort frame times (ffprobe), the independent reference for our timestamp rule;
    None where FFmpeg has no time for a frame (the last frame of an AVI file, for one)."""
    import os
    import shutil
    import subprocess

    import pytest

    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have ffprobe (.ci/run installs Debian's ffmpeg package)")
        pytest.skip("ffprobe is not installed (apt-get install ffmpeg): no independent reference here")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=best_effort_timestamp_time"]
        + ["-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    values = [line.strip().strip(",") for line in out.splitlines() if line.strip()]
    return [None if v in ("N/A", "") else float(v) for v in values]  # empty: a frame FFmpeg gives no time
