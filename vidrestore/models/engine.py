"""Engines: how a loaded network runs. Every engine takes the same loaded torch module and gives the
same call, a batch in and a batch (or a tuple of them) out, so the stages never know which one runs.

- ``eager``: the module itself, in the placement's precision.
- ``onnxruntime``: exported once with ``torch.onnx`` from the loaded weights, cached beside them
  (see :mod:`vidrestore.models.onnx`), run by ONNX Runtime (on the CPU; CUDA where
  ``onnxruntime-gpu`` is installed).
- ``compile``: ``torch.compile``; on CUDA with fixed batch sizes (1, 4, 8, 16, 32; a batch is
  padded up) so that CUDA graphs can be captured, and cuDNN's autotuner on.
- ``tensorrt``: ONNX Runtime's TensorRT provider on the exported model (the ``tensorrt`` extra).
- ``openvino``: the same export compiled by OpenVINO (see :mod:`vidrestore.models.openvino`), in
  f32, or in bf16 where the CPU does bf16 natively.
- ``auto``: chosen per network by measurement (``python -m bench.engines``, :data:`CPU_AUTO_BF16`
  and :data:`CPU_AUTO`); eager on GPUs until a GPU measurement says otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from vidrestore.device import Placement, native_bf16
from vidrestore.errors import ConfigError
from vidrestore.models.onnx import OnnxEngine
from vidrestore.models.openvino import OpenVinoEngine

__all__ = [
    "BUCKETS",
    "CLEAR_GAIN",
    "CPU_AUTO",
    "CPU_AUTO_BF16",
    "Engine",
    "EngineMaker",
    "NetShape",
    "asked_engine",
    "choose_engine",
    "describe_engine",
    "eager_maker",
    "engine_precision",
    "make_engine",
    "net_precision",
    "planned_engine",
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


# What ``auto`` runs each network with on a CPU, from ``python -m bench.engines`` (bench/results/
# engines.json, 2 threads, batch 1). Engines are taken in order (eager, onnxruntime, openvino f32,
# openvino bf16), and one replaces the choice so far only where it is CLEAR_GAIN faster, since runs
# on a shared machine differ by up to 15% per row; bf16 only where its output held its threshold.
# On a CPU that does bf16 natively (measured on an AMD EPYC Zen 4 with AVX-512 BF16, no AMX), per
# face against ONNX Runtime fp32: GFPGAN v1.4 in OpenVINO bf16 2.16x (51 dB against f32), ParseNet
# 2.18x (40 dB), realesr-general-x4v3 1.72x (62 dB). RetinaFace in bf16 moved its points by up to
# 5 px: it stays fp32, and eager (neither ONNX Runtime, 1.02x, nor OpenVINO f32, 1.07x, is a gain).
CPU_AUTO_BF16 = {"restorer": "openvino", "parser": "openvino", "upscaler": "openvino", "detector": "eager"}
# Without native bf16 (the same machine in f32): ONNX Runtime ran GFPGAN v1.4 2.07x faster than
# eager torch, OpenVINO f32 1.07x ONNX Runtime (not a clear gain); ParseNet 1.01x (OpenVINO f32
# 1.15x), the upscaler 1.07x (OpenVINO f32 0.78x) and RetinaFace 1.02x (1.07x): those stay eager
# (and skip an export and a second copy of their weights). The table was measured on a CPU with
# AVX-512; on an AVX2-only CPU (no bf16 there either) auto does the same, untimed there: the
# issue's Xeon and this EPYC agree that ONNX Runtime is the clear gain for the restorer and that no
# f32 engine is one for the others. torch.compile was close to ONNX Runtime but compiles for
# minutes on a CPU.
CPU_AUTO = {"restorer": "onnxruntime", "parser": "eager", "upscaler": "eager", "detector": "eager"}
CLEAR_GAIN = 1.25


def _cpu_table(precision: str) -> dict[str, str]:
    """The table ``auto`` follows on this CPU: bf16's where OpenVINO runs and the CPU does bf16
    natively (and precision allows it), else the f32 one."""
    if precision != "fp32" and _has("openvino") and native_bf16():
        return CPU_AUTO_BF16
    return CPU_AUTO


def choose_engine(kind: str, device: torch.device, role: str = "restorer", precision: str = "auto") -> str:
    """The engine ``kind`` means for the network in ``role`` on ``device`` (``auto``: by measurement,
    see :data:`CPU_AUTO_BF16` and :data:`CPU_AUTO`; on GPUs eager until a GPU measurement says
    otherwise). An engine whose package is missing is passed over for eager."""
    if kind != "auto":
        return kind
    if device.type != "cpu":
        return "eager"
    chosen = _cpu_table(precision).get(role, "eager")
    if chosen == "onnxruntime" and not (_has("onnxruntime") and _has("onnx")):
        return "eager"
    if chosen == "openvino" and not (_has("openvino") and _has("onnx")):
        return "eager"
    return chosen


def engine_precision(asked: str, kind: str, device: torch.device, role: str = "restorer") -> str:
    """What a network run by engine ``kind`` computes in on a CPU, for ``precision`` ``asked``
    (auto, fp32, bf16): bf16 only under OpenVINO, and only where the CPU does it natively (``auto``
    takes it there; ``bf16`` asked elsewhere is an error, never an emulation); fp32 otherwise.
    RetinaFace stays fp32 on CPUs: in bf16 its points moved by up to 5 px (``bench.engines``)."""
    if device.type != "cpu" or asked == "fp32" or role == "detector":
        return "fp32"
    if kind == "openvino" and native_bf16():
        return "bf16"
    if asked == "bf16" and not native_bf16():
        raise ConfigError(
            "precision = 'bf16' on this CPU would be emulated, slower than fp32: it has neither AMX nor AVX-512 BF16 "
            "(or OpenVINO is not installed); use precision=auto or fp32"
        )
    return "fp32"


def net_precision(config: Any, role: str) -> str:
    """The precision asked for the network in ``role``: its section's key (the parser follows the
    restorer's; RetinaFace's ``auto`` the restorer's too), else the top-level one."""
    own = {
        "restorer": config.restorer.precision,
        "parser": config.restorer.precision,
        "upscaler": config.upscaler.precision,
        "detector": config.restorer.precision if config.detector.precision == "auto" else "fp32",
    }.get(role)
    return str(own or config.precision)


def asked_engine(config: Any, role: str) -> str:
    """The engine asked for the network in ``role``: its section's key (the parser follows the
    restorer's), else the top-level ``engine``."""
    own = {
        "restorer": config.restorer.engine,
        "parser": config.restorer.engine,
        "upscaler": config.upscaler.engine,
        "detector": config.detector.engine,
    }.get(role)
    return str(own or config.engine)


def planned_engine(config: Any, role: str, arch: str, placement: Placement) -> str:
    """``engine precision`` that a run of ``config`` will use for the network ``arch`` in ``role``,
    said before anything is loaded (``--dry-run``, ``models list``); the same choice the run makes,
    unless an export fails there and ``auto`` falls back to eager (the run's report then says so)."""
    if arch == "codeformer":
        return f"eager {_DTYPES.get(placement.dtype, 'fp32')} (its fidelity is a call argument)"
    if arch == "centerface":
        return "opencv fp32"
    wanted = net_precision(config, role)
    kind = choose_engine(asked_engine(config, role), placement.device, role, wanted)
    if placement.device.type != "cpu":
        own = config.detector.precision if role == "detector" else "auto"
        return f"{kind} {'fp32' if own == 'fp32' else _DTYPES.get(placement.dtype, 'fp32')}"
    return f"{kind} {engine_precision(wanted, kind, placement.device, role)}"


def describe_engine(engine: Engine, placement: Placement) -> str:
    """``engine precision``, as the report, the dry run and ``models list`` say it: e.g. ``openvino
    bf16``, ``onnxruntime fp32``, ``eager bf16`` (a CUDA placement's own precision)."""
    precision = getattr(engine, "precision", None)
    module = getattr(engine, "module", None)
    if precision is None and isinstance(module, nn.Module):  # eager: what its weights are in
        precision = _DTYPES.get(next(module.parameters()).dtype, "fp32")
    return f"{engine.name} {precision or _DTYPES.get(placement.dtype, 'fp32')}"


_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


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
    precision: str = "fp32",
    openvino_device: str = "CPU",
) -> Engine:
    """The engine ``kind`` (not ``auto``: see :func:`choose_engine`) for ``module`` in ``role``.
    ``cache`` is the folder exported models are kept in, keyed by ``weights_sha256``; ``precision``
    (fp32 or bf16, see :func:`engine_precision`) is what OpenVINO computes in."""
    if kind == "openvino":
        if not (_has("openvino") and _has("onnx")):
            raise ConfigError("engine openvino needs OpenVINO and onnx: pip install openvino onnx")
        return OpenVinoEngine(
            role, module, shape, placement, cache, weights_sha256, threads, precision, openvino_device
        )
    if kind == "eager":
        return EagerEngine(module)
    if kind == "compile":
        return CompiledEngine(module, placement.device)
    if kind in ("onnxruntime", "tensorrt"):
        if not (_has("onnxruntime") and _has("onnx")):
            how = "pip install 'vidrestore[tensorrt]'" if kind == "tensorrt" else "pip install onnxruntime onnx"
            raise ConfigError(f"engine {kind} needs ONNX Runtime and onnx: {how}")
        return OnnxEngine(kind, role, module, shape, placement, cache, weights_sha256, threads)
    raise ConfigError(f"unknown engine {kind!r}; use auto, eager, compile, onnxruntime, openvino or tensorrt")
