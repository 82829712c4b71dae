"""Writes tests/data/restore-reference.npz: what the restore stage gave before it kept frames on the
device (per-face uploads, paste-back on a host copy, ParseNet per frame). test_restore compares the
device-resident path with it. Rerun only on purpose: python tests/make_restore_reference.py"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def scene() -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Two frames, each with two real faces of different sizes (one small enough to be upscaled)."""
    import cv2

    from testkit.clips import ASTRONAUT_LANDMARKS, astronaut

    src = astronaut()
    images, marks = [], []
    for i in range(2):
        canvas = np.full((360, 480, 3), (70, 90, 110), np.uint8)
        per = []
        for cx, cy, s in ((140 + 3 * i, 170, 1.3), (370, 150 - 2 * i, 0.45)):
            mid = ASTRONAUT_LANDMARKS.mean(axis=0)
            m = np.array([[s, 0, cx - s * mid[0]], [0, s, cy - s * mid[1]]])
            cv2.warpAffine(src, m, (480, 360), dst=canvas, borderMode=cv2.BORDER_TRANSPARENT)
            per.append((ASTRONAUT_LANDMARKS @ m[:, :2].T + m[:, 2]).astype(np.float32))
        images.append(canvas)
        marks.append(per)
    return images, marks


def run(tmp: Path) -> list[np.ndarray]:
    from fractions import Fraction

    import torch

    from testkit.weights import save_random_weights
    from vidrestore.device import Placement
    from vidrestore.models.loading import load_model
    from vidrestore.records import Face, Frame
    from vidrestore.stages.networks import FaceParser, GFPGANRestorer, Upscaler
    from vidrestore.stages.restore import RestoreStage

    cpu = Placement(torch.device("cpu"), torch.float32)
    g = save_random_weights("gfpgan_v1_clean", tmp / "g.pth", small=True, scale=0.1)
    u = save_random_weights("srvgg_compact", tmp / "u.pth", small=True, key="params")
    p = save_random_weights("parsenet", tmp / "p.pth", small=False, key=None)  # as the reference was made
    stage = RestoreStage(
        GFPGANRestorer(load_model("gfpgan_v1_clean", g), cpu),
        cpu.device,
        upscaler=Upscaler(load_model("srvgg_compact", u), cpu),
        upscale_below=64,
        parser=FaceParser(load_model("parsenet", p), cpu),
        blend=0.9,
        batch_size=4,
    )
    images, marks = scene()
    frames = []
    for i, (img, per) in enumerate(zip(images, marks)):
        faces = tuple(
            Face(k, 0.99, np.concatenate([lm.min(0) - 20, lm.max(0) + 20]).astype(np.float32), lm, lm)
            for k, lm in enumerate(per)
        )
        frames.append(Frame(i, i, Fraction(1, 25), img, faces=faces))
    return [f.image for f in stage.run(iter(frames))]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = run(Path(d))
    target = Path(__file__).resolve().parent / "data" / "restore-reference.npz"
    np.savez_compressed(target, *out)
    print(f"wrote {target} ({target.stat().st_size} bytes)")
