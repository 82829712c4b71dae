"""Regenerate clips/sample.mp4: a degraded, moving real face with a sound track.

The face is skimage.data.astronaut() (public domain, NASA), moved, turned, blurred,
noised and heavily compressed at a low resolution, like an old video-call recording,
with a two-tone audio track. Run from the repository root:

    python -m clips.make_sample
"""

from __future__ import annotations

import math
from pathlib import Path

from testkit.clips import make_face_clip


def trajectory(i: int) -> tuple[float, float, float]:
    """A head that sways and drifts, then turns a little, as people do on calls."""
    return (25 * math.sin(i / 18), 6 * math.sin(i / 7) + 0.1 * i - 4, 0.08 * math.sin(i / 25))


def main() -> None:
    out = Path(__file__).resolve().parent / "sample.mp4"
    make_face_clip(out, frames=75, size=(320, 240), face_scale=0.55, trajectory=trajectory, rate=25,
                   crf=34, blur=1.3, noise=5.0, audio=True, seed=7)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
