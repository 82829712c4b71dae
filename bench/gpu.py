"""One command for a CUDA machine: the restorer alone, then 1080p end to end, in a few minutes.

    python -m bench.wheelhouse .whl                    # here, once: the wheels a bare GPU machine lacks
    python -m bench.gpu --wheelhouse .whl              # there: installs them privately, then measures
    python -m bench.gpu --smoke                        # anywhere, CPU included: keeps the script from rotting

1. The restorer alone (GFPGAN v1.4, full size; random weights unless the released file is cached):
   fp32, bf16 and fp16 at batch 1, 8 and 32: faces/s, achieved TFLOP/s (FLOPs counted with PyTorch's
   counter, ~396 GFLOP per 512x512 face) against the device's peak, and whether the output stayed finite.
2. End to end at 1080p, one face per frame and four: frames/s of the real pipeline (decode thread, the
   face stages on the device, encode thread) with
   - a null sink (frames dropped after the face stages: the device side alone),
   - libx264 at ultrafast, veryfast and medium,
   - the encoder alone (pass-through, no face stages): the ceiling libx264 sets on this machine;
   and the share of wall time the GPU was busy (NVML's utilisation, sampled every 50 ms).
   Detection is RetinaFace-R50 (random weights) run on every frame at its full cost; the faces it
   reports are the clip's known ones (random weights find none), so restoration sees real work.

Prints tables and writes bench/results/gpu.json (a smoke run writes to a temp folder unless --out).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

# Dense peak TFLOP/s by device name and dtype (vendor data sheets, SXM parts). Unknown devices: no ratio.
PEAKS = {
    "H100": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.0, "bf16": 989.0},
    "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.0, "bf16": 989.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
    "RTX 4090": {"fp32": 82.6, "tf32": 82.6, "fp16": 165.0, "bf16": 165.0},
}


def install_wheelhouse(wheelhouse: Path) -> None:
    """pip-install the wheels of ``bench.wheelhouse`` into a private folder and put it first on sys.path."""
    site = Path(tempfile.gettempdir()) / "vidrestore-bench-site"
    wheels = sorted(str(w) for w in wheelhouse.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"{wheelhouse}: no wheels (build them with: python -m bench.wheelhouse {wheelhouse})")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade"]
    subprocess.run([*pip, "--target", str(site), *wheels], check=True)
    sys.path.insert(0, str(site))


# -- 1. the restorer alone ----------------------------------------------------------------------


def peak_for(device: Any, precision: str) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((p[precision] for key, p in PEAKS.items() if key in name), None)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gfpgan_weights(tmp: Path, small: bool) -> Path:
    from testkit.weights import save_random_weights
    from vidrestore.errors import ModelError
    from vidrestore.models.store import ModelStore, default_weights_dir

    if not small:
        try:
            return ModelStore(default_weights_dir()).resolve("gfpgan-1.4")
        except ModelError:
            pass  # not cached: random weights of the full architecture (the same cost)
    return save_random_weights("gfpgan_v1_clean", tmp / "gfpgan.pth", small=small, scale=0.5)


def flops_per_face(model: Any, device: Any) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, 512, 512, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x, return_rgb=False, randomize_noise=False)
    return float(counter.get_total_flops())


def restorer_sweep(
    weights: Path, device: Any, precisions: list[str], batches: list[int], seconds: float
) -> list[dict[str, Any]]:
    import torch

    from vidrestore.models.loading import load_model

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    rows: list[dict[str, Any]] = []
    flops = flops_per_face(load_model("gfpgan_v1_clean", weights, device), device)
    for precision in precisions:
        model = load_model("gfpgan_v1_clean", weights, device).to(dtypes[precision])
        for batch in batches:
            x = torch.rand(batch, 3, 512, 512, device=device, dtype=dtypes[precision]) * 2 - 1
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
            # "fp32" convolutions run as TF32 on tensor cores (cuDNN's default): labelled and measured so
            tf32 = precision == "fp32" and device.type == "cuda" and torch.backends.cudnn.allow_tf32
            peak = peak_for(device, "tf32" if tf32 else precision)
            rows.append(
                {
                    "precision": "tf32 (fp32 tensors; cuDNN's default)" if tf32 else precision,
                    "peak_tflops": peak,
                    "batch": batch,
                    "faces_per_s": round(faces_s, 2),
                    "tflops": round(tflops, 2),
                    "of_peak": f"{tflops / peak:.0%}" if peak else "n/a",
                    "finite": finite,
                    "gflop_per_face": round(flops / 1e9, 1),
                }
            )
        del model
    return rows


# -- 2. end to end ------------------------------------------------------------------------------


def _face_centres(faces: int, w: int, h: int) -> list[tuple[float, float]]:
    if faces == 1:
        return [(w / 2, h / 2)]
    cols = math.ceil(math.sqrt(faces))
    rows = math.ceil(faces / cols)
    return [((c + 0.5) * w / cols, (r + 0.5) * h / rows) for r in range(rows) for c in range(cols)][:faces]


def make_clip(path: Path, faces: int, size: tuple[int, int], frames: int, face_px: float) -> list[Any]:
    """A clip of ``faces`` astronaut faces of about ``face_px`` pixels, each moving; returns true landmarks."""
    import cv2
    import numpy as np

    from testkit.clips import ASTRONAUT_LANDMARKS, astronaut, write_clip

    w, h = size
    src = astronaut()
    scale = face_px / 90.0  # the astronaut's face is about 90 px wide in the 512x512 picture
    centres = _face_centres(faces, w, h)
    truths, images = [], []
    for i in range(frames):
        canvas = np.full((h, w, 3), (70, 90, 110), np.uint8)
        per_frame = []
        for k, (cx, cy) in enumerate(centres):
            dx, dy = 0.05 * w * math.sin(i / 12 + k), 0.03 * h * math.cos(i / 15 + k)
            mid = ASTRONAUT_LANDMARKS.mean(axis=0)
            m = np.array([[scale, 0, cx + dx - scale * mid[0]], [0, scale, cy + dy - scale * mid[1]]])
            cv2.warpAffine(src, m, (w, h), dst=canvas, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
            per_frame.append(ASTRONAUT_LANDMARKS @ m[:, :2].T + m[:, 2])
        images.append(canvas)
        truths.append(np.array(per_frame, dtype=np.float32))
    write_clip(path, images, pts=list(range(frames)), rate=25, crf=23, gop=25)  # a keyframe a second: segments
    return truths


class OracleDetector:
    """RetinaFace's full cost on every frame (random weights, nothing kept), the clip's true faces out."""

    def __init__(self, inner: Any, truths: list[Any]) -> None:
        self.inner = inner
        self.io = inner.io  # its picture uploads count as the run's
        self.inner.threshold = 2.0  # scores are <= 1: random weights keep no box, so NMS costs what it would
        self.truths = truths
        self.next = 0

    def detect(self, images: list[Any], sar: float = 1.0) -> list[Any]:
        import numpy as np

        from vidrestore.stages.detect import Detections

        found = self.inner.detect(images, sar)
        out = []
        for real in found:
            lms = self.truths[self.next % len(self.truths)]
            self.next += 1
            centre = lms.mean(axis=1)
            half = np.ptp(lms, axis=1).max(axis=1)[:, None]  # eye-to-mouth span: about half the face
            boxes = np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)
            scores = np.full(len(lms), 0.99, np.float32)
            # scene cuts and the uploaded picture as in a real run
            out.append(Detections(boxes, scores, lms.astype(np.float32), real.thumb, real.picture))
        return out


class BusySampler:
    """Mean NVML GPU utilisation (share of time a kernel ran) while the block runs."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BusySampler:
        import torch

        if self.device.type == "cuda":
            try:
                torch.cuda.utilization(self.device)
            except Exception as exc:  # NVML missing or refused: the share stays unknown, and says why
                print(f"  (GPU utilisation not readable: {type(exc).__name__}: {exc})")
                return self
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        import torch

        while not self._stop.wait(0.05):
            self.samples.append(float(torch.cuda.utilization(self.device)))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def share(self) -> float | None:
        return round(sum(self.samples) / len(self.samples) / 100, 3) if self.samples else None


def _null_sink(clip: Path, config: Any, stages: Callable[[Iterator[Any]], Iterator[Any]]) -> int:
    """Decode and run the face stages; drop the frames (no encoder)."""
    from vidrestore.control import RunControl
    from vidrestore.io.reader import VideoReader

    control = RunControl()
    reader = VideoReader(clip, control, queue_size=config.pipeline.queue_size, copy_audio=False)
    n = 0
    try:
        for _ in stages(iter(reader)):
            n += 1
    finally:
        reader.close()
    if control.error is not None:
        raise control.error
    return n


def end_to_end(
    tmp: Path,
    weights: Path,
    device: Any,
    size: tuple[int, int],
    frames: int,
    face_counts: list[int],
    presets: list[str],
    small: bool,
    workers: list[int],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of frames/s with what limits each (syncs, bytes, CPU, GPU busy), and a profile of one
    steady-state stretch with the implicit-sync check in error mode."""
    from bench.limits import SyncCount, cpu_seconds, moved, profile_summary
    from testkit.weights import save_random_weights
    from vidrestore.config import load_config
    from vidrestore.io.encoders import video_encoder_opens
    from vidrestore.models.store import ModelStore, default_weights_dir
    from vidrestore.run.file import build_stages, restore_file
    from vidrestore.stats import RunStats

    store = ModelStore(default_weights_dir())
    det = save_random_weights("retinaface", tmp / "det.pth", small=small, key=None)
    up = save_random_weights("srvgg_compact", tmp / "up.pth", small=small, key="params")
    parse = save_random_weights("parsenet", tmp / "parse.pth", small=False, key=None)
    base = [
        f"device={device.type}",
        "detector.model=retinaface_resnet50",
        f"detector.weights={det}",
        f"restorer.weights={weights}",
        f"upscaler.weights={up}",
        f"restorer.parsing_weights={parse}",
        "output.overwrite=true",
    ]
    if small:
        base.append("restorer.parsing_mask=false")  # ParseNet has no small variant: seconds per face on a CPU
    rows: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    tag = f"{size[0]}x{size[1]}"

    def measure(faces: int, sink: str, run: Callable[[], int], stages: Any, stats: RunStats | None) -> None:
        """One row: ``run`` (returns frames) timed, with its syncs, bytes, waits and CPU seconds."""
        counters = stages.counters() if stages is not None else []
        before, cpu0 = moved(counters), cpu_seconds()
        syncs = SyncCount(device)
        with BusySampler(device) as busy, syncs.watching():
            t0 = time.perf_counter()
            n = run()
            elapsed = time.perf_counter() - t0
        after, cpu1 = moved(counters), cpu_seconds()
        per = max(n, 1)
        row: dict[str, Any] = {"size": tag, "faces": faces, "sink": sink, "frames": n, "fps": round(n / elapsed, 2)}
        row["gpu_busy"] = busy.share
        row["implicit_syncs_per_frame"] = round(syncs.count / per, 3) if device.type == "cuda" else None
        row["waits_per_frame"] = round((after["readbacks"] - before["readbacks"]) / per, 3)
        row["mb_per_frame"] = round(
            (after["bytes_up"] + after["bytes_down"] - before["bytes_up"] - before["bytes_down"]) / per / 1e6, 2
        )
        row["cpu_s_per_frame"] = {k: round((cpu1[k] - cpu0[k]) / per, 4) for k in cpu0}
        if stats is not None:
            row["faces_restored"] = stats.faces_restored
            row["stage_seconds"] = {k: round(v, 2) for k, v in stats.stage_seconds.items()}
        rows.append(row)
        print(f"  {faces} face(s), {sink}: {row['fps']} frames/s, GPU busy {row['gpu_busy']}", flush=True)

    def fresh(stages: Any) -> RunStats:
        stats = RunStats()
        stages.stats, stages.restore.stats, stages.restore.timer = stats, stats, stats.add_time
        return stats

    clips: dict[int, Path] = {}
    for faces in face_counts:
        clip = clips[faces] = tmp / f"clip-{faces}.mp4"
        truths = make_clip(clip, faces, size, frames, face_px=(0.25 if faces == 1 else 0.18) * size[1])
        config = load_config(None, base)
        stages = build_stages(config, store, RunStats())
        stages.detector = OracleDetector(stages.detector, truths)
        assert stages.restore is not None
        _null_sink(clip, config, stages)  # warm-up: cuDNN autotuning, allocator
        stats = fresh(stages)
        measure(faces, "null", partial(_null_sink, clip, config, stages), stages, stats)
        if faces == face_counts[0]:
            short = tmp / "short.mp4"
            make_clip(short, faces, size, min(frames, 48), face_px=0.25 * size[1])
            strict = SyncCount(device, strict=True)
            with strict.watching():
                _null_sink(short, config, stages)
            checks["sync_debug_error_mode"] = strict.error or "no implicit sync"
            checks["profile_48_frames"] = profile_summary(device, partial(_null_sink, short, config, stages))
        if stages.overlap:  # the same without detection on its own thread, side by side
            stages.overlap = False
            stats = fresh(stages)
            measure(faces, "null, no overlap", partial(_null_sink, clip, config, stages), stages, stats)
            stages.overlap = True
        for preset in presets if faces == face_counts[0] else presets[1:2]:
            cfg = load_config(None, [*base, "output.codec=libx264", f"output.preset={preset}"])
            stats = fresh(stages)

            def encode(cfg: Any = cfg, stats: RunStats = stats, clip: Path = clip) -> int:
                restore_file(clip, tmp / "out.mp4", cfg, stages, stats)  # noqa: B023
                return stats.frames

            measure(faces, f"libx264 {preset}", encode, stages, stats)
        if faces == face_counts[0] and video_encoder_opens("h264_nvenc", size[0], size[1], "yuv420p"):
            cfg = load_config(None, [*base, "output.codec=h264_nvenc"])
            stats = fresh(stages)

            def nvenc(cfg: Any = cfg, stats: RunStats = stats, clip: Path = clip) -> int:
                restore_file(clip, tmp / "nv.mp4", cfg, stages, stats)  # noqa: B023
                return stats.frames

            measure(faces, "h264_nvenc", nvenc, stages, stats)
    rows += worker_rows(tmp, base, size, frames, workers, store)
    for preset in presets:  # the encoder's own ceiling: decode + encode, no face stages
        cfg = load_config(None, ["detector.model=none", "output.overwrite=true", f"output.preset={preset}"])
        stats = RunStats()
        plain = build_stages(cfg, store, stats)

        def alone(cfg: Any = cfg, stats: RunStats = stats, plain: Any = plain) -> int:
            restore_file(clips[face_counts[0]], tmp / "out.mp4", cfg, plain, stats)
            return stats.frames

        measure(0, f"libx264 {preset}, encoder alone (no face stages)", alone, None, None)
    cfg = load_config(None, ["detector.model=none"])
    plain = build_stages(cfg, store, RunStats())
    measure(
        0, "null, decode alone (the I/O ceiling)", lambda: _null_sink(clips[face_counts[0]], cfg, plain), None, None
    )
    return rows, checks


def worker_rows(
    tmp: Path, base: list[str], size: tuple[int, int], frames: int, workers: list[int], store: Any
) -> list[dict[str, Any]]:
    """x264 veryfast with ``pipeline.workers`` processes on a clip cut in segments (one face). The
    oracle detector cannot cross into the workers, and RetinaFace with random weights "finds" dozens
    of faces: these rows detect with CenterFace (on each worker's CPU), which finds the real one."""
    from bench.limits import cpu_seconds
    from vidrestore.config import load_config
    from vidrestore.run.restore import restore_paths

    out: list[dict[str, Any]] = []
    if not workers:
        return out
    clip = tmp / "long.mp4"
    longer = frames * 4  # 800 frames at 1080p: 32 s, two segments per worker at 8 workers
    make_clip(clip, 1, size, longer, face_px=0.25 * size[1])
    seconds = longer / 25 / (2 * max(workers))  # two segments per worker at the most
    for n in workers:
        cfg = load_config(
            None,
            [*base, "detector.model=centerface", "detector.weights=null", "detector.threshold=0.5",
             "output.codec=libx264", "output.preset=veryfast", f"pipeline.workers={n}",
             f"pipeline.segment_seconds={seconds}"],
        )  # fmt: skip
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        summary = restore_paths([clip], tmp / f"w{n}.mp4", cfg, store)
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds()
        segs = summary.stats.segments
        busy = sum(float(g["seconds"] or 0) for g in segs)
        row = {
            "size": f"{size[0]}x{size[1]}",
            "faces": 1,
            "sink": f"libx264 veryfast, workers={n} (processes)",
            "frames": summary.stats.frames,
            "fps": round(summary.stats.frames / elapsed, 2),  # start-up (each worker loads its models) included
            "fps_steady": round(summary.stats.frames / busy * n, 2) if busy else None,
            "cpu_s_per_frame": {k: round((cpu1[k] - cpu0[k]) / max(summary.stats.frames, 1), 4) for k in cpu0},
        }
        out.append(row)
        print(f"  workers={n}: {row['fps']} frames/s ({row['fps_steady']} steady)", flush=True)
    return out


def result_path(out: Path | None, smoke: bool) -> Path:
    """Where the JSON goes: ``out``, else a fresh temp folder for a smoke run, else bench/results/gpu.json."""
    if out is not None:
        return out
    return Path(tempfile.mkdtemp(prefix="vidrestore-gpu-smoke-")) / "gpu.json" if smoke else RESULTS / "gpu.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on whatever device is here (CI)")
    ap.add_argument("--out", type=Path, help="result file (default: bench/results/gpu.json; smoke: a temp file)")
    ap.add_argument("--wheelhouse", type=Path, help="install these wheels first (a bare GPU machine)")
    ap.add_argument("--frames", type=int, default=200, help="frames per end-to-end clip (default 200)")
    args = ap.parse_args()
    if args.wheelhouse is not None:
        install_wheelhouse(args.wheelhouse)

    import torch

    from bench.common import machine, table

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        precisions, batches, seconds = ["fp32"], [1, 2], 0.0
        size, frames, presets, workers = (320, 240), 6, ["ultrafast", "veryfast"], [2]
    else:
        if device.type != "cuda":
            raise SystemExit("bench.gpu needs a CUDA device; use --smoke to check the script on a CPU")
        precisions = ["fp32", "bf16", "fp16"]
        batches, seconds = [1, 8, 32], 2.0
        size, frames, presets = (1920, 1080), args.frames, ["ultrafast", "veryfast", "medium"]
        workers = [2, 4, 8]
    out = result_path(args.out, args.smoke)
    result: dict[str, Any] = {"machine": machine(), "smoke": args.smoke}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        weights = gfpgan_weights(d, small=args.smoke)
        t0 = time.perf_counter()
        result["restorer"] = restorer_sweep(weights, device, precisions, batches, seconds)
        print(table(result["restorer"], ["precision", "batch", "faces_per_s", "tflops", "of_peak", "finite"]))
        rows, checks = end_to_end(d, weights, device, size, frames, [1, 4], presets, args.smoke, workers)
        result["end_to_end"], result["checks"] = rows, checks
        columns = ["size", "faces", "sink", "frames", "fps", "gpu_busy", "implicit_syncs_per_frame", "mb_per_frame"]
        print(table(rows, columns), flush=True)
        print(json.dumps(checks, indent=1), flush=True)
        result["seconds"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
