"""Temporal fusion against texture flicker, with known ground truth.

A real face (``skimage.data.astronaut()``) moves along a known path: slowly first, then fast with
its mouth opening and closing (a local warp). It goes through a "restorer" that returns the clean
face plus independent invented texture on every call (noise shaped like detail: GAN
hallucination), so the clean face is known, and so is the motion between frames.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import CliResult, Weights
from media import probe

from vidrestore.records import Face, Frame
from vidrestore.stages.networks import RestorerNeeds
from vidrestore.stages.restore import RestoreStage
from vidrestore.stages.temporal import TemporalFusion
from vidrestore.testing import ASTRONAUT_LANDMARKS, FaceClip, astronaut, save_random_weights

Cli = Callable[..., CliResult]

SLOW, FAST = 14, 8
SIZE = (384, 384)  # w, h
MOUTH = ASTRONAUT_LANDMARKS[3:5].mean(axis=0)


class Hallucinating:
    """The clean face, plus texture invented anew on every call (independent per face and call)."""

    needs = RestorerNeeds()
    size = 512

    def __init__(self, amount: float = 0.05) -> None:
        self.amount = amount
        self.rng = torch.Generator().manual_seed(0)

    def restore(self, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        noise = torch.randn(faces.shape, generator=self.rng)
        detail = torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1) * 3 * self.amount
        return (faces + detail).clamp(0, 1)


def _mouth_open(image: np.ndarray, amount: float) -> np.ndarray:
    """Stretch the mouth region vertically by ``amount`` (0: closed) with a smooth local warp."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = MOUTH
    window = np.exp(-(((xs - cx) / 22) ** 2 + ((ys - cy) / 14) ** 2))
    src_y = ys - (ys - cy) * amount * window / (1 + amount)
    return cv2.remap(image, xs, src_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _placement(i: int) -> np.ndarray:
    """Frame i's affine from the astronaut image into the frame: slow drift, then fast motion."""
    if i < SLOW:
        dx, dy = 0.4 * i, 0.2 * i
    else:
        k = i - SLOW + 1
        dx, dy = 0.4 * SLOW + 7 * k, 0.2 * SLOW - 4 * k
    s = 1.6
    w, h = SIZE
    centre = ASTRONAUT_LANDMARKS.mean(axis=0)
    return np.array([[s, 0, w / 2 + dx - s * centre[0]], [0, s, h / 2 + dy - s * centre[1]]])


def _clip() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The clean frames and the affine of each (astronaut image -> frame)."""
    src = astronaut()
    frames, affines = [], []
    for i in range(SLOW + FAST):
        face = src if i < SLOW else _mouth_open(src, 0.35 * abs(math.sin((i - SLOW + 1) * 1.3)))
        m = _placement(i)
        frames.append(cv2.warpAffine(face, m, SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        affines.append(m)
    return frames, affines


def _run(frames: list[np.ndarray], affines: list[np.ndarray], temporal: TemporalFusion | None) -> list[np.ndarray]:
    out = []
    stage = RestoreStage(Hallucinating(), torch.device("cpu"), batch_size=4, temporal=temporal)  # type: ignore[arg-type]
    items = []
    for i, (img, m) in enumerate(zip(frames, affines)):
        lm = (ASTRONAUT_LANDMARKS @ m[:, :2].T + m[:, 2]).astype(np.float32)
        box = np.array([lm[:, 0].min() - 30, lm[:, 1].min() - 40, lm[:, 0].max() + 30, lm[:, 1].max() + 40], np.float32)
        items.append(Frame(i, i, Fraction(1, 25), img, faces=(Face(0, 1.0, box, lm, lm.copy()),)))
    for frame in stage.run(iter(items)):
        out.append(frame.image)
    return out


def _inner_mask(m: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The face's inner area in the frame: a disc around the astronaut's face centre."""
    w, h = SIZE
    mask = np.zeros((h, w), np.uint8)
    c = ASTRONAUT_LANDMARKS.mean(axis=0) @ m[:, :2].T + m[:, 2]
    cv2.circle(mask, (int(c[0]), int(c[1])), int(45 * 1.6 * scale), 1, -1)
    return mask.astype(bool)


def _flicker(out: list[np.ndarray], affines: list[np.ndarray], i: int) -> float:
    """Frame i against frame i-1 moved by the known motion, over the face (no mouth: it really changes)."""
    prev_to_cur = affines[i] @ np.vstack([cv2.invertAffineTransform(affines[i - 1]), [0, 0, 1]])
    moved = cv2.warpAffine(out[i - 1], prev_to_cur, SIZE, flags=cv2.INTER_LINEAR)
    mask = _inner_mask(affines[i]) & ~_mouth_mask(affines[i])
    return float(np.abs(out[i].astype(np.float32) - moved.astype(np.float32))[mask].mean())


def _mouth_mask(m: np.ndarray) -> np.ndarray:
    w, h = SIZE
    mask = np.zeros((h, w), np.uint8)
    c = MOUTH @ m[:, :2].T + m[:, 2]
    cv2.ellipse(mask, (int(c[0]), int(c[1])), (int(30 * 1.6), int(22 * 1.6)), 0, 0, 360, 1, -1)
    return mask.astype(bool)


def _error(out: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(out.astype(np.float32) - clean.astype(np.float32))[mask].mean())


@pytest.fixture(scope="module")
def runs() -> dict[str, object]:
    frames, affines = _clip()
    fusion = TemporalFusion(strength=0.6)
    return {
        "frames": frames,
        "affines": affines,
        "per_frame": _run(frames, affines, None),
        "fused": _run(frames, affines, fusion),
        "fusion": fusion,
    }


def test_fusion_cuts_flicker_on_still_parts_and_not_worse_on_fast_ones(runs: dict[str, object]) -> None:
    affines: list[np.ndarray] = runs["affines"]  # type: ignore[assignment]
    per, fused = runs["per_frame"], runs["fused"]
    slow = range(2, SLOW)
    fast = range(SLOW, SLOW + FAST)
    f_per = np.mean([_flicker(per, affines, i) for i in slow])  # type: ignore[arg-type]
    f_fused = np.mean([_flicker(fused, affines, i) for i in slow])  # type: ignore[arg-type]
    assert f_fused <= 0.5 * f_per, (f_fused, f_per)
    g_per = np.mean([_flicker(per, affines, i) for i in fast])  # type: ignore[arg-type]
    g_fused = np.mean([_flicker(fused, affines, i) for i in fast])  # type: ignore[arg-type]
    assert g_fused <= g_per * 1.02, (g_fused, g_per)
    assert runs["fusion"].fused > 0  # type: ignore[attr-defined]


def test_fusion_is_closer_to_the_clean_face_and_does_not_ghost(runs: dict[str, object]) -> None:
    frames: list[np.ndarray] = runs["frames"]  # type: ignore[assignment]
    affines: list[np.ndarray] = runs["affines"]  # type: ignore[assignment]
    per: list[np.ndarray] = runs["per_frame"]  # type: ignore[assignment]
    fused: list[np.ndarray] = runs["fused"]  # type: ignore[assignment]
    slow = range(2, SLOW)
    fast = range(SLOW, SLOW + FAST)
    e = {
        name: [_error(run[i], frames[i], _inner_mask(affines[i])) for i in range(SLOW + FAST)]
        for name, run in (("per", per), ("fused", fused))
    }
    assert np.mean([e["fused"][i] for i in slow]) < np.mean([e["per"][i] for i in slow])
    assert np.mean([e["fused"][i] for i in fast]) <= 1.05 * np.mean([e["per"][i] for i in fast])
    # around the moving mouth the fused face follows the clean one (no trail of the previous mouth)
    mouth = [_error(fused[i], frames[i], _mouth_mask(affines[i])) for i in fast]
    mouth_per = [_error(per[i], frames[i], _mouth_mask(affines[i])) for i in fast]
    assert np.mean(mouth) <= 1.05 * np.mean(mouth_per), (np.mean(mouth), np.mean(mouth_per))
    assert max(mouth) <= 6.0, mouth  # grey levels: the invented texture's size, not a ghost's


def test_a_track_starts_afresh_after_a_gap_and_at_a_filled_in_face() -> None:
    fusion = TemporalFusion(strength=0.6)
    a = torch.rand(3, 512, 512)
    b = (a + 0.2).clamp(0, 1)
    fusion.fuse(0, 10, a, a)
    assert torch.equal(fusion.fuse(0, 12, a, b), b)  # frame 11 missing: no history used
    out = fusion.fuse(0, 13, a, a)
    assert not torch.equal(out, a)  # consecutive and still: blended with the history
    fusion.reset(0)
    assert torch.equal(fusion.fuse(0, 14, a, b), b)
    fusion.forget_before(20)
    assert torch.equal(fusion.fuse(0, 20, a, b), b)


def test_with_the_real_gfpgan_the_reported_flicker_drops_and_nothing_else_moves(
    cli: Cli, face_clip: FaceClip, weights: Weights, tmp_path: Path
) -> None:
    """The GFPGAN v1.4 architecture (random weights at full scale, whose output follows its input:
    the suite's tamed file gives a nearly constant face) on a moving face: fusion on against off."""
    gfpgan = save_random_weights("gfpgan_v1_clean", tmp_path / "gfpgan.pth", small=True)
    reports = {}
    for method in ("none", "flow-blend"):
        out, report = tmp_path / f"{method}.mp4", tmp_path / f"{method}.json"
        r = cli(
            "restore", face_clip.path, "-o", out, "--detector", "centerface", *weights.sets(),
            "--set", f"restorer.weights={gfpgan}", "--set", f"temporal.method={method}", "--report", report,
        )  # fmt: skip
        assert r.code == 0, r.err
        assert "flicker:" in r.err
        reports[method] = (json.loads(report.read_text()), probe(out))
    (off, p_off), (on, p_on) = reports["none"], reports["flow-blend"]
    t_off, t_on = off["temporal"], on["temporal"]
    assert t_off["flicker_output"] == t_off["flicker_per_frame"] > 0.5  # off: measured, not changed
    assert t_on["flicker_output"] <= 0.7 * t_on["flicker_per_frame"], t_on
    assert t_on["face_pairs"] >= 15
    # landmarks, frame count and timestamps are the fusion's to leave alone
    assert t_on["landmark_jitter_raw_px"] == t_off["landmark_jitter_raw_px"]
    assert t_on["landmark_jitter_smoothed_px"] == t_off["landmark_jitter_smoothed_px"]
    assert t_on["landmark_jitter_smoothed_px"] < t_on["landmark_jitter_raw_px"]
    assert p_on.frames == p_off.frames == 20 and p_on.pts == p_off.pts
    assert on["counts"]["faces_restored"] == off["counts"]["faces_restored"] == 20


def test_compare_puts_the_two_side_by_side_with_the_original_sound(
    cli: Cli, face_clip: FaceClip, tmp_path: Path
) -> None:
    restored = tmp_path / "restored.mp4"
    assert cli("restore", face_clip.path, "-o", restored, "--detector", "none").code == 0
    side, split = tmp_path / "side.mp4", tmp_path / "split.mp4"
    r = cli("compare", face_clip.path, restored, "-o", side)
    assert r.code == 0, r.err
    r = cli("compare", face_clip.path, restored, "-o", split, "--split")
    assert r.code == 0, r.err
    src, p_side, p_split = probe(face_clip.path), probe(side), probe(split)
    assert (p_side.width, p_side.height) == (2 * src.width, src.height)
    assert (p_split.width, p_split.height) == (src.width, src.height)
    for p in (p_side, p_split):
        assert p.frames == src.frames and p.pts == src.pts
        assert list(p.audio.values()) == list(src.audio.values())  # the original's audio, byte for byte
    # an image pair gives an image; a video against an image is refused (exit 4, one line)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(a), astronaut()[:, :, ::-1])
    cv2.imwrite(str(b), astronaut()[::-1, :, ::-1].copy())
    assert cli("compare", a, b, "-o", tmp_path / "ab.png").code == 0
    assert cv2.imread(str(tmp_path / "ab.png")).shape == (512, 1024, 3)
    r = cli("compare", face_clip.path, b, "-o", tmp_path / "x.mp4")
    assert r.code == 4 and "image" in r.err
    assert not (tmp_path / "x.mp4").exists()


def test_measuring_alone_samples_pairs_and_changes_nothing() -> None:
    meter = TemporalFusion(strength=0.0, measure_every=4)
    a = torch.rand(3, 512, 512)
    for i in range(9):
        restored = (a + 0.01 * i).clamp(0, 1)
        assert meter.fuse(0, i, a, restored) is restored
    assert meter.flicker.pairs == 2  # frames (3, 4) and (7, 8): the flow runs on one pair in four
    assert meter.fused == 0
