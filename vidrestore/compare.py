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

__all__ = ["compare_paths", "pair_images"]

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


def compare_paths(original: Path, restored: Path, dst: Path, config: Config, layout: Layout = "side") -> int:
    """Write the pairing of ``original`` and ``restored`` to ``dst``; return the frames written."""
    if is_image(original) != is_image(restored):
        raise InputError(f"{original} and {restored}: one is an image and the other a video")
    stats = RunStats()

    def pair(frames: Iterator[Frame]) -> Iterator[Frame]:
        if is_image(restored):
            yield from (
                replace(f, image=pair_images(f.image, read_image(restored).frame.image, layout)) for f in frames
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
                yield replace(frame, image=pair_images(frame.image, _as(mate.image, frame.image), layout))
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
