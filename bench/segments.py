"""Segments in parallel: 1 against 2 local workers, and Ray with 1 against 2 actors, on one clip.

    python -m bench.segments              # 30 s at 320x240, 5 s segments, small random-weight models
    python -m bench.segments --frames 300 # quicker

Each configuration is one ``vidrestore restore`` in its own process on the same clip (a moving
real face with audio), with CenterFace and the small random-weight GFPGAN (parsing mask off), so
decoding, detection, restoration and encoding all take their share, as on a GPU where the model is
fast. frames/s counts the whole command (models loaded, and for Ray the local cluster started,
included); ``run_fps`` is the run's own rate after start-up, from its report. Writes
bench/results/segments.json.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from bench.common import machine, run_measured, table, write_result
from testkit.clips import make_face_clip
from testkit.weights import save_random_weights

CONFIGS = (
    ("whole file (1 process)", ["--segment-seconds", "0"]),
    ("segments, 1 worker", ["--workers", "1"]),
    ("segments, 2 workers", ["--workers", "2"]),
    ("Ray, 1 actor", ["--ray", "--set", "cluster.actors=1"]),
    ("Ray, 2 actors", ["--ray", "--set", "cluster.actors=2"]),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=750, help="clip length in frames (25 fps)")
    ap.add_argument("--segment-seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, help="result file (default: bench/results/segments.json)")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vidrestore-segments-") as tmp:
        d = Path(tmp)
        clip = make_face_clip(
            d / "clip.mp4",
            frames=args.frames,
            size=(320, 240),
            trajectory=lambda i: (30 * math.sin(i / 15), 8 * math.sin(i / 7), 0.02 * math.sin(i / 11)),
            gop=50,
        )
        gfpgan = save_random_weights("gfpgan_v1_clean", d / "gfpgan.pth", small=True, scale=0.1)
        common = [
            "--detector", "centerface", "--set", f"restorer.weights={gfpgan}", "--set", "restorer.parsing_mask=false",
            "--set", "upscaler.below=0", "--segment-seconds", str(args.segment_seconds), "-q", "-y",
            "--set", "cluster.cpus_per_actor=1", "--offline", "--weights-dir", str(d / "cache"),
        ]  # fmt: skip
        for name, extra in CONFIGS:
            report = d / "report.json"
            seconds, peak, _ = run_measured(
                ["-m", "vidrestore", "restore", str(clip.path), "-o", str(d / "out.mp4"), *common, *extra,
                 "--report", str(report)]
            )  # fmt: skip
            data = json.loads(report.read_text())
            frames = data["counts"]["frames"]
            rows.append(
                {
                    "config": name,
                    "frames": frames,
                    "seconds": round(seconds, 1),
                    "fps": round(frames / seconds, 2),
                    "run_fps": round(frames / data["counts"]["wall_seconds"], 2),
                    "segments": len(data["segments"]),
                    # warm-up and look-ahead: frames each segment runs again around itself (one face each)
                    "faces_per_frame": round(data["counts"]["faces_restored"] / frames, 2),
                    "workers": len({s["worker"] for s in data["segments"]}) or 1,
                    "join_s": round(data["stage_seconds"].get("join", 0.0), 2),
                    "peak_rss_mb": round(peak / 2**20),
                }
            )
            print(table(rows[-1:], list(rows[-1])), flush=True)
    base = {r["config"]: r["fps"] for r in rows}
    for r in rows:
        ref = base["segments, 1 worker"] if "worker" in r["config"] else base.get("Ray, 1 actor", r["fps"])
        r["vs_one"] = f"{r['fps'] / ref:.2f}x" if "file" not in r["config"] else ""
    columns = ["config", "frames", "seconds", "fps", "run_fps", "vs_one", "segments", "faces_per_frame", "workers"]
    print(table(rows, [*columns, "join_s"]))
    write_result(
        "segments",
        {"machine": machine(), "frames": args.frames, "segment_seconds": args.segment_seconds, "rows": rows},
        args.out,
    )


if __name__ == "__main__":
    main()
