"""What a run uses and did, for people: the models a config needs, ``--dry-run`` and ``--report``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidrestore import __version__
from vidrestore.config import Config, config_to_dict
from vidrestore.control import RunControl
from vidrestore.device import resolve_placement
from vidrestore.io.deinterlace import FieldSettings
from vidrestore.io.images import is_image, read_image
from vidrestore.io.reader import VideoReader
from vidrestore.models.engine import planned_engine
from vidrestore.models.store import ModelStore
from vidrestore.models.usage import models_used
from vidrestore.progress import speed
from vidrestore.stats import RunStats

__all__ = ["Summary", "dry_run", "run_report"]


@dataclass
class Summary:
    """What a ``restore`` run did, for the closing lines and ``--report``."""

    stats: RunStats
    outputs: list[Path]
    created: list[Path] = field(default_factory=list)  # output folders that did not exist and were made

    def lines(self) -> list[str]:
        s = self.stats
        fps = s.frames / s.wall_seconds if s.wall_seconds > 0 else 0.0
        out = [
            f"done: {s.files} file(s), {s.frames} frames in {s.wall_seconds:.1f} s ({speed(fps)} frames/s)",
            f"faces: {s.faces_restored} restored, {s.faces_upscaled} upscaled first, {s.faces_filled} filled in, "
            f"{s.faces_failed} failed (kept original); {s.frames_passed_through} frames had no face",
        ]
        t = s.temporal()
        if "flicker_output" in t:
            out.append(
                f"flicker: {t['flicker_input']:.2f} in, {t['flicker_per_frame']:.2f} restored per frame -> "
                f"{t['flicker_output']:.2f} out (grey levels)"
                + (
                    f"; landmark jitter {t['landmark_jitter_raw_px']:.2f} -> {t['landmark_jitter_smoothed_px']:.2f} px"
                    if "landmark_jitter_raw_px" in t
                    else ""
                )
            )
        if s.segments:
            resumed = sum(1 for g in s.segments if g["resumed"])
            retried = sum(g["attempts"] - 1 for g in s.segments if not g["resumed"])
            workers = len({g["worker"] for g in s.segments if not g["resumed"]})
            out.append(
                f"segments: {len(s.segments)} ({resumed} kept from an earlier run, {retried} retried) "
                f"on {workers} worker(s)"
            )
        out += [f["line"] for f in s.fields]
        out += s.notes
        if s.stage_seconds:
            out.append("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in s.stage_seconds.items()))
        if s.timestamps_repaired:
            out.append(
                f"warning: {s.timestamps_repaired} frame timestamp(s) were out of order or missing and were repaired"
                " (as FFmpeg's best-effort timestamps)"
            )
        if s.timestamp_resets:
            out.append(
                f"warning: the input's timestamps jumped back {s.timestamp_resets} time(s) (joined recordings?); "
                "later frames and packets were shifted to carry on in sync"
            )
        out.extend(f"warning: {t}" for t in s.damage_lines)
        out.extend(f"made the output folder {p} (it did not exist)" for p in self.created)
        return out


def run_report(summary: Summary, config: Config, store: ModelStore) -> dict[str, Any]:
    """What ``--report`` writes: outputs, counts, time per stage, config, models and versions."""
    import platform

    import av
    import torch

    used = {name: {**m, "path": m["file"]} for name, m in models_used(config, store).items()}
    return {
        "outputs": [str(p) for p in summary.outputs],
        "counts": {
            k: v
            for k, v in vars(summary.stats).items()
            if k
            not in (
                "stage_seconds",
                "damaged",
                "damage_lines",
                "jitter",
                "flicker",
                "source",
                "temporal_files",
                "segments",
                "engines",
                "fields",
            )
        },
        "fields": summary.stats.fields,
        "engines": summary.stats.engines,
        "segments": summary.stats.segments,
        "temporal": {
            "method": config.temporal.method,
            **summary.stats.temporal(),
            "files": {src: f.to_dict() for src, f in summary.stats.temporal_files.items() if f.tracks},
        },
        "damage": summary.stats.damaged,
        "stage_seconds": summary.stats.stage_seconds,
        "config": config_to_dict(config),
        "models": used,
        "versions": {
            "vidrestore": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "av": av.__version__,
            "ffmpeg": ".".join(map(str, av.library_versions["libavcodec"])),
        },
    }


def dry_run(inputs: list[Path], config: Config, store: ModelStore) -> list[str]:
    """Lines describing what a run would do: inputs, their streams, the models and whether present."""
    lines = []
    for src in inputs:
        if is_image(src):
            still = read_image(src)
            h, w = still.frame.image.shape[:2]
            lines.append(f"input {src}: image {w}x{h}" + (" with alpha" if still.alpha is not None else ""))
            continue
        reader = VideoReader(src, RunControl(), fields=FieldSettings.of(config))
        try:
            i = reader.info
            rate = i.rate / i.fields.per_frame if i.rate and i.fields is not None else i.rate  # the stored frames'
            lines.append(
                f"input {src}: video {i.codec} {i.width}x{i.height} {i.pix_fmt}, "
                f"{float(rate or 0):.3f} fps, {i.duration_s or 0:.2f} s"
            )
            if i.fields is not None:
                lines.append("  " + i.fields.line(src.name, i.width, i.height))
            lines.extend(
                f"  stream {s.index}: {s.kind} {s.codec}" + (f" [{s.language}]" if s.language else "")
                for s in reader.stream_infos()
            )
        finally:
            reader.close()
    placement = resolve_placement(config.device, config.precision)
    for name, m in models_used(config, store).items():
        sha = f"sha256 {m['sha256']}" if m["sha256"] else "no checksum"
        engine = planned_engine(config, m["role"], m["arch"], placement)
        lines.append(
            f"model {name}: {'present' if m['present'] else 'missing'} at {m['file']} ({m['source']}, {sha}); "
            f"runs {engine} on {placement.device}"
        )
    return lines
