"""Clips with a real face for tests, benchmarks and the sample clip: ``skimage.data.astronaut()``
(from the test extra) moved along a known trajectory and degraded (blur, noise, compression), with
audio. Nothing here downloads anything, and none of it ships in the wheel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ASTRONAUT_LANDMARKS", "FaceClip", "astronaut", "make_face_clip", "write_clip"]

# The astronaut's 5 landmarks in skimage.data.astronaut() (512x512), measured once with CenterFace.
ASTRONAUT_LANDMARKS = np.array(
    [[203.2, 101.7], [247.0, 104.5], [223.3, 125.1], [203.4, 142.3], [241.3, 144.4]], dtype=np.float64
)


def astronaut() -> np.ndarray:
    """``skimage.data.astronaut()``: 512x512 RGB uint8 with one real face."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@dataclass(frozen=True)
class FaceClip:
    """What :func:`make_face_clip` wrote: per-frame true landmarks and timing."""

    path: Path
    landmarks: np.ndarray  # (frames, 5, 2) true landmark positions
    pts: list[int]
    time_base: Fraction
    width: int
    height: int


def _place(canvas_hw: tuple[int, int], face_scale: float, dx: float, dy: float, angle: float) -> np.ndarray:
    """Affine (2x3) placing the astronaut image into a canvas: scale, rotate about its face, shift."""
    h, w = canvas_hw
    centre = ASTRONAUT_LANDMARKS.mean(axis=0)
    c, s = math.cos(angle) * face_scale, math.sin(angle) * face_scale
    rot = np.array([[c, -s], [s, c]])
    target = np.array([w / 2 + dx, h / 2 + dy])
    return np.hstack([rot, (target - rot @ centre)[:, None]])


def make_face_clip(
    path: Path,
    *,
    frames: int = 30,
    size: tuple[int, int] = (320, 240),
    face_scale: float = 0.6,
    trajectory: Callable[[int], tuple[float, float, float]] | None = None,
    rate: int = 25,
    codec: str = "libx264",
    crf: int = 23,
    blur: float = 0.0,
    noise: float = 0.0,
    audio: bool | str = True,
    audio_tracks: int = 1,
    gop: int | None = None,
    container_options: dict[str, str] | None = None,
    sample_rate: int | Sequence[int] = 48000,
    threads: int = 0,
    blank: Sequence[int] = (),
    seed: int = 0,
) -> FaceClip:
    """Write a clip of the astronaut's face moving along ``trajectory(i) -> (dx, dy, angle)``.

    Degradations: Gaussian ``blur`` (sigma, px), ``noise`` (std, 0-255 scale) and the
    encoder's compression (``crf``). Frames listed in ``blank`` show no face (background
    only). Returns the true landmark positions per frame.
    """
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    src = astronaut()
    traj = trajectory or (lambda i: (0.0, 0.0, 0.0))
    truths, images = [], []
    background = np.full((h, w, 3), (70, 90, 110), np.uint8)
    for i in range(frames):
        dx, dy, angle = traj(i)
        m = _place((h, w), face_scale, dx, dy, angle)
        img: np.ndarray
        if i in blank:
            img = background.copy()
        else:
            img = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(70, 90, 110))
        if blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), blur)
        if noise > 0:
            img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        images.append(img)
        truths.append(ASTRONAUT_LANDMARKS @ m[:, :2].T + m[:, 2])
    tb = Fraction(1, rate * 512)
    pts = [i * 512 for i in range(frames)]
    write_clip(
        path,
        images,
        pts=pts,
        time_base=tb,
        rate=rate,
        codec=codec,
        crf=crf,
        audio=audio,
        audio_tracks=audio_tracks,
        gop=gop,
        container_options=container_options,
        sample_rate=sample_rate,
        threads=threads,
    )
    return FaceClip(path, np.array(truths), pts, tb, w, h)


def write_clip(
    path: Path,
    images: Sequence[np.ndarray],
    *,
    pts: Sequence[int] | None = None,
    time_base: Fraction = Fraction(1, 25),
    rate: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    crf: int = 23,
    audio: bool | str = True,
    audio_tracks: int = 1,
    sample_rate: int | Sequence[int] = 48000,
    rotation: int = 0,
    metadata: dict[str, str] | None = None,
    bt709: bool = False,
    gop: int | None = None,
    container_options: dict[str, str] | None = None,
    threads: int = 0,
) -> None:
    """Encode ``images`` (RGB uint8) with PyAV, plus ``audio_tracks`` tone tracks (``sample_rate``:
    one rate for all, or one per track).

    ``audio`` True picks the container's usual codec (AAC, Opus for WebM); a string names one.
    """
    import av

    pts = list(pts) if pts is not None else list(range(len(images)))
    h, w = images[0].shape[:2]
    rates = [sample_rate] * audio_tracks if isinstance(sample_rate, int) else list(sample_rate)
    with av.open(str(path), "w", options=container_options or {}) as c:
        if metadata:
            c.metadata.update(metadata)
        v: Any = c.add_stream(codec, rate=rate)
        v.width, v.height, v.pix_fmt = w, h, pix_fmt
        v.time_base = time_base
        v.codec_context.time_base = time_base
        if codec in ("libx264", "libx265", "libvpx-vp9"):
            v.options = {"crf": str(crf)}
        if gop:
            v.codec_context.gop_size = gop
        if threads:  # one thread: the same bytes every time (x264 and libvpx are not, with several)
            v.codec_context.thread_count = threads
        if rotation:
            v.set_display_rotation(rotation)
        if bt709:  # tag the stream BT.709, limited range (as HD cameras do)
            cc = v.codec_context
            cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 1, 1, 1, 1
        streams: list[Any] = []
        if audio:
            name = audio if isinstance(audio, str) else ("libopus" if path.suffix == ".webm" else "aac")
            for k in range(audio_tracks):
                a: Any = c.add_stream(name, rate=rates[k], layout="stereo")
                a.metadata["language"] = ("eng", "fra", "deu")[k % 3]
                streams.append(a)
        end_s = float((pts[-1] + (pts[-1] - pts[-2] if len(pts) > 1 else 1)) * time_base)
        ends = [int(end_s * r) for r in rates]
        sent = [0] * len(streams)
        for img, p in zip(images, pts):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pix_fmt != "yuv420p" or bt709:
                frame = frame.reformat(format=pix_fmt, dst_colorspace=1 if bt709 else None)
            frame.pts = p
            frame.time_base = time_base
            c.mux(v.encode(frame))
            t_s = float(p * time_base)
            for k, a in enumerate(streams):
                due = min(ends[k], int((t_s + 0.1) * rates[k]))
                sent[k] = _write_tone(c, a, sent[k], due, rates[k], k)
        for k, a in enumerate(streams):
            sent[k] = _write_tone(c, a, sent[k], ends[k], rates[k], k)
        c.mux(v.encode(None))
        for a in streams:
            c.mux(a.encode(None))


def _write_tone(c: object, stream: object, start: int, stop: int, rate: int, k: int) -> int:
    import av

    chunk = 960
    while start < stop:
        n = min(chunk, stop - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        tone = (0.2 * np.sin(2 * np.pi * (440 + 110 * k) * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        c.mux(stream.encode(frame))  # type: ignore[attr-defined]
        start += n
    return start
