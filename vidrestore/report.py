"""What a run uses and did, for people: the models a config needs, ``--dry-run`` and ``--report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidrestore.config import Config, config_to_dict
from vidrestore.control import RunControl
from vidrestore.io.images import is_image, read_image
from vidrestore.io.reader import VideoReader
from vidrestore.models.store import ModelStore
from vidrestore.pipeline import Summary

__all__ = ["dry_run", "models_for", "run_report"]


def models_for(config: Config) -> list[str]:
    """Registry names of the models ``config`` uses from the cache (not local ``*.weights``)."""
    names: list[str] = []
    if config.detector.model not in ("none", "centerface") and not config.detector.weights:
        names.append(config.detector.model)
    if config.detector.model != "none" and config.restorer.model != "none":
        if not config.restorer.weights:
            names.append(config.restorer.model)
        if config.restorer.parsing_mask and not config.restorer.parsing_weights:
            names.append("parsenet")
    wants_upscaler = config.output.scale > 1 or (config.detector.model != "none" and config.upscaler.below > 0)
    if config.upscaler.model != "none" and wants_upscaler and not config.upscaler.weights:
        names.append(config.upscaler.model)
    return names


def run_report(summary: Summary, config: Config, store: ModelStore) -> dict[str, Any]:
    """What ``--report`` writes: outputs, counts, time per stage, config, models and versions."""
    import platform

    import av
    import torch

    from vidrestore import __version__

    used = {}
    for name in models_for(config):
        spec = store.registry[name]
        used[name] = {"sha256": spec.sha256, "path": str(store.path(name)), "url": spec.url}
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
            )
        },
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
        reader = VideoReader(src, RunControl())
        try:
            i = reader.info
            lines.append(
                f"input {src}: video {i.codec} {i.width}x{i.height} {i.pix_fmt}, "
                f"{float(i.rate or 0):.3f} fps, {i.duration_s or 0:.2f} s"
            )
            lines.extend(
                f"  stream {s.index}: {s.kind} {s.codec}" + (f" [{s.language}]" if s.language else "")
                for s in reader.stream_infos()
            )
        finally:
            reader.close()
    for name in models_for(config):
        st = store.status(name)
        lines.append(f"model {name}: {'present' if st.present else 'missing'} at {st.path}")
    return lines
