"""What the field stage costs, beside the face stages it runs before.

    python -m bench.fields              # writes bench/results/fields.json

Per picture size (720x576: PAL DVD, DV and VHS captures; 1440x1080: HDV and 1080i broadcast), the
milliseconds per decoded frame of each field plan as vidrestore runs it (``io.deinterlace.
FieldFilter``, FFmpeg's filter graph in-process, on this CPU's threads): bwdif at one picture per
field and per frame, yadif, and inverse telecine (fieldmatch, decimate, bwdif on the leftovers).
Beside them, in the same run: face detection of one frame (CenterFace, the default detector's
working size) and restoring one face with GFPGAN v1.4's architecture (random weights: the same
cost as the trained ones), the stages the field stage must stay small against.
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from bench.common import machine, table, write_result
from testkit.clips import astronaut
from vidrestore.io.deinterlace import FieldFilter, plan_fields
from vidrestore.io.fields import Scan

SIZES = ((720, 576), (1440, 1080))
PLANS = (
    ("bwdif, a picture per field", "tff", "bwdif", "double"),
    ("bwdif, a picture per frame", "tff", "bwdif", "single"),
    ("yadif, a picture per field", "tff", "yadif", "double"),
    ("inverse telecine", "telecine", "bwdif", "double"),
)


def woven(size: tuple[int, int], count: int) -> list[av.VideoFrame]:
    """``count`` interlaced frames: the astronaut panning, the two fields of each frame taken from
    pictures a field apart (as a camera writes them), in yuv420p as a disc or capture decodes."""
    w, h = size
    base = cv2.resize(astronaut(), (w + 4 * count + 8, h))
    frames = []
    for i in range(count):
        top = base[:, 4 * i : 4 * i + w]
        bottom = base[:, 4 * i + 2 : 4 * i + 2 + w]
        pic = top.copy()
        pic[1::2] = bottom[1::2]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pic), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frames.append(frame)
    return frames


def field_ms(size: tuple[int, int], kind: str, deinterlacer: str, field_rate: str, frames: int) -> float:
    """Milliseconds per decoded frame through the plan's filter graph (the graph's setup included)."""
    tb, rate = Fraction(1, 25), Fraction(25)
    if kind == "telecine":
        tb, rate = Fraction(1001, 30000), Fraction(30000, 1001)
    scan = Scan(kind, "tff")  # type: ignore[arg-type]
    plan = plan_fields(scan, deinterlacer, field_rate, tb, rate)
    source = woven(size, frames)
    for f in source:
        f.time_base = tb
    best = float("inf")
    for _ in range(2):
        fil = FieldFilter(plan, tb, rate)
        t0 = time.perf_counter()
        out = 0
        for f in source:
            out += len(fil.push(f))
        out += len(fil.push(None))
        best = min(best, time.perf_counter() - t0)
        assert out > 0
    return 1000 * best / frames


def detect_ms(size: tuple[int, int], repeats: int) -> float:
    from vidrestore.stages.detect import CenterFaceDetector

    det = CenterFaceDetector(threshold=0.5)
    image = cv2.resize(astronaut(), size)
    det.detect([image])
    t0 = time.perf_counter()
    for _ in range(repeats):
        det.detect([image])
    return 1000 * (time.perf_counter() - t0) / repeats


def restore_ms(repeats: int) -> float:
    """One face through GFPGAN v1.4's architecture, eager fp32, as ``bench.restorers`` runs it."""
    import tempfile

    import torch

    from testkit.weights import save_random_weights
    from vidrestore.device import Placement
    from vidrestore.models.loading import load_model
    from vidrestore.models.registry import DEFAULT_REGISTRY
    from vidrestore.stages.networks import build_restorer

    spec = DEFAULT_REGISTRY["gfpgan-1.4"]
    with tempfile.TemporaryDirectory() as folder:
        path = save_random_weights("gfpgan_v1_clean", Path(folder) / spec.filename, small=False)
        placement = Placement(torch.device("cpu"), torch.float32)
        restorer = build_restorer(spec.arch, load_model(spec.arch, path), placement, fidelity=0.5)
    face = torch.from_numpy(astronaut()).permute(2, 0, 1).float()[None] / 255
    restorer.restore(face)
    t0 = time.perf_counter()
    for _ in range(repeats):
        restorer.restore(face)
    return 1000 * (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="frames pushed per plan and size")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/fields.json)")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for size in SIZES:
        detect = detect_ms(size, 10)
        for name, kind, deinterlacer, rate in PLANS:
            ms = field_ms(size, kind, deinterlacer, rate, args.frames)
            rows.append(
                {
                    "size": f"{size[0]}x{size[1]}",
                    "plan": name,
                    "ms_per_frame": round(ms, 2),
                    "vs_detect": f"{ms / detect:.2f}x",
                }
            )
        name = f"{size[0]}x{size[1]}"
        rows.append({"size": name, "plan": "face detection (CenterFace)", "ms_per_frame": round(detect, 1)})
        print(table(rows, ["size", "plan", "ms_per_frame", "vs_detect"]), flush=True)
    restore = restore_ms(2)
    rows.append({"size": "512x512 face", "plan": "restore one face (GFPGAN v1.4)", "ms_per_frame": round(restore)})
    print(table(rows, ["size", "plan", "ms_per_frame", "vs_detect"]))
    write_result("fields", {"machine": machine(), "frames": args.frames, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
