"""Which registered models a configuration uses, and what identifies them for a resumable run."""

from __future__ import annotations

from pathlib import Path

from vidrestore.config import Config
from vidrestore.models.store import ModelStore

__all__ = ["model_identity", "models_for"]


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


def model_identity(config: Config, store: ModelStore) -> dict[str, str | None]:
    """The checksum of every model the run uses (a local ``*.weights`` file: its size and mtime)."""
    out: dict[str, str | None] = {name: store.registry[name].sha256 for name in models_for(config)}
    for key, value in (
        ("detector.weights", config.detector.weights),
        ("restorer.weights", config.restorer.weights),
        ("restorer.parsing_weights", config.restorer.parsing_weights),
        ("upscaler.weights", config.upscaler.weights),
    ):
        if value:
            st = Path(value).stat()
            out[key] = f"{Path(value).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return out
