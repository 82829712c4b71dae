"""Each restorer's speed on this machine against GFPGAN v1.4, side by side in one run.

    python -m bench.restorers               # 3 timed faces each, after one warm-up
    python -m bench.restorers --faces 1     # quicker

The networks are the released architectures at full size with random weights (the same cost as
the trained ones), loaded through vidrestore's own loading code and called through its restorer
interface on aligned 512x512 crops, one face per call (vidrestore's batch on a CPU). GFPGAN
v1.2, v1.3 and v1.4 share one architecture, so one row stands for all three. CodeFormer needs the
``codeformer`` extra. Then the cost of temporal fusion per face, as a share of GFPGAN v1.4's time.
Prints tables and writes bench/results/restorers.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import machine, table, write_result
from testkit.clips import astronaut
from testkit.weights import save_random_weights
from vidrestore.device import Placement
from vidrestore.models.loading import load_model
from vidrestore.models.registry import DEFAULT_REGISTRY
from vidrestore.stages.networks import build_restorer

ROWS = (("gfpgan-1.4", "gfpgan_v1_clean"), ("restoreformer", "restoreformer"), ("codeformer", "codeformer"))


def faces(n: int) -> torch.Tensor:
    """``n`` copies of the astronaut's face, roughly aligned, as ``(n, 3, 512, 512)`` in [0, 1]."""
    face = torch.from_numpy(astronaut()).permute(2, 0, 1).float() / 255
    return face[None].repeat(n, 1, 1, 1)


def measure(name: str, arch: str, folder: Path, n: int) -> dict[str, Any]:
    spec = DEFAULT_REGISTRY[name]
    path = save_random_weights(arch, folder / spec.filename, small=False)
    placement = Placement(torch.device("cpu"), torch.float32)
    restorer = build_restorer(spec.arch, load_model(spec.arch, path), placement, fidelity=0.5)
    batch = faces(1)
    restorer.restore(batch)  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        restorer.restore(batch)
    seconds = (time.perf_counter() - t0) / n
    path.unlink()
    return {
        "restorer": "gfpgan-1.2/1.3/1.4" if name == "gfpgan-1.4" else name,
        "params_m": spec.params_m,
        "licence": spec.licence,
        "seconds_per_face": round(seconds, 2),
        "faces_per_s": round(1 / seconds, 3),
    }


def fusion_cost(n: int) -> dict[str, Any]:
    """Temporal fusion (flow-blend) per face: DIS flow both ways on 128-px grey crops, the warp and
    the blend of two 512 crops; a moving face, so that the flow has work to do."""
    from vidrestore.stages.fuse import TemporalFusion

    fusion = TemporalFusion(strength=0.6)
    face = faces(1)[0]
    crops = [torch.roll(face, shifts=(k, 2 * k), dims=(1, 2)) for k in range(n + 2)]
    fusion.fuse(0, 0, crops[0], crops[0])
    fusion.fuse(0, 1, crops[1], crops[1])  # warm-up
    t0 = time.perf_counter()
    for k in range(2, n + 2):
        fusion.fuse(0, k, crops[k], crops[k])
    seconds = (time.perf_counter() - t0) / n
    return {"restorer": "temporal fusion (flow-blend)", "seconds_per_face": round(seconds, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=3, help="timed faces per restorer")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/restorers.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidrestore-restorers-") as tmp:
        rows = [measure(name, arch, Path(tmp), args.faces) for name, arch in ROWS]
    base = rows[0]["faces_per_s"]
    for r in rows:
        r["vs_gfpgan_1_4"] = f"{r['faces_per_s'] / base:.2f}x"
    print(table(rows, ["restorer", "params_m", "seconds_per_face", "faces_per_s", "vs_gfpgan_1_4", "licence"]))
    fusion = fusion_cost(max(args.faces, 10))
    fusion["share_of_gfpgan_1_4"] = f"{100 * fusion['seconds_per_face'] / rows[0]['seconds_per_face']:.1f}%"
    print(table([fusion], ["restorer", "seconds_per_face", "share_of_gfpgan_1_4"]))
    data = {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "faces": args.faces,
        "rows": rows,
        "temporal_fusion": fusion,
    }
    write_result("restorers", data, args.out)


if __name__ == "__main__":
    main()
