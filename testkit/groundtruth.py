"""Texture flicker with known ground truth, for the tests and ``bench.temporal``.

A real face (``skimage.data.astronaut()``) moves along a known path: slowly first, then fast with
its mouth opening and closing (a local warp). It goes through a "restorer" that returns the clean
face plus independent invented texture on every call (noise shaped like detail: GAN
hallucination), so the clean face is known, and so is the motion between frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np
import torch

from testkit.clips import ASTRONAUT_LANDMARKS, astronaut
from vidrestore.records import Face, Frame
from vidrestore.stages.fuse import TemporalFusion
from vidrestore.stages.networks import RestorerNeeds
from vidrestore.stages.restore import RestoreStage
from vidrestore.stats import RunStats

__all__ = ["SIZE", "SLOW_FRAMES", "GroundTruthClip", "Hallucinating", "ground_truth_clip", "restore_clip"]

SLOW_FRAMES, FAST_FRAMES = 14, 8
SIZE = (384, 384)  # w, h
_MOUTH = ASTRONAUT_LANDMARKS[3:5].mean(axis=0)
_SCALE = 1.6  # astronaut pixels -> frame pixels


class Hallucinating:
    """The clean face, plus texture invented anew on every call (independent per face and call)."""

    needs = RestorerNeeds()
    size = 512

    def __init__(self, amount: float = 0.05, seed: int = 0) -> None:
        self.amount = amount
        self.rng = torch.Generator().manual_seed(seed)

    def restore(self, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        noise = torch.randn(faces.shape, generator=self.rng)
        detail = torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1) * 3 * self.amount
        return (faces + detail).clamp(0, 1)


def _mouth_open(image: np.ndarray, amount: float) -> np.ndarray:
    """Stretch the mouth region vertically by ``amount`` (0: closed) with a smooth local warp."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = _MOUTH
    window = np.exp(-(((xs - cx) / 22) ** 2 + ((ys - cy) / 14) ** 2))
    src_y = ys - (ys - cy) * amount * window / (1 + amount)
    return cv2.remap(image, xs, src_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _placement(i: int) -> np.ndarray:
    """Frame i's affine from the astronaut image into the frame: slow drift, then fast motion."""
    if i < SLOW_FRAMES:
        dx, dy = 0.4 * i, 0.2 * i
    else:
        k = i - SLOW_FRAMES + 1
        dx, dy = 0.4 * SLOW_FRAMES + 7 * k, 0.2 * SLOW_FRAMES - 4 * k
    w, h = SIZE
    centre = ASTRONAUT_LANDMARKS.mean(axis=0)
    return np.array([[_SCALE, 0, w / 2 + dx - _SCALE * centre[0]], [0, _SCALE, h / 2 + dy - _SCALE * centre[1]]])


@dataclass
class GroundTruthClip:
    """The clean frames, the affine of each (astronaut image -> frame) and the input (clean, or with
    per-frame noise as in a tape transfer)."""

    clean: list[np.ndarray]
    affines: list[np.ndarray]
    input: list[np.ndarray]

    @property
    def slow(self) -> range:
        return range(2, SLOW_FRAMES)

    @property
    def fast(self) -> range:
        return range(SLOW_FRAMES, len(self.clean))

    def inner_mask(self, i: int) -> np.ndarray:
        """The face's inner area in frame i: a disc around the astronaut's face centre."""
        w, h = SIZE
        m = self.affines[i]
        mask = np.zeros((h, w), np.uint8)
        c = ASTRONAUT_LANDMARKS.mean(axis=0) @ m[:, :2].T + m[:, 2]
        cv2.circle(mask, (int(c[0]), int(c[1])), int(45 * _SCALE), 1, -1)
        return mask.astype(bool)

    def mouth_mask(self, i: int) -> np.ndarray:
        w, h = SIZE
        m = self.affines[i]
        mask = np.zeros((h, w), np.uint8)
        c = _MOUTH @ m[:, :2].T + m[:, 2]
        cv2.ellipse(mask, (int(c[0]), int(c[1])), (int(30 * _SCALE), int(22 * _SCALE)), 0, 0, 360, 1, -1)
        return mask.astype(bool)

    def flicker(self, out: list[np.ndarray], i: int) -> float:
        """Frame i against frame i-1 moved by the known motion, over the face but its mouth (which
        really changes): the true warping error, grey levels."""
        prev_to_cur = self.affines[i] @ np.vstack([cv2.invertAffineTransform(self.affines[i - 1]), [0, 0, 1]])
        moved = cv2.warpAffine(out[i - 1], prev_to_cur, SIZE, flags=cv2.INTER_LINEAR)
        mask = self.inner_mask(i) & ~self.mouth_mask(i)
        return float(np.abs(out[i].astype(np.float32) - moved.astype(np.float32))[mask].mean())

    def error(self, out: list[np.ndarray], i: int, mouth: bool = False) -> float:
        """Frame i against the clean face, over the face (or only around the mouth), grey levels."""
        mask = self.mouth_mask(i) if mouth else self.inner_mask(i)
        return float(np.abs(out[i].astype(np.float32) - self.clean[i].astype(np.float32))[mask].mean())


def ground_truth_clip(noise: float = 0.0, seed: int = 0) -> GroundTruthClip:
    """The clip; ``noise`` > 0 adds independent per-frame grain of that many grey levels to the input."""
    src = astronaut()
    rng = np.random.default_rng(seed)
    clean, affines, inputs = [], [], []
    for i in range(SLOW_FRAMES + FAST_FRAMES):
        face = src if i < SLOW_FRAMES else _mouth_open(src, 0.35 * abs(math.sin((i - SLOW_FRAMES + 1) * 1.3)))
        m = _placement(i)
        frame = cv2.warpAffine(face, m, SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        clean.append(frame)
        affines.append(m)
        if noise > 0:
            grain = cv2.GaussianBlur(np.asarray(rng.normal(0, noise * 1.6, frame.shape), np.float32), (0, 0), 0.7)
            noisy: np.ndarray = np.clip(np.asarray(frame, np.float32) + grain, 0, 255)
            frame = noisy.astype(np.uint8)
        inputs.append(frame)
    return GroundTruthClip(clean, affines, inputs)


def restore_clip(
    clip: GroundTruthClip, temporal: TemporalFusion | None, stats: RunStats | None = None, seed: int = 0
) -> list[np.ndarray]:
    """The clip's input through vidrestore's restore stage with the hallucinating restorer, the
    landmarks known (no detector); ``temporal`` None: per frame."""
    stage = RestoreStage(
        Hallucinating(seed=seed),  # type: ignore[arg-type]
        torch.device("cpu"),
        batch_size=4,
        temporal=temporal,
        stats=stats,
    )
    items = []
    for i, (img, m) in enumerate(zip(clip.input, clip.affines, strict=True)):
        lm = (ASTRONAUT_LANDMARKS @ m[:, :2].T + m[:, 2]).astype(np.float32)
        box = np.array([lm[:, 0].min() - 30, lm[:, 1].min() - 40, lm[:, 0].max() + 30, lm[:, 1].max() + 40], np.float32)
        items.append(Frame(i, i, Fraction(1, 25), img, faces=(Face(0, 1.0, box, lm, lm.copy()),)))
    return [frame.image for frame in stage.run(iter(items))]
