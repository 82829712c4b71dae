"""Detection over a video's frames: in batches of one picture size and form, each picture turned
upright (its display rotation) first, and the faces handed on in square (display) pixels."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
from torch.profiler import record_function

from vidrestore.errors import PipelineError, VidrestoreError
from vidrestore.geometry import square_pixels
from vidrestore.records import Frame
from vidrestore.stages.detect import Detections, Detector, thumbnail
from vidrestore.stages.picture import same_form

__all__ = ["detect_frames"]


def _rotate_points(points: np.ndarray, k: int, h: int, w: int) -> np.ndarray:
    """Map ``(..., 2)`` points in ``np.rot90(img, k)`` back to ``img`` (``h`` x ``w``) pixels."""
    out = points.copy()
    for step in range(k % 4, 0, -1):
        # np.rot90 turns a picture of width ww a quarter counter-clockwise: (x, y) there
        # came from (ww - 1 - y, x) in the picture before the turn
        ww = h if (step - 1) % 2 else w
        x, y = out[..., 0].copy(), out[..., 1].copy()
        out[..., 0], out[..., 1] = ww - 1 - y, x
    return out


def detect_frames(
    detector: Detector, frames: Iterator[Frame], batch: int, timer: Callable[[str, float], None]
) -> Iterator[tuple[Frame, Detections]]:
    """Detect in batches of ``batch`` frames; pictures are turned upright (display rotation) first."""
    held: list[Frame] = []

    def flush() -> Iterator[tuple[Frame, Detections]]:
        t0 = time.perf_counter()
        k = (held[0].rotation // 90) % 4  # turned pictures are made RGB on the host first
        images = [np.ascontiguousarray(np.rot90(f.rgb(), k)) for f in held] if k else [f.image for f in held]
        sar = float(held[0].sar)
        try:
            with record_function("vidrestore:detect"):
                found = detector.detect(images, sar if k % 2 == 0 else 1 / sar)
        except (VidrestoreError, KeyboardInterrupt):
            raise
        except Exception as exc:  # name the frames being detected: detection may run ahead of the output
            raise PipelineError.during("detect", exc, held[0].index, held[-1].index, "detecting") from exc
        if k:  # the uploaded pictures are turned ones: not the frames' own
            h, w = held[0].size
            found = [replace(_unrotate(d, k, h, w), picture=None) for d in found]
        found = [d if d.thumb is not None else replace(d, thumb=thumbnail(f.image)) for f, d in zip(held, found)]
        if sar != 1.0:  # from here on, faces are in square (display) pixels
            found = [_to_square(d, sar) for d in found]
        timer("detect", time.perf_counter() - t0)
        for f, d in zip(held, found):  # the frame takes its uploaded picture along, to cross only once
            yield (f if d.picture is None else replace(f, on_device=d.picture)), replace(d, picture=None)

    for frame in frames:
        if held and (
            not same_form(frame.image, held[0].image) or (frame.rotation, frame.sar) != (held[0].rotation, held[0].sar)
        ):
            yield from flush()
            held = []
        held.append(frame)
        if len(held) >= batch:
            yield from flush()
            held = []
    if held:
        yield from flush()


def _to_square(d: Detections, sar: float) -> Detections:
    """Detections in stored pixels -> in square (display) pixels (:func:`geometry.square_pixels`)."""
    if not len(d):
        return d
    m = square_pixels(sar)
    boxes = d.boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]] * m[0, 0] + m[0, 2]
    points = d.landmarks.copy()
    points[..., 0] = points[..., 0] * m[0, 0] + m[0, 2]
    return replace(d, boxes=boxes.astype(np.float32), landmarks=points.astype(np.float32))


def _unrotate(d: Detections, k: int, h: int, w: int) -> Detections:
    if not len(d):
        return d
    corners = np.stack([d.boxes[:, [0, 1]], d.boxes[:, [2, 1]], d.boxes[:, [0, 3]], d.boxes[:, [2, 3]]], axis=1)
    c = _rotate_points(corners, k, h, w)
    boxes = np.concatenate([c.min(axis=1), c.max(axis=1)], axis=1).astype(np.float32)
    return Detections(boxes, d.scores, _rotate_points(d.landmarks, k, h, w).astype(np.float32), d.thumb, d.picture)
