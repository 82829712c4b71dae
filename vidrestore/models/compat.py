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
import sys
import types
from typing import Any

__all__ = ["import_research_module", "patch_torchvision_for_basicsr"]

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
