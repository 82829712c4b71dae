"""Speed against what users run today, side by side in one run, same weights, same detector, same clips.

    python -m bench                 # the full run (CPU: about 15 minutes on 2 cores)
    python -m bench --quick         # fewer frames, 480p only (CPU: about 6 minutes)

Methods:
  reference  the gfpgan package's per-frame loop: decode, GFPGANer.enhance(frame, paste_back=True)
             (its face helper: detection, aligned crop, GFPGAN at batch 1, ParseNet mask, CPU paste), encode
  two-step   the seed's pattern for tiny faces: Real-ESRGAN x4plus on the whole frame, then GFPGANer on that
  vidrestore the CLI's pipeline with default settings (threads, batching, smoothing, crop-only upscaling)

All use the same GFPGAN v1.4 and ParseNet networks (full size; random weights unless the released
files are in the weights cache) and the same detector (CenterFace, which needs no download), so the
comparison is of the pipelines, not of the models. GFPGAN's noise is fixed for all, as vidrestore
fixes it. "agreement" is the PSNR between vidrestore (smoothing and temporal fusion off, which the
reference does not have) and the reference on the face regions, before encoding: the speed is not
bought with a different result.

Prints a table and writes bench/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from bench.common import machine, run_measured, save, table
from testkit.clips import make_face_clip
from testkit.weights import reference_gfpganer, save_random_weights
from vidrestore.config import Config, load_config
from vidrestore.errors import ModelError
from vidrestore.models.loading import load_model
from vidrestore.models.store import ModelStore, default_weights_dir
from vidrestore.stages.detect import CenterFaceDetector

RESOLUTIONS = {480: (854, 480), 720: (1280, 720), 1080: (1920, 1080)}


def weights_files(tmp: Path) -> dict[str, Path]:
    """The released files where cached and verified, else full-size random-weight ones."""
    store = ModelStore(default_weights_dir())
    out = {}
    for name, maker, key in [
        ("gfpgan-1.4", "gfpgan_v1_clean", "params_ema"),
        ("parsenet", "parsenet", None),
        ("realesr-general-x4v3", "srvgg_compact", "params"),
        ("realesrgan-x4plus", "rrdbnet", "params_ema"),
    ]:
        try:
            out[name] = store.resolve(name)
        except ModelError:  # not cached: random weights of the same, full-size architecture
            path = tmp / f"{name}.pth"
            # GFPGAN's weights x0.1: its output is then smooth, like a trained one's, not pixel noise in
            # which any sub-pixel shift would dominate the agreement check; the cost is the same
            scale = 0.1 if maker == "gfpgan_v1_clean" else 1.0
            out[name] = path if path.exists() else save_random_weights(maker, path, small=False, key=key, scale=scale)
    return out


def vidrestore_config(w: dict[str, Path], *extra: str) -> Config:
    return load_config(
        None,
        [
            "detector.model=centerface",
            f"restorer.weights={w['gfpgan-1.4']}",
            f"restorer.parsing_weights={w['parsenet']}",
            f"upscaler.weights={w['realesr-general-x4v3']}",
            "output.preset=veryfast",
            *extra,
        ],
    )


def decode(path: Path) -> Iterator[tuple[Any, np.ndarray]]:
    import av

    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            yield frame, frame.to_ndarray(format="rgb24")


def encode_loop(src: Path, dst: Path, process: Callable[[np.ndarray], np.ndarray]) -> int:
    """What a user's script does: decode each frame, process it, encode it (libx264, same settings)."""
    import av

    n = 0
    with av.open(str(dst), "w") as out:
        stream: Any = None
        for frame, rgb in decode(src):
            result = process(rgb)
            if stream is None:
                stream = out.add_stream("libx264", rate=25)
                stream.width, stream.height, stream.pix_fmt = result.shape[1], result.shape[0], "yuv420p"
                stream.options = {"crf": "18", "preset": "veryfast"}
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(result), format="rgb24")
            vf.pts = frame.pts
            out.mux(stream.encode(vf))
            n += 1
        out.mux(stream.encode(None))
    return n


def face_psnr(a: list[np.ndarray], b: list[np.ndarray], landmarks: np.ndarray) -> float:
    """PSNR over the face regions (a square of 2.2x the eye-mouth span around the landmarks)."""
    err, count = 0.0, 0
    for i, (x, y) in enumerate(zip(a, b)):
        lm = landmarks[i]
        cx, cy = lm.mean(axis=0)
        half = 1.1 * max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1])) * 1.6
        ys = slice(max(int(cy - half), 0), int(cy + half))
        xs = slice(max(int(cx - half), 0), int(cx + half))
        d = x[ys, xs].astype(np.float64) - y[ys, xs].astype(np.float64)
        err += float((d**2).sum())
        count += d.size
    mse = err / max(count, 1)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def _timed_loop(clip: Path, dst: Path, process: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
    with torch.inference_mode():
        t0 = time.perf_counter()
        n = encode_loop(clip, dst, process)
        return {"seconds": time.perf_counter() - t0, "frames": n}


def work_reference(clip: Path, w: dict[str, Path], out: Path) -> dict[str, Any]:
    """The gfpgan package's loop; its pre-encode frames are kept (out.npy) for the agreement check."""
    ref = reference_gfpganer(
        load_model("gfpgan_v1_clean", w["gfpgan-1.4"]),
        load_model("parsenet", w["parsenet"]),
        CenterFaceDetector(size=4096, threshold=0.5),
    )
    outputs: list[np.ndarray] = []

    faces = 0

    def process(rgb: np.ndarray) -> np.ndarray:
        nonlocal faces
        _, restored_faces, restored = ref.enhance(np.ascontiguousarray(rgb[:, :, ::-1]), paste_back=True)
        faces += len(restored_faces)
        outputs.append(restored[:, :, ::-1])
        return outputs[-1]

    result = _timed_loop(clip, out, process)
    np.save(out.with_suffix(".npy"), np.stack(outputs))
    return {**result, "faces": faces}


def work_two_step(clip: Path, w: dict[str, Path], out: Path) -> dict[str, Any]:
    from vidrestore.models.compat import import_research_module

    realesrgan = import_research_module("realesrgan")
    upsampler = realesrgan.RealESRGANer(
        scale=4,
        model_path=str(w["realesrgan-x4plus"]),
        model=load_model("rrdbnet", w["realesrgan-x4plus"]),
        tile=0,
        half=False,
    )
    ref = reference_gfpganer(
        load_model("gfpgan_v1_clean", w["gfpgan-1.4"]),
        load_model("parsenet", w["parsenet"]),
        CenterFaceDetector(size=8192, threshold=0.5),
    )

    faces = 0

    def process(rgb: np.ndarray) -> np.ndarray:
        nonlocal faces
        big, _ = upsampler.enhance(np.ascontiguousarray(rgb[:, :, ::-1]), outscale=4)  # step 1: the whole frame
        _, restored_faces, restored = ref.enhance(big, paste_back=True)  # step 2: restore on the upscaled frame
        faces += len(restored_faces)
        return restored[:, :, ::-1]  # type: ignore[no-any-return]

    return {**_timed_loop(clip, out, process), "faces": faces}


def work_vidrestore(clip: Path, w: dict[str, Path], out: Path, *extra: str) -> dict[str, Any]:
    """vidrestore's pipeline as the CLI runs it; models are loaded before the clock starts, as for the others."""
    from vidrestore.run.file import build_stages, restore_file
    from vidrestore.stats import RunStats

    config = vidrestore_config(w, *extra)
    stats = RunStats()
    stages = build_stages(config, ModelStore(default_weights_dir()), stats)
    t0 = time.perf_counter()
    restore_file(clip, out, config, stages, stats)
    return {
        "seconds": time.perf_counter() - t0,
        "frames": stats.frames,
        "stage_seconds": stats.stage_seconds,
        "faces": stats.faces_restored,
        "upscaled": stats.faces_upscaled,
    }


def work_agreement(clip: Path, w: dict[str, Path], reference: Path) -> dict[str, Any]:
    """PSNR on the face regions between vidrestore (smoothing and temporal fusion off: the reference has
    neither) and the reference's frames."""
    from vidrestore import restore_frames

    frames = [rgb for _, rgb in decode(clip)]
    off = ("smoothing.method=none", "temporal.method=none", "detector.size=4096")
    ours = list(restore_frames(frames, vidrestore_config(w, *off)))
    truth = np.load(clip.with_suffix(".landmarks.npy"))
    theirs = list(np.load(reference))
    # and how far restoration moved the faces from the input (low: they did change)
    return {"psnr_db": face_psnr(ours, theirs, truth), "reference_vs_input_db": face_psnr(theirs, frames, truth)}


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "reference": work_reference,
    "two-step": work_two_step,
    "vidrestore": work_vidrestore,
    "agreement": work_agreement,
}


def worker(method: str, clip: Path, wdir: Path, out: Path, *extra: str) -> None:
    torch.set_num_threads(psutil.cpu_count(logical=True) or 1)
    w = weights_files(wdir)
    sys.stdout.write(json.dumps(WORKERS[method](clip, w, out, *extra)) + "\n")


def measure(method: str, clip: Path, wdir: Path, out: Path, *extra: str) -> dict[str, Any]:
    """Run one method in a fresh process: its own peak RSS, nothing left over from the others."""
    _, peak, stdout = run_measured(["-m", "bench.run", "--worker", method, str(clip), str(wdir), str(out), *extra])
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(peak / 2**20, 1)
    return result


def sway(i: int) -> tuple[float, float, float]:
    return (30 * math.sin(i / 6), 8 * math.sin(i / 4), 0.05 * math.sin(i / 9))


def _clip(d: Path, name: str, **kwargs: Any) -> Path:
    clip = make_face_clip(d / f"{name}.mp4", **kwargs)
    np.save(clip.path.with_suffix(".landmarks.npy"), clip.landmarks)
    return clip.path


def _row(clip: str, method: str, r: dict[str, Any], **extra: Any) -> dict[str, Any]:
    fps = r["frames"] / r["seconds"]
    row = {
        "clip": clip,
        "method": method,
        "frames": r["frames"],
        "faces": r["faces"],
        "fps": round(fps, 4),
        "peak_rss_mb": r["peak_rss_mb"],
        **extra,
    }
    if "stage_seconds" in r:
        total = sum(r["stage_seconds"].values()) or 1.0
        row["stage_share"] = {k: round(v / total, 3) for k, v in r["stage_seconds"].items()}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer frames, 480p only")
    ap.add_argument("--frames", type=int, help="frames per clip (default 12, quick 6)")
    ap.add_argument("--resolutions", type=int, nargs="+", choices=sorted(RESOLUTIONS))
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        method, clip, wdir, out, *extra = args.worker
        worker(method, Path(clip), Path(wdir), Path(out), *extra)
        return
    n = args.frames or (6 if args.quick else 12)
    resolutions = args.resolutions or ([480] if args.quick else [480, 720, 1080])
    rows: list[dict[str, Any]] = []
    cols = [
        "clip",
        "method",
        "frames",
        "faces",
        "fps",
        "x_reference",
        "x_two_step",
        "agreement_db",
        "changed_db",
        "peak_rss_mb",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        wdir = d / "weights"
        w = weights_files(wdir)
        for res in resolutions:
            clip = _clip(
                d,
                f"face{res}",
                frames=n,
                size=RESOLUTIONS[res],
                face_scale=res / 512,  # a video-call face: ~110 px at 480p, ~250 px at 1080p
                trajectory=sway,
                blur=1.0,
                noise=4,
                crf=28,
            )
            ref = measure("reference", clip, wdir, d / f"ref{res}.mp4")
            ours = measure("vidrestore", clip, wdir, d / f"vr{res}.mp4")
            if ours["faces"] != ref["faces"] or ours["faces"] == 0:
                print(f"warning: faces restored differ (reference {ref['faces']}, vidrestore {ours['faces']})")
            agree = measure("agreement", clip, wdir, d / f"ref{res}.npy")
            label = f"{res}p, 1 face"
            rows.append(_row(label, "reference", ref))
            speedup = (ours["frames"] / ours["seconds"]) / (ref["frames"] / ref["seconds"])
            rows.append(
                _row(
                    label,
                    "vidrestore",
                    ours,
                    x_reference=round(speedup, 2),
                    agreement_db=round(agree["psnr_db"], 1),
                    changed_db=round(agree["reference_vs_input_db"], 1),
                )
            )
            print(table(rows[-2:], cols), flush=True)
        clip = _clip(
            d,
            "tiny",
            frames=max(2, n // 3),
            size=(854, 480),
            face_scale=0.25,  # faces of ~25 px (eyes 11 px apart), as wide surveillance shots have them
            trajectory=sway,
            blur=0.8,
            noise=3,
            crf=26,
        )
        two = measure("two-step", clip, wdir, d / "two.mp4")
        ours = measure("vidrestore", clip, wdir, d / "vrtiny.mp4")
        speedup = (ours["frames"] / ours["seconds"]) / (two["frames"] / two["seconds"])
        if ours["faces"] != two["faces"] or ours["faces"] == 0:
            print(f"warning: faces restored differ (two-step {two['faces']}, vidrestore {ours['faces']})")
        rows.append(_row("480p, tiny face", "two-step", two))
        rows.append(_row("480p, tiny face", "vidrestore", ours, x_two_step=round(speedup, 1)))
    print()
    print(table(rows, cols))
    path = save(
        "speed",
        {
            "rows": rows,
            "frames": n,
            "machine": machine(),
            "weights": {k: ("released" if "cache" in str(v) else "random") for k, v in w.items()},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
