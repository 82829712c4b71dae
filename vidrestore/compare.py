"""``vidrestore compare``: the original and the restored side by side (or split by a line), to look at.

The output keeps the original's frames, timestamps and audio (it is written like a restore run
whose "restoration" is the pairing), so the two play in step with the sound.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from vidrestore.config import Config
from vidrestore.control import RunControl
from vidrestore.errors import InputError
from vidrestore.io.images import is_image, read_image
from vidrestore.records import Frame
from vidrestore.run.file import open_reader, restore_file
from vidrestore.stats import RunStats

__all__ = ["compare_paths", "mismatches", "pair_images"]

Layout = Literal["side", "split"]


def pair_images(original: np.ndarray, restored: np.ndarray, layout: Layout) -> np.ndarray:
    """One picture of the two: ``side`` by side (twice as wide), or ``split`` at the middle by a line
    (the original's left half, the restored right half). The restored picture is fitted to the
    original's size first (a ``--scale`` run is larger)."""
    h, w = original.shape[:2]
    if restored.shape[:2] != (h, w):
        restored = cv2.resize(restored, (w, h), interpolation=cv2.INTER_AREA)
    top = np.iinfo(original.dtype).max
    if layout == "side":
        out = np.ascontiguousarray(np.hstack([original, restored]))
        labels = ((8, "original"), (w + 8, "restored"))
    else:
        out = original.copy()
        out[:, w // 2 :] = restored[:, w // 2 :]
        out[:, max(w // 2 - 1, 0) : w // 2 + 1] = top
        labels = ((8, "original"), (w // 2 + 8, "restored"))
    scale = max(h / 720, 0.4)
    for x, text in labels:
        for colour, thick in ((0, 3), (top, 1)):
            cv2.putText(out, text, (x, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (colour,) * 3, thick)
    return out


def mismatches(original: Path, restored: Path, config: Config) -> list[str]:
    """Why ``restored`` may not be a restoration of ``original``: a different size (other than the
    2x or 4x of ``output.scale``), frame count or duration (by more than a frame). Empty when they match."""
    out = []
    if is_image(original) or is_image(restored):
        sizes = [read_image(p).frame.image.shape[1::-1] for p in (original, restored)]
        frames, seconds, frame_s = [1, 1], [0.0, 0.0], 1.0
    else:
        infos = []
        for p in (original, restored):
            reader = open_reader(p, config, RunControl(), copy_streams=False)
            try:
                infos.append(reader.info)
            finally:
                reader.close()
        sizes = [(i.width, i.height) for i in infos]
        frames = [i.frames for i in infos]
        seconds = [i.duration_s or 0.0 for i in infos]
        rate = infos[0].rate
        frame_s = 1 / float(rate) if rate else 0.04
    (w0, h0), (w1, h1) = sizes
    if (w1, h1) not in [(w0 * k, h0 * k) for k in (1, 2, 4)]:
        out.append(f"{restored} is {w1}x{h1} and {original} {w0}x{h0}: not the same picture at scale 1, 2 or 4")
    if frames[0] and frames[1] and abs(frames[0] - frames[1]) > 1:
        out.append(f"{restored} has {frames[1]} frames and {original} {frames[0]}")
    if seconds[0] and seconds[1] and abs(seconds[0] - seconds[1]) > frame_s * 1.5:
        out.append(f"{restored} lasts {seconds[1]:.2f} s and {original} {seconds[0]:.2f} s")
    return out


def compare_paths(original: Path, restored: Path, dst: Path, config: Config, layout: Layout = "side") -> int:
    """Write the pairing of ``original`` and ``restored`` to ``dst``; return the frames written."""
    if is_image(original) != is_image(restored):
        raise InputError(f"{original} and {restored}: one is an image and the other a video")
    stats = RunStats()

    def pair(frames: Iterator[Frame]) -> Iterator[Frame]:
        if is_image(restored):
            yield from (
                replace(f, image=pair_images(f.rgb(), read_image(restored).frame.rgb(), layout)) for f in frames
            )
            return
        control = RunControl()
        reader = open_reader(restored, config, control, copy_streams=False)
        try:
            other = iter(reader)
            for frame in frames:
                mate = next(other, None)
                if mate is None:
                    raise InputError(f"{restored} has fewer frames than {original} (from frame {frame.index})")
                picture = frame.rgb()
                yield replace(frame, image=pair_images(picture, _as(mate.rgb(), picture), layout))
        finally:
            reader.close()
        if control.error is not None:
            raise control.error

    restore_file(original, dst, config, pair, stats)
    return stats.frames


def _as(image: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``image`` in ``like``'s sample type (8 or 16 bits)."""
    if image.dtype == like.dtype:
        return image
    if like.dtype == np.uint16:
        return image.astype(np.uint16) * 257
    return (image // 257).astype(np.uint8)
