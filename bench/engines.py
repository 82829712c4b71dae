"""Each network under each engine, side by side in one run: seconds per face (restorer, parser),
per frame (detector) and per crop (upscaler), with each engine's agreement with eager torch.

    python -m bench.engines                        # eager, onnxruntime, openvino (f32, bf16) on this CPU
    python -m bench.engines --engines eager,onnxruntime --repeats 2   # quicker
    python -m bench.engines --device cuda          # on a GPU: batches 1, 8, 32; eager TF32 and bf16 too

The networks are the released architectures at full size with random weights (the same cost as the
trained ones), loaded through vidrestore's loader and called through its own network classes, so an
engine is timed exactly as the pipeline calls it. Repetitions alternate between engines (A, B, C, A,
B, C...) so that a machine slowing down or speeding up during the run touches every engine alike;
each engine is warmed up first (its export or compile is not timed). ``agreement_db`` is the PSNR
of the engine's output against eager fp32 (detector: the largest point difference in pixels among
the 200 best-scored candidates). Writes bench/results/engines.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import machine, table, write_result
from testkit.clips import astronaut
from testkit.weights import save_random_weights
from vidrestore.device import Placement
from vidrestore.models.engine import EngineMaker, NetShape, eager_maker, make_engine
from vidrestore.models.loading import load_model
from vidrestore.models.store import sha256_file
from vidrestore.stages.detect import RetinaFaceDetector
from vidrestore.stages.networks import FaceParser, GFPGANRestorer, Upscaler

Call = Callable[[], Any]


def _maker(kind: str, placement: Placement, cache: Path, weights: Path) -> EngineMaker:
    """``kind``: an engine, or ``openvino-bf16`` (OpenVINO in bf16; its parity fallback off, so
    the row is bf16's own)."""
    if kind.startswith("eager"):
        return eager_maker
    sha = sha256_file(weights)
    engine, precision = ("openvino", "bf16") if kind == "openvino-bf16" else (kind, "fp32")

    def make(role: str, module: torch.nn.Module, shape: NetShape):  # type: ignore[no-untyped-def]
        return make_engine(engine, role, module, shape, placement, cache, sha, precision=precision)

    return make


def _placement(kind: str, device: torch.device) -> Placement:
    return Placement(device, torch.bfloat16 if kind == "eager-bf16" else torch.float32)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float().cpu() - b.float().cpu()) ** 2).mean())
    return 99.0 if mse == 0 else round(10 * float(np.log10(1.0 / mse)), 1)


def _faces(n: int, size: int, device: torch.device) -> torch.Tensor:
    face = torch.from_numpy(astronaut()).permute(2, 0, 1).float() / 255
    face = torch.nn.functional.interpolate(face[None], size=(size, size), mode="bilinear", antialias=True)
    return face.repeat(n, 1, 1, 1).to(device)


def networks(
    folder: Path, device: torch.device, batch: int, small: bool = False
) -> dict[str, tuple[str, Path, Callable[..., Call]]]:
    """network -> (unit, weights file, build(kind) -> a call that runs one unit of work and returns
    its output). ``small``: the architectures' small variants (the smoke test)."""
    gfpgan = save_random_weights("gfpgan_v1_clean", folder / "GFPGANv1.4.pth", small=small, scale=0.1 if small else 1)
    parsenet = save_random_weights("parsenet", folder / "parsing_parsenet.pth", small=small, key=None)
    srvgg = save_random_weights("srvgg_compact", folder / "realesr-general-x4v3.pth", small=small, key="params")
    retina = save_random_weights("retinaface", folder / "detection_Resnet50_Final.pth", small=small, key=None)
    faces, crops = _faces(batch, 512, device), _faces(batch, 128, device)
    frame = np.ascontiguousarray(np.tile(astronaut(), (2, 3, 1))[:720, :1280])  # a 720p frame

    def restorer(kind: str) -> Call:
        p = _placement(kind, device)
        net = GFPGANRestorer(load_model("gfpgan_v1_clean", gfpgan, device), p, _maker(kind, p, folder, gfpgan))
        return lambda: net.restore(faces)

    def parser(kind: str) -> Call:
        p = _placement(kind, device)
        net = FaceParser(load_model("parsenet", parsenet, device), p, 256, _maker(kind, p, folder, parsenet))
        return lambda: net.masks(faces)

    def upscaler(kind: str) -> Call:
        p = _placement(kind, device)
        net = Upscaler(load_model("srvgg_compact", srvgg, device), p, _maker(kind, p, folder, srvgg))
        return lambda: net.upscale(crops)

    def detector(kind: str) -> Call:
        p = _placement(kind, device)
        model = load_model("retinaface", retina, device)
        net = RetinaFaceDetector(model, device, dtype=p.dtype, make=_maker(kind, p, folder, retina))
        return lambda: net.decoded([frame] * batch)

    return {
        "gfpgan-1.4 (restorer)": ("face", gfpgan, restorer),
        "parsenet at 256 (mask)": ("face", parsenet, parser),
        "realesr-general-x4v3 (upscaler)": ("128-px crop", srvgg, upscaler),
        "retinaface_resnet50 (detector)": ("720p frame", retina, detector),
    }


def _agreement(name: str, out: Any, ref: Any) -> float:
    if name.startswith("retinaface"):
        top = torch.argsort(ref[1][0], descending=True)[:200]
        return round(float((out[2][0][top].cpu() - ref[2][0][top].cpu()).abs().max()), 3)
    return _psnr(out, ref)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    kinds: list[str], device: torch.device, batch: int, repeats: int, folder: Path, small: bool = False
) -> list[dict[str, Any]]:
    rows = []
    for name, (unit, _, build) in networks(folder, device, batch, small).items():
        calls: dict[str, Call] = {}
        outputs: dict[str, Any] = {}
        setup: dict[str, float] = {}
        for kind in kinds:
            try:
                t0 = time.perf_counter()
                calls[kind] = build(kind)
                outputs[kind] = calls[kind]()  # warm-up: the export or compile happens here, untimed
                setup[kind] = round(time.perf_counter() - t0, 2)
            except Exception as exc:  # a bench row, not a run: an engine that cannot run this network says why
                rows.append({"network": name, "engine": kind, "batch": batch, "error": str(exc).splitlines()[0]})
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(repeats):
            for kind, call in calls.items():
                _sync(device)
                t0 = time.perf_counter()
                call()
                _sync(device)
                times[kind].append(time.perf_counter() - t0)
        base = statistics.median(times["eager"]) if "eager" in times else None
        for kind, seconds in times.items():
            per = statistics.median(seconds) / batch
            row = {"network": name, "engine": kind, "batch": batch, "unit": unit, "seconds_per_unit": round(per, 4)}
            row["per_s"] = round(1 / per, 2)
            row["setup_s"] = setup[kind]  # the first call: export (or the cached file's check) and compile
            if base is not None:
                row["x_eager"] = round(base / batch / per, 2)
                if kind != "eager":
                    row["agreement"] = _agreement(name, outputs[kind], outputs["eager"])
            if "onnxruntime" in times:
                row["x_onnxruntime"] = round(statistics.median(times["onnxruntime"]) / batch / per, 2)
            if kind == "openvino-bf16" and "openvino" in outputs:
                row["vs_f32"] = _agreement(name, outputs[kind], outputs["openvino"])
            rows.append(row)
            print(table([row], list(row)), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--engines",
        help="comma-separated (default: eager,onnxruntime,openvino,openvino-bf16; on CUDA eager, eager-bf16, "
        "compile, onnxruntime, tensorrt; compile on a CPU compiles for minutes)",
    )
    ap.add_argument("--batches", help="comma-separated batch sizes (default: 1 on a CPU, 1,8,32 on CUDA)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--small", action="store_true", help="the networks' small variants (a smoke test, not a measurement)"
    )
    ap.add_argument("--out", type=Path, help="result file (default: bench/results/engines.json)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # "eager" on a GPU is TF32, as the pipeline runs fp32
        torch.backends.cudnn.allow_tf32 = True
    default = "eager,eager-bf16,compile,onnxruntime,tensorrt" if cuda else "eager,onnxruntime,openvino,openvino-bf16"
    kinds = (args.engines or default).split(",")
    batches = [int(b) for b in (args.batches or ("1,8,32" if cuda else "1")).split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidrestore-engines-") as tmp:
        for batch in batches:
            rows += measure(kinds, device, batch, args.repeats, Path(tmp), args.small)
    cols = ["network", "engine", "batch", "unit", "seconds_per_unit", "per_s", "x_eager", "x_onnxruntime"]
    cols += ["agreement", "vs_f32", "setup_s", "error"]
    print(table(rows, cols))
    write_result(
        "engines", {"machine": machine(), "device": str(device), "repeats": args.repeats, "rows": rows}, args.out
    )


if __name__ == "__main__":
    main()
