"""Peak memory of a restore under each engine, side by side in one run: the torch copy of a
network's weights is freed once an engine on the CPU holds its own, so an exported engine should
cost about what eager torch costs, not that plus a second copy.

    python -m bench.engine_memory                  # eager, onnxruntime, openvino; 4 frames
    python -m bench.engine_memory --engines eager,openvino

Each run is its own ``python -m vidrestore restore`` process on a 4-frame 320x240 clip with one
real face (CenterFace), the full-size GFPGAN v1.4, ParseNet and realesr-general-x4v3 with random
weights given as the user's own files; its peak RSS (with children) is sampled every 20 ms. Each
engine runs twice into one engines folder: the first run exports (and compiles), the second loads
the verified files, as every later run of a user does. Precision is ``auto`` (OpenVINO in bf16
where this CPU does it natively). Writes bench/results/engine_memory.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench.common import machine, run_measured, table, write_result
from testkit.clips import make_face_clip
from testkit.weights import save_random_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="eager,onnxruntime,openvino")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--out", type=Path, help="write the JSON here instead of bench/results/")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidrestore-engine-memory-") as tmp:
        d = Path(tmp)
        clip = make_face_clip(d / "clip.mp4", frames=args.frames, size=(320, 240), face_scale=0.6).path
        g = save_random_weights("gfpgan_v1_clean", d / "g.pth", small=False)
        p = save_random_weights("parsenet", d / "p.pth", small=False, key=None)
        u = save_random_weights("srvgg_compact", d / "u.pth", small=False, key="params")
        sets = [f"restorer.weights={g}", f"restorer.parsing_weights={p}", f"upscaler.weights={u}"]
        common = ["--detector", "centerface", "-q", *(a for s in sets for a in ("--set", s))]
        for engine in args.engines.split(","):
            env = {**os.environ, "VIDRESTORE_ENGINES": str(d / f"engines-{engine}")}
            for run in ("first (export)", "later (cached)"):
                out = d / f"{engine}-{len(rows)}.mp4"
                cmd = ["-m", "vidrestore", "restore", str(clip), "-o", str(out), "--set", f"engine={engine}", *common]
                wall, peak, _ = run_measured(cmd, env)
                row = {"engine": engine, "run": run, "wall_s": round(wall, 1), "peak_rss_mb": round(peak / 2**20)}
                rows.append(row)
                print(table([row], list(row)), flush=True)
    eager = next((r["peak_rss_mb"] for r in rows if r["engine"] == "eager" and r["run"].startswith("later")), None)
    for r in rows:
        if eager:
            r["vs_eager_mb"] = r["peak_rss_mb"] - eager
    print(table(rows, ["engine", "run", "wall_s", "peak_rss_mb", "vs_eager_mb"]))
    write_result("engine_memory", {"machine": machine(), "frames": args.frames, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
