"""vidrestore: restore faces in video, with the audio and every timestamp untouched.

The small public API::

    from vidrestore import Config, load_config, restore, restore_frames

    restore("call.mp4", "call.restored.mp4", load_config("configs/video-call.yaml"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.10.0"

__all__ = ["Config", "__version__", "load_config", "restore", "restore_frames"]

if TYPE_CHECKING:
    from vidrestore.api import restore, restore_frames
    from vidrestore.config import Config, load_config


def __getattr__(name: str) -> Any:
    # Lazy: 'vidrestore --help' and 'models list' should not import torch and the models.
    if name in ("Config", "load_config"):
        from vidrestore import config

        return getattr(config, name)
    if name in ("restore", "restore_frames"):
        from vidrestore import api

        return getattr(api, name)
    raise AttributeError(f"module 'vidrestore' has no attribute {name!r}")
