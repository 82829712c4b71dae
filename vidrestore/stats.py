"""Counts and timings of a run, shared by the stages and the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunStats", "TemporalFigures"]

_MEANS = ("input", "per_frame", "output")


@dataclass
class TemporalFigures:
    """One file's flicker (grey levels) and landmark jitter (px), per track and per frame, as sums."""

    tracks: dict[int, dict[str, float]] = field(default_factory=dict)
    frames: dict[int, list[float]] = field(default_factory=dict)  # index -> input, per_frame, output, faces

    def add_flicker(self, track_id: int, frame_index: int, values: tuple[float, float, float]) -> None:
        t = self.tracks.setdefault(track_id, {})
        for key, v in zip(_MEANS, values, strict=True):
            t[key] = t.get(key, 0.0) + v
        t["pairs"] = t.get("pairs", 0.0) + 1
        row = self.frames.setdefault(frame_index, [0.0, 0.0, 0.0, 0.0])
        for k, v in enumerate((*values, 1.0)):
            row[k] += v

    def add_jitter(self, track_id: int, raw: float, smoothed: float) -> None:
        t = self.tracks.setdefault(track_id, {})
        t["jitter_raw"] = t.get("jitter_raw", 0.0) + raw
        t["jitter_smoothed"] = t.get("jitter_smoothed", 0.0) + smoothed
        t["jitter_pairs"] = t.get("jitter_pairs", 0.0) + 1

    def merge(self, other: TemporalFigures, track_offset: int = 0) -> None:
        """Add ``other``'s sums (its track ids moved by ``track_offset``: another segment's tracks)."""
        for tid, t in other.tracks.items():
            mine = self.tracks.setdefault(tid + track_offset, {})
            for key, v in t.items():
                mine[key] = mine.get(key, 0.0) + v
        for index, row in other.frames.items():
            mine_row = self.frames.setdefault(index, [0.0, 0.0, 0.0, 0.0])
            for k, v in enumerate(row):
                mine_row[k] += v

    def to_dict(self, max_points: int = 4000) -> dict[str, Any]:
        """Per-track means, and the per-frame means (of the faces of each measured frame; averaged
        into at most ``max_points`` runs of consecutive frames for long files)."""
        tracks = []
        for tid, t in sorted(self.tracks.items()):
            row: dict[str, float] = {"track": tid}
            if t.get("pairs"):
                row["face_pairs"] = t["pairs"]
                row.update({f"flicker_{k}": round(t[k] / t["pairs"], 3) for k in _MEANS})
            if t.get("jitter_pairs"):
                row["landmark_jitter_raw_px"] = round(t["jitter_raw"] / t["jitter_pairs"], 3)
                row["landmark_jitter_smoothed_px"] = round(t["jitter_smoothed"] / t["jitter_pairs"], 3)
            tracks.append(row)
        per_frame = [[i, *(v / row[3] for v in row[:3])] for i, row in sorted(self.frames.items())]
        step = -(-len(per_frame) // max_points) if per_frame else 1
        frames = []
        for start in range(0, len(per_frame), step):
            run = per_frame[start : start + step]
            frames.append([run[0][0], *(round(sum(r[k] for r in run) / len(run), 3) for k in (1, 2, 3))])
        return {"tracks": tracks, "frames": frames, "frame_columns": ["frame", *_MEANS]}


@dataclass
class RunStats:
    """Counts and timings, added to by every stage of one or more runs."""

    files: int = 0
    frames: int = 0
    faces_restored: int = 0
    faces_upscaled: int = 0
    faces_filled: int = 0
    faces_failed: int = 0
    frames_passed_through: int = 0
    skipped_packets: int = 0  # damaged packets left out, all streams
    timestamps_repaired: int = 0  # frames given a time other than their own pts (out of order, missing)
    timestamp_resets: int = 0  # backward jumps in a stream's times, undone (concatenated recordings)
    damaged: list[dict[str, Any]] = field(default_factory=list)  # per damaged input: DamageLog.to_dict()
    damage_lines: list[str] = field(default_factory=list)  # per damaged input: DamageLog.summary()
    stage_seconds: dict[str, float] = field(default_factory=dict)
    jitter: dict[str, float] = field(default_factory=dict)  # summed landmark jitter: raw, smoothed, pairs
    flicker: dict[str, float] = field(default_factory=dict)  # summed flicker: input, per_frame, output, pairs
    source: str = ""  # the input being read now: what per-file figures are filed under
    temporal_files: dict[str, TemporalFigures] = field(default_factory=dict)

    segments: list[dict[str, Any]] = field(default_factory=list)  # per segment: input, time, worker, retries
    engines: dict[str, str] = field(default_factory=dict)  # per network role: the engine that ran it
    notes: list[str] = field(default_factory=list)  # lines for the run's end (how many workers auto chose)
    fields: list[dict[str, Any]] = field(default_factory=list)  # per video input: its field structure and pixels

    def take(self) -> RunStats:
        """A copy of what was counted so far; this one starts again from nothing (a worker's
        stages keep adding to the same object)."""
        out = RunStats(**vars(self))
        fresh = RunStats()
        for key, value in vars(fresh).items():
            setattr(self, key, value)
        return out

    def merge(self, other: RunStats, track_offset: int = 0) -> None:
        """Add ``other``'s counts, times and figures to these (``track_offset``: see TemporalFigures.merge)."""
        for key, value in vars(other).items():
            mine = getattr(self, key)
            if key == "temporal_files":
                for src, figures in value.items():
                    self.temporal_files.setdefault(src, TemporalFigures()).merge(figures, track_offset)
            elif key in ("source", "wall_seconds"):
                continue
            elif key == "engines":
                self.engines.update(value)  # names, not counts
            elif isinstance(value, list):
                mine.extend(value)
            elif isinstance(value, dict):
                for k, v in value.items():
                    mine[k] = mine.get(k, 0.0) + v
            else:
                setattr(self, key, mine + value)

    def figures(self) -> TemporalFigures:
        """The per-track and per-frame temporal figures of the input being read now."""
        return self.temporal_files.setdefault(self.source, TemporalFigures())

    def temporal(self) -> dict[str, float]:
        """Mean flicker (grey levels) and landmark jitter (px) over consecutive face pairs, for reports."""
        out: dict[str, float] = {}
        if self.flicker.get("pairs"):
            n = self.flicker["pairs"]
            out["flicker_input"] = round(self.flicker.get("input", 0.0) / n, 3)
            out["flicker_per_frame"] = round(self.flicker["per_frame"] / n, 3)
            out["flicker_output"] = round(self.flicker["output"] / n, 3)
            out["face_pairs"] = n
        if self.jitter.get("pairs"):
            n = self.jitter["pairs"]
            out["landmark_jitter_raw_px"] = round(self.jitter["raw"] / n, 3)
            out["landmark_jitter_smoothed_px"] = round(self.jitter["smoothed"] / n, 3)
        return out

    wall_seconds: float = 0.0

    def add_time(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
