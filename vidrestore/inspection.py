"""``inspect``: faces and tracks as JSON, an annotated video, and a short table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidrestore.config import Config
from vidrestore.control import RunControl
from vidrestore.device import resolve_placement
from vidrestore.errors import ConfigError
from vidrestore.geometry import invert, map_points, square_pixels
from vidrestore.io.atomic import AtomicTarget, check_target
from vidrestore.io.images import is_image, read_animation, read_image
from vidrestore.models.store import ModelStore
from vidrestore.records import Face, Frame
from vidrestore.run.file import guarded, open_reader, restore_file
from vidrestore.stages.assemble import FaceStages, build_detector
from vidrestore.stats import RunStats

__all__ = ["InspectSummary", "annotate", "frame_json", "inspect_path"]


def _face_json(face: Face) -> dict[str, Any]:
    def pts(a: Any) -> Any:
        return None if a is None else [[round(float(x), 2), round(float(y), 2)] for x, y in a]

    return {
        "track_id": face.track_id,
        "score": round(face.score, 4),
        "box": [round(float(v), 2) for v in face.box],
        "landmarks_raw": pts(face.landmarks_raw),
        "landmarks": pts(face.landmarks),
        "interpolated": face.interpolated,
        "weight": round(face.weight, 3),
    }


def frame_json(frame: Frame) -> dict[str, Any]:
    """One frame's entry in ``inspect --json`` (the contract in DESIGN.md). Boxes and landmarks are in
    square (display) pixels: for a frame with non-square pixels (``sar`` given, the width of a
    pixel over its height) a stored column ``x`` is at ``(x + 0.5) * sar - 0.5``."""
    out: dict[str, Any] = {
        "index": frame.index,
        "pts": frame.pts,
        "time": round(frame.pts_seconds, 6),
        "faces": [_face_json(f) for f in frame.faces],
    }
    if frame.sar != 1:
        out["sar"] = f"{frame.sar.numerator}:{frame.sar.denominator}"
    return out


def annotate(frame: Frame) -> Frame:
    """Draw boxes, landmarks and track ids (filled-in faces dashed-grey, raw points red)."""
    import cv2
    import numpy as np

    rgb = frame.rgb()
    img = np.ascontiguousarray(rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8))
    thick = max(1, round(max(img.shape[:2]) / 500))
    stored = invert(square_pixels(float(frame.sar)))  # faces are in square pixels; drawn on the stored grid

    def at(x: float, y: float) -> tuple[int, int]:
        px, py = map_points(stored, np.array([[x, y]]))[0]
        return round(px), round(py)

    for face in frame.faces:
        colour = (160, 160, 160) if face.interpolated else (0, 220, 0)
        (x1, y1), (x2, y2) = at(face.box[0], face.box[1]), at(face.box[2], face.box[3])
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick)
        cv2.putText(
            img,
            f"#{face.track_id}" + (" filled" if face.interpolated else ""),
            (x1, max(y1 - 4, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            colour,
            thick,
        )
        if face.landmarks_raw is not None:
            for x, y in face.landmarks_raw:
                cv2.circle(img, at(x, y), thick + 1, (255, 60, 60), -1)
        for x, y in face.landmarks:
            cv2.circle(img, at(x, y), thick, (255, 255, 0), -1)
    return replace(frame, image=img)


def inspect_path(
    src: Path,
    config: Config,
    store: ModelStore,
    json_out: str | None = None,
    annotate_out: Path | None = None,
    progress: bool = False,
) -> InspectSummary:
    """Detect and track faces in ``src``; write JSON and/or an annotated video; return the tally."""

    if config.detector.model == "none":
        raise ConfigError("inspect needs a detector: set detector.model (centerface needs no download)")
    if annotate_out is not None:
        check_target(annotate_out, [src], config.output.overwrite)
    placement = resolve_placement(config.device, config.precision)
    stages = FaceStages(config, build_detector(config, store, placement), None)
    if json_out not in (None, "-"):
        check_target(Path(json_out), [src], config.output.overwrite)
    sink = _JsonSink(json_out, src, config.output.overwrite)
    tally = InspectSummary()
    try:

        def track_and_record(frames: Iterator[Frame]) -> Iterator[Frame]:
            for frame in stages.track(frames):
                sink.add(frame)
                tally.add(frame)
                yield annotate(frame) if annotate_out is not None else frame

        stats = RunStats()
        if annotate_out is not None:
            restore_file(src, annotate_out, config, track_and_record, stats, progress=progress)
            tally.fields = stats.fields[0]["line"] if stats.fields else None
        elif is_image(src):
            anim = read_animation(src)
            for _ in track_and_record(iter(anim.frames if anim is not None else [read_image(src).frame])):
                stats.frames += 1
        else:
            control = RunControl()
            reader = open_reader(src, config, control, copy_streams=False)
            if reader.info.fields is not None:
                tally.fields = reader.info.fields.line(src.name, reader.info.width, reader.info.height)
            try:
                for _ in guarded(track_and_record(iter(reader)), "inspect", stats):
                    stats.frames += 1
            finally:
                reader.close()
            if control.error is not None:
                raise control.error
        sink.close(ok=True)
    except BaseException:
        sink.close(ok=False)
        raise
    return tally


@dataclass
class InspectSummary:
    """What ``inspect`` found: frames, frames with faces, and per track its span and face sizes."""

    frames: int = 0
    frames_with_faces: int = 0
    tracks: dict[int, list[tuple[int, float, bool]]] = field(default_factory=dict)  # (frame, size, filled)
    fields: str | None = None  # the field stage's line about a video input

    def add(self, frame: Frame) -> None:
        self.frames += 1
        self.frames_with_faces += bool(frame.faces)
        for face in frame.faces:
            self.tracks.setdefault(face.track_id, []).append((frame.index, face.size, face.interpolated))

    def lines(self) -> list[str]:
        out = [f"{self.frames} frames, {self.frames_with_faces} with faces, {len(self.tracks)} track(s)"]
        if self.tracks:
            out.append(f"{'track':>5}  {'frames':>13}  {'seen':>5}  {'filled':>6}  face size px (min/median/max)")
        for tid, seen in sorted(self.tracks.items()):
            sizes = sorted(size for _, size, _ in seen)
            span = f"{seen[0][0]}-{seen[-1][0]}"
            filled = sum(f for _, _, f in seen)
            mid = sizes[len(sizes) // 2]
            out.append(
                f"{tid:>5}  {span:>13}  {len(seen):>5}  {filled:>6}  {sizes[0]:.0f} / {mid:.0f} / {sizes[-1]:.0f}"
            )
        if self.fields is not None:
            out.append(self.fields)
        return out


class _JsonSink:
    """Streams ``inspect`` JSON to a file (atomically) or stdout, one frame at a time."""

    def __init__(self, target: str | None, src: Path, overwrite: bool = False) -> None:
        import sys

        self.first = True
        self.fh: Any = None
        self.atomic: AtomicTarget | None = None
        if target is None:
            return
        if target == "-":
            self.fh = sys.stdout
        else:
            self.atomic = AtomicTarget(Path(target), overwrite)
            self.fh = self.atomic.tmp.open("w", encoding="utf-8")
        self.fh.write('{"input": ' + json.dumps(str(src)) + ', "frames": [\n')

    def add(self, frame: Frame) -> None:
        if self.fh is None:
            return
        self.fh.write(("" if self.first else ",\n") + json.dumps(frame_json(frame)))
        self.first = False

    def close(self, ok: bool) -> None:
        if self.fh is None:
            return
        if ok:
            self.fh.write("\n]}\n")
        if self.atomic is not None:
            self.fh.close()
            if ok:
                self.atomic.commit()
            else:
                self.atomic.tmp.unlink(missing_ok=True)
        else:
            self.fh.flush()
        self.fh = None
