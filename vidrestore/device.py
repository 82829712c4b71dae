"""Choosing the torch device and the precision the model stages run at."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vidrestore.errors import ConfigError

__all__ = ["Placement", "Transfers", "resolve_placement"]


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
    if dev.type == "cpu":
        raise ConfigError(f"precision = {precision!r} needs a GPU; on the CPU use precision=fp32 or auto")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision = 'bf16' is not supported by this GPU; use fp16 or fp32")
    return Placement(dev, torch.float16 if precision == "fp16" else torch.bfloat16)


class Transfers:
    """The one place pictures move between the host and the device, and the count of each move.

    Convention: host pictures are ``(H, W, 3)`` numpy arrays, uint8 or uint16; on the device they
    are ``(H, W, 3)`` tensors, uint8, or int32 for 16-bit pictures (CUDA has little uint16
    support), written in place by paste-back. On a CUDA device uploads go through pinned memory
    without blocking the host. On the CPU an "upload" is the private copy paste-back writes into,
    so the decoded picture stays as it was.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.uploads = 0
        self.downloads = 0

    def upload(self, image: np.ndarray) -> torch.Tensor:
        """One picture: a batch of one."""
        return self.upload_batch([image])[0]

    def upload_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        """Pictures of one size as one ``(N, H, W, 3)`` device tensor (detection's batches): stacked
        straight into pinned memory on a CUDA device, copied without blocking; counted per picture."""
        self.uploads += len(images)
        deep = images[0].dtype == np.uint16
        dtype = torch.int32 if deep else torch.uint8
        pinned = self.device.type == "cuda"
        host = torch.empty((len(images), *images[0].shape), dtype=dtype, pin_memory=pinned)
        view = host.numpy()
        for i, image in enumerate(images):
            view[i] = image
        if self.device.type == "cpu":
            return host
        return host.to(self.device, non_blocking=pinned)

    def download(self, picture: torch.Tensor, dtype: np.dtype) -> np.ndarray:  # type: ignore[type-arg]
        """A device picture back on the host, once, as ``dtype`` (the input's)."""
        self.downloads += 1
        out = picture.cpu().numpy()
        return out if out.dtype == dtype else out.astype(dtype)
