"""Choosing the torch device and the precision the model stages run at."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vidrestore.colour import PlaneFormat
from vidrestore.errors import ConfigError
from vidrestore.records import Planes

__all__ = ["Arriving", "Placement", "Transfers", "constant", "on_cuda", "resolve_placement"]


@dataclass(frozen=True)
class Placement:
    """Where and at which dtype the networks run."""

    device: torch.device
    dtype: torch.dtype

    def __str__(self) -> str:
        return f"{self.device} ({str(self.dtype).removeprefix('torch.')})"


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device = 'mps' but Apple's Metal backend is not available here; use device=cpu")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device = {name!r} but no CUDA GPU is available here; use device=cpu or auto")
        index = int(name[5:]) if name.startswith("cuda:") else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"device = {name!r} but only {count} CUDA device(s) exist (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    raise ConfigError(f"device = {name!r} is not valid; use auto, cpu, cuda, cuda:N or mps")


def on_cuda(device: str) -> bool:
    """Whether the configured ``device`` (auto, cuda, cuda:N, ...) puts the networks on a CUDA GPU here."""
    return (device == "auto" or device.startswith("cuda")) and torch.cuda.is_available()


@functools.cache
def openvino_core() -> Any:
    """OpenVINO's runtime, made once per process (ImportError where it is not installed)."""
    import openvino as ov

    return ov.Core()


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 natively (AMX or AVX-512 BF16), as OpenVINO's CPU plugin reports
    it among its optimisation capabilities (False where OpenVINO is not installed: nothing here
    would run bf16 then)."""
    try:
        return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except (ImportError, RuntimeError):
        return False


def native_bf16() -> bool:
    """Whether bf16 is taken here: the CPU does it natively (:func:`cpu_has_bf16`), and
    ``VIDRESTORE_CPU_BF16`` is not ``0`` (which runs vidrestore as on a CPU without it)."""
    return os.environ.get("VIDRESTORE_CPU_BF16", "") != "0" and cpu_has_bf16()


def resolve_placement(device: str, precision: str) -> Placement:
    """``device`` (auto|cpu|cuda|cuda:N|mps) and ``precision`` (auto|fp32|fp16|bf16) -> Placement.

    ``auto`` precision is bf16 on CUDA GPUs that support it (GFPGAN is reported to give
    garbled output in fp16, bf16 keeps fp32's range), fp32 everywhere else. Half
    precision on the CPU is refused: it is slower there and not what anyone wants.
    """
    dev = _resolve_device(device)
    if precision == "auto":
        use_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        return Placement(dev, torch.bfloat16 if use_bf16 else torch.float32)
    if precision == "fp32":
        return Placement(dev, torch.float32)
    if dev.type == "cpu" and precision == "bf16" and native_bf16():
        return Placement(dev, torch.float32)  # torch stays fp32 on CPUs; OpenVINO's networks run bf16
    if dev.type == "cpu" and precision == "bf16":
        raise ConfigError(
            "precision = 'bf16' on this CPU would be emulated, slower than fp32: it has neither AMX nor "
            "AVX-512 BF16 (or OpenVINO is not installed); use precision=auto or fp32"
        )
    if dev.type == "cpu":
        raise ConfigError(f"precision = {precision!r} needs a GPU; on the CPU use precision=fp32, bf16 or auto")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision = 'bf16' is not supported by this GPU; use fp16 or fp32")
    return Placement(dev, torch.float16 if precision == "fp16" else torch.bfloat16)


@functools.lru_cache(maxsize=256)
def constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A small constant tensor on ``device``, made once per process (each new one is an upload)."""
    return torch.tensor(values, device=device, dtype=dtype)


class Arriving:
    """A device result on its way to the host: :meth:`get` waits for it (in whichever thread asks),
    without making the host wait for everything else queued on the device."""

    def __init__(self, host: np.ndarray, event: torch.cuda.Event | None) -> None:
        self.host, self.event = host, event

    def get(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host


class Transfers:
    """The one place pictures move between the host and the device, and the count of each move.

    Convention: host RGB pictures are ``(H, W, 3)`` numpy arrays, uint8 or uint16; on the device they
    are ``(H, W, 3)`` tensors, uint8, or int32 for 16-bit pictures (CUDA has little uint16
    support), written in place by paste-back. Planes travel as they are (int16 for deeper formats).
    On a CUDA device uploads and downloads go through pinned memory without blocking the host; the
    host waits once (:meth:`wait`, :meth:`read`), and ``readbacks`` counts those waits. On the CPU an
    "upload" is the private copy paste-back writes into, so the decoded picture stays as it was.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.uploads = 0
        self.downloads = 0
        self.readbacks = 0  # times the host waited for the device's results (one per group, ideally)
        self.reads_later = 0  # results copied back without the host waiting (Arriving)
        self.bytes_up = 0
        self.bytes_down = 0
        self._waiting = False  # copies started that no wait has covered yet

    def upload(self, image: np.ndarray) -> torch.Tensor:
        """One picture: a batch of one."""
        return self.upload_batch([image])[0]

    def upload_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        """Pictures of one size as one ``(N, H, W, 3)`` device tensor (detection's batches): stacked
        straight into pinned memory on a CUDA device, copied without blocking; counted per picture."""
        self.uploads += len(images)
        deep = images[0].dtype == np.uint16
        return self._up(images, torch.int32 if deep else torch.uint8)

    def _up(self, arrays: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
        """Arrays of one shape stacked into one (pinned, on CUDA) host tensor and sent without blocking."""
        pinned = self.device.type == "cuda"
        host = torch.empty((len(arrays), *arrays[0].shape), dtype=dtype, pin_memory=pinned)
        view = host.numpy()
        for i, a in enumerate(arrays):
            view[i] = a if a.dtype != np.uint16 or dtype != torch.int16 else a.view(np.int16)
        self.bytes_up += host.numel() * host.element_size()
        if self.device.type == "cpu":
            return host
        return host.to(self.device, non_blocking=pinned)

    def upload_planes(self, pictures: list[Planes]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pictures held as planes, of one format and size: ``(N, H, W)`` luma and ``(N, Hc, Wc)``
        chroma tensors, uint8, or int16 for deeper formats (code values up to 15 bits fit)."""
        self.uploads += len(pictures)
        dtype = torch.uint8 if pictures[0].format.bits == 8 else torch.int16
        y = self._up([p.y for p in pictures], dtype)
        u = self._up([p.u for p in pictures], dtype)
        v = self._up([p.v for p in pictures], dtype)
        return y, u, v

    def download(self, picture: torch.Tensor, dtype: np.dtype) -> np.ndarray:  # type: ignore[type-arg]
        """A device picture back on the host, once, as ``dtype`` (the input's)."""
        self.downloads += 1
        if picture.dtype == torch.int32 and dtype == np.uint16:
            # 16-bit values held as int32 come back as their low 16 bits (half the bytes), and no
            # conversion on the host touches the buffer before the copy is waited for
            return self._down(picture.to(torch.int16)).view(np.uint16)
        out = self._down(picture)
        if out.dtype != dtype:
            raise ValueError(f"a {picture.dtype} picture cannot come back as {np.dtype(dtype)}")
        return out

    def download_planes(self, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, fmt: PlaneFormat) -> Planes:
        """Device planes back on the host as :class:`Planes` of ``fmt``."""
        self.downloads += 1
        host = [self._down(p) for p in (y, u, v)]
        if fmt.bits > 8:
            host = [h.view(np.uint16) for h in host]
        return Planes(host[0], host[1], host[2], fmt)

    def _down(self, t: torch.Tensor) -> np.ndarray:
        """A copy started towards pinned host memory without waiting: valid after :meth:`wait`."""
        self.bytes_down += t.numel() * t.element_size()
        if t.device.type == "cpu":
            return t.numpy()
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        self._waiting = True
        return host.numpy()

    def read_later(self, t: torch.Tensor) -> Arriving:
        """A small device result copied to the host without waiting: for a worker thread to take (the
        fusion's flow threads take the grey crops this way), or for after the group's wait."""
        self.reads_later += 1
        out = self._down(t)
        if t.device.type != "cuda":
            return Arriving(out, None)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(t.device))
        return Arriving(out, event)

    def read(self, t: torch.Tensor) -> np.ndarray:
        """A small device result (flags, detections) on the host: one readback."""
        self.readbacks += 1
        out = self._down(t)
        self.wait(counted=False)
        return out

    def wait(self, counted: bool = True) -> None:
        """Wait once for every copy started since the last wait: the host's one look at a group."""
        if counted:
            self.readbacks += 1
        if self._waiting and self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        self._waiting = False
