"""Choosing the torch device and the precision the model stages run at."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidrestore.errors import ConfigError

__all__ = ["Placement", "resolve_placement"]


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
