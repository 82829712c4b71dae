"""Peak memory against clip length: it must stay flat (the pipeline streams, it never holds the video).

    python -m bench.memory                     # 1080p pass-through decode/encode, 10 s vs 60 s
    python -m bench.memory --mode restore      # face restoration (small random-weight models, 240p, 5 fps)

Each run is a separate ``python -m vidrestore restore`` process; its peak RSS (with children)
is sampled every 20 ms. Prints a table and writes bench/results/memory-<mode>.json.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

from bench.common import machine, run_measured, save, table


def make_clip(path: Path, seconds: int, size: tuple[int, int], rate: int) -> None:
    """A moving picture with a face and a tone track, encoded fast (x264 ultrafast)."""
    import av
    import cv2

    from testkit.clips import _write_tone, astronaut

    w, h = size
    face = cv2.resize(astronaut(), (min(w, h) // 2, min(w, h) // 2), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"preset": "ultrafast", "crf": "28"}
        a = c.add_stream("aac", rate=48000, layout="stereo")
        sent = 0
        for i in range(seconds * rate):
            img = np.empty((h, w, 3), np.uint8)
            img[..., 0] = (xx // 4 + i) % 256
            img[..., 1] = (yy // 4 + 2 * i) % 256
            img[..., 2] = 128
            x0 = int((w - face.shape[1]) / 2 + (w / 5) * math.sin(i / 30))
            y0 = (h - face.shape[0]) // 2
            img[y0 : y0 + face.shape[0], x0 : x0 + face.shape[1]] = face
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            c.mux(v.encode(frame))
            sent = _write_tone(c, a, sent, int((i + 1) / rate * 48000), 48000, 0)
        c.mux(v.encode(None))
        c.mux(a.encode(None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("passthrough", "restore"), default="passthrough")
    ap.add_argument("--lengths", type=int, nargs="+", default=[10, 60], help="clip lengths in seconds")
    args = ap.parse_args()
    size, rate = ((1920, 1080), 25) if args.mode == "passthrough" else ((320, 240), 5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        extra: list[str] = ["--detector", "none"]
        if args.mode == "restore":
            from testkit.weights import save_random_weights

            g = save_random_weights("gfpgan_v1_clean", d / "g.pth", small=True, scale=0.1)
            u = save_random_weights("srvgg_compact", d / "u.pth", small=True, key="params")
            # parsing mask off: ParseNet has no small variant and would make this a 20-minute run on a CPU
            extra = [
                "--detector",
                "centerface",
                "--set",
                f"restorer.weights={g}",
                "--set",
                f"upscaler.weights={u}",
                "--set",
                "restorer.parsing_mask=false",
            ]
        for seconds in args.lengths:
            clip = d / f"clip{seconds}.mp4"
            make_clip(clip, seconds, size, rate)
            wall, peak, _out = run_measured(
                [
                    "-m",
                    "vidrestore",
                    "restore",
                    str(clip),
                    "-o",
                    str(d / f"out{seconds}.mp4"),
                    "-q",
                    "--set",
                    "output.preset=ultrafast",
                    *extra,
                ]
            )
            rows.append(
                {
                    "seconds": seconds,
                    "frames": seconds * rate,
                    "size": f"{size[0]}x{size[1]}",
                    "wall_s": round(wall, 1),
                    "peak_rss_mb": round(peak / 2**20, 1),
                }
            )
    base, longest = rows[0]["peak_rss_mb"], rows[-1]["peak_rss_mb"]
    growth = (longest - base) / base
    print(table(rows, ["seconds", "frames", "size", "wall_s", "peak_rss_mb"]))
    print(
        f"peak RSS growth from {rows[0]['seconds']} s to {rows[-1]['seconds']} s: {growth:+.1%} "
        f"({'flat: within 15%' if abs(growth) <= 0.15 else 'NOT within 15%'})"
    )
    path = save(f"memory-{args.mode}", {"mode": args.mode, "runs": rows, "growth": growth, "machine": machine()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
