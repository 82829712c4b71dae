"""The small Python API: restore a file, or a stream of pictures you already have.

from vidrestore import load_config, restore, restore_frames

config = load_config("configs/video-call.yaml", ["restorer.blend=0.8"])
summary = restore("call.mp4", "call.restored.mp4", config)
print(summary.lines())

for restored in restore_frames(my_rgb_arrays, config):   # (H, W, 3) uint8 RGB each
    ...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidrestore.config import Config
from vidrestore.errors import InputError
from vidrestore.models.store import ModelStore, default_weights_dir, offline_requested
from vidrestore.records import Frame
from vidrestore.report import Summary
from vidrestore.run.file import build_stages
from vidrestore.run.restore import restore_paths
from vidrestore.run.segments.manifest import Resume
from vidrestore.stats import RunStats

__all__ = ["restore", "restore_frames"]


def _store(config: Config, store: ModelStore | None) -> ModelStore:
    if store is not None:
        return store  # a missing model is fetched on first use unless VIDRESTORE_OFFLINE is set
    return ModelStore(default_weights_dir(config.weights_dir), fetch_missing=not offline_requested())


def restore(
    source: str | Path | Iterable[str | Path],
    output: str | Path,
    config: Config | None = None,
    *,
    store: ModelStore | None = None,
    progress: bool = False,
    resume: Resume = "auto",
    ray: bool = False,
) -> Summary:
    """Restore a video/image file, a folder, or several of them into ``output``.

    Long videos run as resumable segments (``resume``: ``"auto"`` keeps a matching earlier run's
    finished segments, ``"require"`` refuses a changed one, ``"never"`` starts afresh); ``ray``
    runs them on a Ray cluster (``config.cluster``; an already initialised ``ray`` is used).
    With ``pipeline.workers`` above 1 the workers are spawned processes, which import the calling
    script again: call this under ``if __name__ == "__main__":`` (or use ``worker_kind: threads``).
    Raises the same errors the CLI reports (``vidrestore.errors``), each with its exit code.
    """
    config = config or Config()
    sources = [Path(source)] if isinstance(source, (str, Path)) else [Path(s) for s in source]
    return restore_paths(sources, output, config, _store(config, store), progress=progress, resume=resume, ray=ray)


def restore_frames(
    frames: Iterable[np.ndarray],
    config: Config | None = None,
    *,
    store: ModelStore | None = None,
    rate: Fraction = Fraction(25),
    stats: RunStats | None = None,
) -> Iterator[np.ndarray]:
    """Restore the faces in a sequence of ``(H, W, 3)`` RGB uint8 pictures, yielding each in order.

    The pictures are treated as consecutive frames of one video at ``rate`` frames/s
    (tracking and smoothing work across them); only a few are held at a time.
    """
    config = config or Config()
    stages = build_stages(config, _store(config, store), stats or RunStats())
    tb = 1 / rate

    def as_frames() -> Iterator[Frame]:
        for i, image in enumerate(frames):
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype not in (np.uint8, np.uint16):
                raise InputError(f"picture {i}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
            yield Frame(index=i, pts=i, time_base=Fraction(tb), image=np.ascontiguousarray(image), duration=1)

    for frame in stages(as_frames()):
        yield frame.rgb()
