"""Counts and timings of a run, shared by the stages and the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunStats"]


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
    flicker: dict[str, float] = field(default_factory=dict)  # summed flicker: per_frame, output, pairs

    def temporal(self) -> dict[str, float]:
        """Mean flicker (grey levels) and landmark jitter (px) over consecutive face pairs, for reports."""
        out: dict[str, float] = {}
        if self.flicker.get("pairs"):
            n = self.flicker["pairs"]
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
