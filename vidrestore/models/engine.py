"""Engines: how a loaded network runs. Every engine takes the same loaded torch module and gives the
same call, a batch in and a batch (or a tuple of them) out, so the stages never know which one runs.

- ``eager``: the module itself, in the placement's precision.
- ``onnxruntime``: exported once with ``torch.onnx`` from the loaded weights, cached beside them
  (see :mod:`vidrestore.models.onnx`), run by ONNX Runtime (on the CPU; CUDA where
  ``onnxruntime-gpu`` is installed).
- ``compile``: ``torch.compile``; on CUDA with fixed batch sizes (1, 4, 8, 16, 32; a batch is
  padded up) so that CUDA graphs can be captured, and cuDNN's autotuner on.
- ``tensorrt``: ONNX Runtime's TensorRT provider on the exported model (the ``tensorrt`` extra).
- ``auto``: chosen per network by measurement (``python -m bench.engines``, :data:`CPU_AUTO`): on
  CPUs ONNX Runtime for the restorer, where it was clearly faster than torch, eager for the
  others, where it was not; eager on GPUs until a GPU measurement says otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from vidrestore.device import Placement
from vidrestore.errors import ConfigError
from vidrestore.models.onnx import OnnxEngine

__all__ = [
    "BUCKETS",
    "CLEAR_GAIN",
    "CPU_AUTO",
    "Engine",
    "EngineMaker",
    "NetShape",
    "choose_engine",
    "eager_maker",
    "make_engine",
]

log = logging.getLogger(__name__)

Output = torch.Tensor | tuple[torch.Tensor, ...]
BUCKETS = (1, 4, 8, 16, 32)  # the batch sizes a compiled engine is captured at on CUDA


class Engine(Protocol):
    name: str

    def __call__(self, x: torch.Tensor) -> Output: ...


@dataclass(frozen=True)
class NetShape:
    """What a network takes: an example input's shape, which of its axes may vary (axis -> name),
    and how many outputs it gives."""

    example: tuple[int, ...]
    dynamic: dict[int, str] = field(default_factory=lambda: {0: "batch"})
    outputs: int = 1


EngineMaker = Callable[[str, nn.Module, NetShape], Engine]
"""(role, module, shape) -> the engine that runs it (role: restorer, parser, upscaler, detector)."""


class EagerEngine:
    """The module itself, called under inference mode."""

    name = "eager"

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> Output:
        out: Output = self.module(x)
        return out


class CompiledEngine:
    """``torch.compile`` of the module. On CUDA the batch is padded up to one of :data:`BUCKETS` so
    that each size is captured once ("reduce-overhead": CUDA graphs), and cuDNN's autotuner picks
    each convolution's algorithm for those fixed shapes. Compiling happens at the first call of each
    shape, once per process; it is logged."""

    name = "compile"

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        self.fn = torch.compile(module, mode="reduce-overhead" if self.cuda else None, dynamic=False)
        self.seen: set[tuple[int, ...]] = set()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> Output:
        n = x.shape[0]
        if self.cuda and n <= BUCKETS[-1]:
            size = next(b for b in BUCKETS if b >= n)
            if size > n:
                x = torch.cat([x, x[-1:].expand(size - n, *x.shape[1:])])
        if tuple(x.shape) not in self.seen:
            self.seen.add(tuple(x.shape))
            log.info("compiling for input %s (once per process and shape)", tuple(x.shape))
        out = self.fn(x)
        if isinstance(out, tuple):
            return tuple(o[:n] for o in out)
        result: torch.Tensor = out[:n]
        return result


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# What ``auto`` runs each network with on a CPU, from ``python -m bench.engines`` (2 cores, torch
# 2.14; bench/results/engines.json): an engine other than torch only for a clear gain, 1.25x or
# more, since runs on a shared machine differ by up to 15% per row. ONNX Runtime ran GFPGAN v1.4
# 1.5x to 2.0x faster than eager torch; ParseNet 1.05x to 1.17x, the upscaler 0.99x to 1.0x and
# RetinaFace 0.95x to 1.14x: those stay eager (and skip an export and a second copy of their
# weights). torch.compile was close to ONNX Runtime but compiles for minutes on a CPU.
CPU_AUTO = {"restorer": "onnxruntime", "parser": "eager", "upscaler": "eager", "detector": "eager"}
CLEAR_GAIN = 1.25


def choose_engine(kind: str, device: torch.device, role: str = "restorer") -> str:
    """The engine ``kind`` means for the network in ``role`` on ``device`` (``auto``: by measurement,
    see :data:`CPU_AUTO`; on GPUs eager until a GPU measurement says otherwise)."""
    if kind != "auto":
        return kind
    if device.type == "cpu" and _has("onnxruntime") and _has("onnx"):
        return CPU_AUTO.get(role, "eager")
    return "eager"


def eager_maker(role: str, module: nn.Module, shape: NetShape) -> Engine:
    return EagerEngine(module)


def make_engine(
    kind: str,
    role: str,
    module: nn.Module,
    shape: NetShape,
    placement: Placement,
    cache: Path,
    weights_sha256: str,
    threads: int = 0,
) -> Engine:
    """The engine ``kind`` (not ``auto``: see :func:`choose_engine`) for ``module`` in ``role``.
    ``cache`` is the folder exported models are kept in, keyed by ``weights_sha256``."""
    if kind == "eager":
        return EagerEngine(module)
    if kind == "compile":
        return CompiledEngine(module, placement.device)
    if kind in ("onnxruntime", "tensorrt"):
        if not (_has("onnxruntime") and _has("onnx")):
            how = "pip install 'vidrestore[tensorrt]'" if kind == "tensorrt" else "pip install onnxruntime onnx"
            raise ConfigError(f"engine {kind} needs ONNX Runtime and onnx: {how}")
        return OnnxEngine(kind, role, module, shape, placement, cache, weights_sha256, threads)
    raise ConfigError(f"unknown engine {kind!r}; use auto, eager, compile, onnxruntime or tensorrt")
