"""The presets shipped inside the package (the repository's ``configs/``), addressable by name.

``vidrestore.configs`` is the package folder the YAML files are installed into (setuptools maps
``configs/`` there), so ``--preset vhs`` works from a wheel as well as from a checkout.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from vidrestore.errors import ConfigError

__all__ = ["Preset", "list_presets", "preset_path"]


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str  # the first comment line of the file


def _folder() -> Path:
    return Path(str(importlib.resources.files("vidrestore.configs")))


def list_presets() -> list[Preset]:
    """Every shipped preset but ``default`` (which lists every key), sorted by name."""
    out = []
    for path in sorted(_folder().glob("*.yaml"), key=lambda p: p.stem):
        if path.stem == "default":
            continue
        out.append(Preset(path.stem, _summary(path.read_text(encoding="utf-8"))))
    return out


def _summary(text: str) -> str:
    """The first sentence of the comment block a preset file opens with."""
    words = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    block = " ".join(words)
    end = block.find(". ")
    return block[: end + 1] if end >= 0 else block


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name`` (``vhs`` or ``vhs.yaml``); ConfigError naming the choices."""
    stem = name.removesuffix(".yaml")
    path = _folder() / f"{stem}.yaml"
    if not path.is_file():
        names = ", ".join(p.name for p in list_presets())
        raise ConfigError(f"--preset {name}: no such preset; choose one of {names} (see 'vidrestore presets')")
    return path
