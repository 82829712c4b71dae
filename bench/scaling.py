"""How vidrestore's time scales: with clip length (linear), faces per frame and batch size.

    python -m bench.scaling          # small random-weight variants, parsing mask off (CPU: ~3 min)
    python -m bench.scaling --full   # the full-size architectures (use on a GPU)

Each point is one ``vidrestore`` run in its own process (peak RSS included). Memory against
length is ``python -m bench.memory --mode restore``. Writes bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.common import machine, run_measured, save, table
from testkit.clips import astronaut, write_clip
from testkit.weights import save_random_weights


def faces_clip(path: Path, frames: int, faces: int, size: tuple[int, int] = (640, 360)) -> None:
    """``faces`` astronauts side by side, swaying, in every frame."""
    w, h = size
    cols = math.ceil(math.sqrt(faces))
    rows = math.ceil(faces / cols)
    cell = min(w // cols, h // rows)
    face = cv2.resize(astronaut(), (cell, cell), interpolation=cv2.INTER_AREA)
    images = []
    for i in range(frames):
        img = np.full((h, w, 3), 60, np.uint8)
        for k in range(faces):
            r, c = divmod(k, cols)
            dx = int(4 * math.sin(i / 5 + k))
            x0 = min(max(c * (w // cols) + dx, 0), w - cell)
            img[r * cell : (r + 1) * cell, x0 : x0 + cell] = face
        images.append(img)
    write_clip(path, images, crf=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full-size architectures (slow on a CPU)")
    args = ap.parse_args()
    results: dict[str, Any] = {"machine": machine(), "models": "full" if args.full else "small"}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        small = not args.full
        g = save_random_weights("gfpgan_v1_clean", d / "g.pth", small=small, scale=0.5)
        u = save_random_weights("srvgg_compact", d / "u.pth", small=small, key="params")
        p = save_random_weights("parsenet", d / "p.pth", small=False, key=None)
        # ParseNet has no small variant: with small models the parsing mask is off, else it is the default
        parse = ["--set", f"restorer.parsing_weights={p}"] if args.full else ["--set", "restorer.parsing_mask=false"]
        base = [
            "--detector",
            "centerface",
            "-q",
            "-y",
            "--set",
            f"restorer.weights={g}",
            "--set",
            f"upscaler.weights={u}",
            *parse,
            "--set",
            "output.preset=veryfast",
        ]

        def point(clip: Path, *extra: str) -> dict[str, Any]:
            wall, peak, _ = run_measured(
                [
                    "-m",
                    "vidrestore",
                    "restore",
                    str(clip),
                    "-o",
                    str(d / "out.mp4"),
                    "--report",
                    str(d / "r.json"),
                    *base,
                    *extra,
                ]
            )
            import json

            report = json.loads((d / "r.json").read_text())
            counts = report["counts"]
            seconds = sum(report["stage_seconds"].values())
            return {
                "frames": counts["frames"],
                "faces": counts["faces_restored"],
                "wall_s": round(wall, 1),
                "stage_s": round(seconds, 1),
                "fps": round(counts["frames"] / seconds, 2),
                "faces_per_s": round(counts["faces_restored"] / seconds, 2),
                "peak_rss_mb": round(peak / 2**20, 1),
            }

        length = []
        for frames in (10, 20, 40):
            faces_clip(d / f"len{frames}.mp4", frames, 1)
            length.append({"clip_frames": frames, **point(d / f"len{frames}.mp4")})
        print(table(length, ["clip_frames", "faces", "stage_s", "fps", "peak_rss_mb"]), flush=True)
        per_frame = []
        for faces in (1, 2, 4):
            faces_clip(d / f"faces{faces}.mp4", 10, faces)
            per_frame.append({"faces_per_frame": faces, **point(d / f"faces{faces}.mp4")})
        print(table(per_frame, ["faces_per_frame", "faces", "stage_s", "fps", "faces_per_s"]), flush=True)
        batch = []
        faces_clip(d / "batch.mp4", 12, 2)
        for size in (1, 4, 8):
            batch.append({"batch_size": size, **point(d / "batch.mp4", "--set", f"restorer.batch_size={size}")})
        print(table(batch, ["batch_size", "faces", "stage_s", "faces_per_s", "peak_rss_mb"]), flush=True)
        results.update(length=length, faces_per_frame=per_frame, batch_size=batch)
    first, last = length[0], length[-1]
    ratio = (last["stage_s"] / first["stage_s"]) / (last["clip_frames"] / first["clip_frames"])
    results["time_per_frame_ratio_long_vs_short"] = round(ratio, 2)
    print(f"time per frame, 40-frame clip vs 10-frame clip: x{ratio:.2f} (1.0 is linear)")
    print(f"wrote {save('scaling', results)}")


if __name__ == "__main__":
    main()
