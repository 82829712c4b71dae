"""``vidrestore compare --plot``: the per-frame flicker of a run, drawn as a picture (no plotting library).

The figures come from a restore run's ``--report`` (``temporal.files``): for each measured frame,
the mean warping error of its faces in the input, in the restorer's own per-frame output, and in
the output (fused where fusion is on), in grey levels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidrestore.errors import InputError
from vidrestore.io.atomic import AtomicTarget
from vidrestore.io.images import write_image

__all__ = ["draw_flicker", "flicker_series", "write_flicker_plot"]

SERIES = (("input", (120, 120, 120)), ("per-frame restoration", (215, 60, 40)), ("output", (30, 110, 220)))
"""The three lines, in the report's column order, with their colours (RGB)."""


def flicker_series(report: Path, original: Path) -> list[list[float]]:
    """The per-frame rows ``[frame, input, per_frame, output]`` the report holds for ``original``."""
    try:
        data: Any = json.loads(report.read_text(encoding="utf-8"))
        files: dict[str, Any] = data["temporal"]["files"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        kind = exc.__class__.__name__
        raise InputError(f"{report}: not a vidrestore --report with flicker figures ({kind})") from exc
    match = [v for k, v in files.items() if Path(k).resolve() == original.resolve()]
    if not match:
        match = [v for k, v in files.items() if Path(k).name == original.name]
    if len(match) != 1 or not match[0].get("frames"):
        raise InputError(f"{report}: no flicker figures for {original} (faces in consecutive frames are needed)")
    rows: list[list[float]] = match[0]["frames"]
    return rows


def draw_flicker(rows: list[list[float]], size: tuple[int, int] = (1200, 420), title: str = "") -> np.ndarray:
    """An RGB line plot of the rows (``[frame, input, per_frame, output]``): flicker per frame."""
    w, h = size
    left, right, top, bottom = 70, 20, 40, 50
    image = np.full((h, w, 3), 255, np.uint8)
    data = np.asarray(rows, dtype=np.float64)
    x0, x1 = float(data[:, 0].min()), float(max(data[:, 0].max(), data[:, 0].min() + 1))
    y1 = float(np.nanmax(data[:, 1:])) * 1.3 or 1.0  # headroom for the legend
    pw, ph = w - left - right, h - top - bottom

    def at(x: float, y: float) -> tuple[int, int]:
        return int(left + (x - x0) / (x1 - x0) * pw), int(top + ph - y / y1 * ph)

    font, grey = cv2.FONT_HERSHEY_SIMPLEX, (90, 90, 90)
    for k in range(6):
        y = y1 * k / 5
        cv2.line(image, at(x0, y), at(x1, y), (228, 228, 228), 1)
        cv2.putText(image, f"{y:.1f}", (6, at(x0, y)[1] + 5), font, 0.45, grey, 1, cv2.LINE_AA)
        x = x0 + (x1 - x0) * k / 5
        cv2.putText(image, f"{x:.0f}", (at(x, 0)[0] - 12, h - bottom + 20), font, 0.45, grey, 1, cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (left + pw, top + ph), grey, 1)
    cv2.putText(image, "frame", (left + pw // 2 - 20, h - 8), font, 0.5, grey, 1, cv2.LINE_AA)
    cv2.putText(image, title or "flicker (grey levels)", (left, 26), font, 0.6, (20, 20, 20), 1, cv2.LINE_AA)
    for col, (_, colour) in enumerate(SERIES, start=1):
        points = np.array([at(x, y) for x, y in zip(data[:, 0], data[:, col], strict=True)], np.int32)
        cv2.polylines(image, [points], False, colour, 2, cv2.LINE_AA)
    lx = left + pw - 240  # the legend, over the lines
    cv2.rectangle(image, (lx - 8, top + 4), (left + pw - 4, top + 70), (255, 255, 255), -1)
    cv2.rectangle(image, (lx - 8, top + 4), (left + pw - 4, top + 70), (200, 200, 200), 1)
    for k, (name, colour) in enumerate(SERIES):
        ly = top + 22 + 20 * k
        cv2.line(image, (lx, ly - 5), (lx + 24, ly - 5), colour, 3)
        cv2.putText(image, name, (lx + 32, ly), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return image


def write_flicker_plot(report: Path, original: Path, dst: Path, overwrite: bool = False) -> int:
    """Draw the flicker ``report`` holds for ``original`` into the image ``dst``; return the points drawn."""
    rows = flicker_series(report, original)
    image = draw_flicker(rows, title=f"flicker per frame: {original.name} (grey levels; lower is steadier)")
    target = AtomicTarget(dst, overwrite)
    with target as tmp:
        write_image(tmp, image, None, 95, fmt_suffix=dst.suffix)
        target.commit()
    return len(rows)
