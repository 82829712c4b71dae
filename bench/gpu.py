"""One command for a CUDA machine: restorer throughput by precision and batch size, and end to end at 1080p.

    python -m bench.gpu              # on a CUDA machine: under 5 minutes
    python -m bench.gpu --smoke      # anywhere, CPU included, under a minute: keeps this script from rotting

1. The restorer alone (GFPGAN v1.4, full size; random weights unless the released file is cached):
   fp32, fp16 and bf16 at batch sizes 1..32: faces/s, achieved TFLOP/s (FLOPs counted with PyTorch's
   FLOP counter on one forward, ~396 GFLOP per 512x512 face) against the device's peak, and whether
   the output stayed finite (GFPGAN is reported to overflow in fp16).
2. End to end at 1080p: frames/s of ``vidrestore restore`` on a generated clip, libx264 against
   h264_nvenc (NVENC "on"; on GPUs without NVENC, such as the H100, it falls back to libx264 and says so).

Prints tables and writes bench/results/gpu.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import RESULTS, machine, table
from vidrestore.errors import ModelError
from vidrestore.models.loading import load_model
from vidrestore.models.store import ModelStore, default_weights_dir
from vidrestore.testing import make_face_clip, save_random_weights

# Dense peak TFLOP/s by device name and dtype (vendor data sheets, SXM parts). Unknown devices: no ratio.
PEAKS = {
    "H100": {"fp32": 67.0, "fp16": 989.0, "bf16": 989.0},
    "H200": {"fp32": 67.0, "fp16": 989.0, "bf16": 989.0},
    "A100": {"fp32": 19.5, "fp16": 312.0, "bf16": 312.0},
    "L4": {"fp32": 30.3, "fp16": 121.0, "bf16": 121.0},
    "RTX 4090": {"fp32": 82.6, "fp16": 165.0, "bf16": 165.0},
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def peak_for(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((p[precision] for key, p in PEAKS.items() if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gfpgan_weights(tmp: Path, small: bool) -> Path:
    if not small:
        try:
            return ModelStore(default_weights_dir()).resolve("gfpgan-1.4")
        except ModelError:
            pass  # not cached: random weights of the full architecture
    return save_random_weights("gfpgan_v1_clean", tmp / "gfpgan.pth", small=small, scale=0.5)


def flops_per_face(model: torch.nn.Module, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, 512, 512, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x, return_rgb=False, randomize_noise=False)
    return float(counter.get_total_flops())


def restorer_sweep(
    weights: Path, device: torch.device, precisions: list[str], batches: list[int], seconds: float
) -> list[dict[str, Any]]:
    rows = []
    base = load_model("gfpgan_v1_clean", weights, device)
    flops = flops_per_face(base, device)
    for precision in precisions:
        model = load_model("gfpgan_v1_clean", weights, device).to(DTYPES[precision])
        for batch in batches:
            x = torch.rand(batch, 3, 512, 512, device=device, dtype=DTYPES[precision]) * 2 - 1
            try:
                with torch.inference_mode():
                    out, _ = model(x, return_rgb=False, randomize_noise=False)  # warm-up (and cuDNN autotune)
                    sync(device)
                    finite = bool(torch.isfinite(out).all())
                    runs, t0 = 0, time.perf_counter()
                    while runs < 2 or time.perf_counter() - t0 < seconds:
                        model(x, return_rgb=False, randomize_noise=False)
                        runs += 1
                    sync(device)
                    elapsed = time.perf_counter() - t0
            except torch.OutOfMemoryError:
                rows.append({"precision": precision, "batch": batch, "faces_per_s": "OOM"})
                continue
            faces_s = runs * batch / elapsed
            tflops = faces_s * flops / 1e12
            peak = peak_for(device, precision)
            rows.append(
                {
                    "precision": precision,
                    "batch": batch,
                    "faces_per_s": round(faces_s, 2),
                    "tflops": round(tflops, 2),
                    "of_peak": f"{tflops / peak:.0%}" if peak else "n/a",
                    "finite": finite,
                }
            )
        del model
    for r in rows:
        r["gflop_per_face"] = round(flops / 1e9, 1)
    return rows


def end_to_end(
    tmp: Path, weights: Path, size: tuple[int, int], frames: int, codecs: list[str], small: bool, device: str
) -> list[dict[str, Any]]:
    from vidrestore.config import load_config
    from vidrestore.pipeline import build_stages, restore_file
    from vidrestore.stats import RunStats

    clip = make_face_clip(
        tmp / "e2e.mp4",
        frames=frames,
        size=size,
        face_scale=0.3 * size[1] / 512,
        trajectory=lambda i: (40 * math.sin(i / 10), 0.0, 0.0),
        crf=23,
    )
    store = ModelStore(default_weights_dir())
    try:
        store.resolve("retinaface_resnet50")
        detector = "retinaface_resnet50"  # the real detector on the device
    except ModelError:
        detector = "centerface"  # no download possible: the CPU detector (limits frames/s)
    up = save_random_weights("srvgg_compact", tmp / "up.pth", small=small, key="params")
    parse = save_random_weights("parsenet", tmp / "parse.pth", key=None)
    rows = []
    for codec in codecs:
        config = load_config(
            None,
            [
                f"device={device}",
                f"detector.model={detector}",
                f"restorer.weights={weights}",
                f"upscaler.weights={up}",
                f"restorer.parsing_weights={parse}",
                f"output.codec={codec}",
                "output.overwrite=true",
            ],
        )
        stats = RunStats()
        stages = build_stages(config, store, stats)
        t0 = time.perf_counter()
        restore_file(clip.path, tmp / f"out-{codec}.mp4", config, stages, stats)
        elapsed = time.perf_counter() - t0
        rows.append(
            {
                "size": f"{size[0]}x{size[1]}",
                "codec": codec,
                "detector": detector,
                "frames": stats.frames,
                "fps": round(stats.frames / elapsed, 2),
                "faces": stats.faces_restored,
                "stage_seconds": {k: round(v, 2) for k, v in stats.stage_seconds.items()},
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on whatever device is here (CI)")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        precisions, batches, seconds = ["fp32"], [1, 2], 0.0
        size, frames = (320, 240), 6
    else:
        if device.type != "cuda":
            raise SystemExit("bench.gpu needs a CUDA device; use --smoke to check the script on a CPU")
        precisions = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
        batches, seconds = [1, 2, 4, 8, 16, 32], 3.0
        size, frames = (1920, 1080), 250
    result: dict[str, Any] = {"machine": machine(), "smoke": args.smoke}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        weights = gfpgan_weights(d, small=args.smoke)
        t0 = time.perf_counter()
        result["restorer"] = restorer_sweep(weights, device, precisions, batches, seconds)
        print(
            table(result["restorer"], ["precision", "batch", "faces_per_s", "tflops", "of_peak", "finite"]), flush=True
        )
        result["end_to_end"] = end_to_end(d, weights, size, frames, ["libx264", "h264_nvenc"], args.smoke, device.type)
        print(table(result["end_to_end"], ["size", "codec", "detector", "frames", "fps", "faces"]), flush=True)
        result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
