"""What limits a run, measured beside bench.gpu's frames/s: host syncs, bytes moved, CPU time, and
the GPU time per stage from a profile of one steady-state stretch.

- ``SyncCount``: implicit host syncs (``.item()``, boolean indexing, pageable copies...) counted with
  ``torch.cuda.set_sync_debug_mode("warn")``; with ``strict`` the mode is ``"error"`` and the first one
  stops the block, and the error (where it happened) is what is reported. The waits the pipeline means
  to make (``Transfers.wait`` / ``read``: stream and event synchronisation) are counted by Transfers.
- ``moved``: host <-> device bytes and readbacks, summed over the stages' Transfers.
- ``cpu_seconds``: this process's CPU time and its finished children's (worker processes).
- ``profile_summary``: the top CUDA kernels and the GPU time inside each ``vidrestore:*`` range (the
  stages label their work with ``torch.profiler.record_function``).
"""

from __future__ import annotations

import resource
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["SyncCount", "cpu_seconds", "moved", "profile_summary"]


class SyncCount:
    """Implicit host syncs inside the block (CUDA only; elsewhere 0)."""

    def __init__(self, device: Any, strict: bool = False) -> None:
        self.device, self.strict = device, strict
        self.count = 0
        self.error: str | None = None

    @contextmanager
    def watching(self) -> Iterator[SyncCount]:
        import torch

        if self.device.type != "cuda":
            yield self
            return
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("error" if self.strict else "warn")
            try:
                yield self
            except RuntimeError as exc:  # strict: the first implicit sync, with where it was
                if not self.strict:
                    raise
                self.error = str(exc).splitlines()[0][:300]
            finally:
                torch.cuda.set_sync_debug_mode(0)
        self.count = sum(1 for w in seen if "synchroniz" in str(w.message).lower())


def moved(transfers: list[Any]) -> dict[str, int]:
    """Bytes each way, pictures each way, and the host's waits, summed over Transfers objects."""
    keys = ("bytes_up", "bytes_down", "uploads", "downloads", "readbacks", "reads_later")
    return {k: sum(int(getattr(t, k, 0)) for t in transfers) for k in keys}


def cpu_seconds() -> dict[str, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"process": round(me.ru_utime + me.ru_stime, 2), "children": round(kids.ru_utime + kids.ru_stime, 2)}


def profile_summary(device: Any, run: Callable[[], Any], top: int = 15) -> dict[str, Any]:
    """Profile ``run`` (one steady-state stretch): the ``top`` kernels by GPU time, and the GPU time
    inside each ``vidrestore:*`` range (CPU time where there is no GPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        run()
    events = prof.key_averages()

    def device_us(e: Any) -> float:
        return float(getattr(e, "device_time_total", 0.0) or getattr(e, "cuda_time_total", 0.0) or 0.0)

    stages = {
        e.key.removeprefix("vidrestore:"): round((device_us(e) if cuda else e.cpu_time_total) / 1000, 2)
        for e in events
        if e.key.startswith("vidrestore:")
    }
    kernels = sorted(
        (e for e in events if not e.key.startswith(("vidrestore:", "aten::", "cuda")) and device_us(e) > 0),
        key=device_us,
        reverse=True,
    )[:top]
    return {
        "stage_ms": stages,
        "top_kernels": [
            {"kernel": e.key[:120], "ms": round(device_us(e) / 1000, 2), "calls": e.count} for e in kernels
        ],
    }
