"""Temporal fusion against known ground truth: what each setting does, the plot, and the flow's cost.

    python -m bench.temporal            # writes bench/results/temporal.json and bench/results/flicker.png

The clip (``testkit.groundtruth``): the astronaut's face moving slowly, then fast with its
mouth opening, through a "restorer" that adds independent invented texture per frame. Every
flicker and error figure is measured against the known motion and the clean face, in grey levels:

- per setting (strength x the photometric ``change`` threshold), on clean input and on input with
  tape-like grain: flicker and error of the fused output as a ratio of the per-frame output, on
  the slow part and on the fast part, and the worst error around the moving mouth (ghosting);
- the plot of the default setting's own figures (what ``vidrestore compare --plot`` draws);
- the flow's cost per face pair on this CPU: OpenCV DIS (the default) against torchvision's
  RAFT-small (random weights: the same cost as the trained ones) at the same 128-px crops.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from bench.common import RESULTS, machine, table, write_result
from testkit.groundtruth import GroundTruthClip, ground_truth_clip, restore_clip
from vidrestore.plot import draw_flicker
from vidrestore.stages.fuse import TemporalFusion
from vidrestore.stats import RunStats

STRENGTHS = (0.4, 0.6, 0.8)
CHANGES = (0.06, 0.1)
GRAIN = 3.0  # grey levels of per-frame grain in the "tape" input


def score(clip: GroundTruthClip, per: list[np.ndarray], out: list[np.ndarray]) -> dict[str, float]:
    """The fused output against the per-frame one, on the known truth."""

    def mean(values: list[float]) -> float:
        return float(np.mean(values))

    return {
        "flicker_slow": round(mean([clip.flicker(out, i) for i in clip.slow]), 2),
        "flicker_slow_x": round(
            mean([clip.flicker(out, i) for i in clip.slow]) / mean([clip.flicker(per, i) for i in clip.slow]), 3
        ),
        "flicker_fast_x": round(
            mean([clip.flicker(out, i) for i in clip.fast]) / mean([clip.flicker(per, i) for i in clip.fast]), 3
        ),
        "error_slow_x": round(
            mean([clip.error(out, i) for i in clip.slow]) / mean([clip.error(per, i) for i in clip.slow]), 3
        ),
        "error_fast_x": round(
            mean([clip.error(out, i) for i in clip.fast]) / mean([clip.error(per, i) for i in clip.fast]), 3
        ),
        "mouth_error_max": round(max(clip.error(out, i, mouth=True) for i in clip.fast), 2),
    }


def settings() -> list[dict[str, Any]]:
    rows = []
    for name, noise in (("clean", 0.0), (f"grain {GRAIN:g}", GRAIN)):
        clip = ground_truth_clip(noise=noise)
        per = restore_clip(clip, None)
        rows.append({"input": name, "setting": "per frame", **score(clip, per, per)})
        for change in CHANGES:
            for strength in STRENGTHS:
                fusion = TemporalFusion(strength=strength, change=change)
                out = restore_clip(clip, fusion)
                setting = f"strength {strength:g}, change {change:g}"
                rows.append({"input": name, "setting": setting, **score(clip, per, out), "fused": fusion.fused})
    return rows


def plot(dst: Path) -> dict[str, float]:
    """The default setting's own figures (flow measured on the input), drawn as compare --plot does."""
    clip = ground_truth_clip()
    stats = RunStats()
    restore_clip(clip, TemporalFusion(strength=0.6), stats)
    rows = stats.figures().to_dict()["frames"]
    image = draw_flicker(rows, title="flicker per frame: bench.temporal's moving face (grey levels; lower is steadier)")
    cv2.imwrite(str(dst), image[:, :, ::-1])
    return stats.temporal()


def flow_cost(pairs: int) -> list[dict[str, Any]]:
    """Seconds per face pair for the flow both ways at 128 px: DIS (with vidrestore's checks) and RAFT-small."""
    from torchvision.models.optical_flow import raft_small

    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur((rng.random((128, 128)) * 255).astype(np.uint8), (0, 0), 2)
    b = np.roll(a, (1, 2), axis=(0, 1))
    fusion = TemporalFusion()
    fusion.weights(a, b)
    t0 = time.perf_counter()
    for _ in range(pairs):
        fusion.weights(a, b)
    dis = (time.perf_counter() - t0) / pairs
    model = raft_small(weights=None).eval()
    x = torch.from_numpy(np.stack([a, b])).float().div(127.5).sub(1)[:, None].repeat(1, 3, 1, 1)
    with torch.inference_mode():
        model(x[:1], x[1:], num_flow_updates=12)
        t0 = time.perf_counter()
        n = max(1, pairs // 10)
        for _ in range(n):
            model(torch.cat([x[:1], x[1:]]), torch.cat([x[1:], x[:1]]), num_flow_updates=12)  # both ways
        raft = (time.perf_counter() - t0) / n
    return [
        {"flow": "DIS medium (default)", "ms_per_pair": round(dis * 1000, 2), "vs_dis": "1x"},
        {"flow": "RAFT-small, 12 updates", "ms_per_pair": round(raft * 1000, 1), "vs_dis": f"{raft / dis:.0f}x"},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=50, help="timed face pairs for the flow's cost")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/temporal.json)")
    parser.add_argument("--plot", type=Path, help="plot file (default: bench/results/flicker.png)")
    args = parser.parse_args()
    rows = settings()
    columns = ["input", "setting", "flicker_slow", "flicker_slow_x", "flicker_fast_x", "error_slow_x"]
    print(table(rows, [*columns, "error_fast_x", "mouth_error_max"]))
    figures = plot(args.plot or RESULTS / "flicker.png")
    print("the default's own figures:", figures)
    flows = flow_cost(args.pairs)
    print(table(flows, ["flow", "ms_per_pair", "vs_dis"]))
    data = {
        "machine": machine(),
        "grain_grey_levels": GRAIN,
        "settings": rows,
        "default_reported": figures,
        "flow_cost": flows,
    }
    write_result("temporal", data, args.out)


if __name__ == "__main__":
    main()
