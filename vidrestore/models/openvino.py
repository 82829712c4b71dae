"""Networks run by OpenVINO: the same ONNX export (and cache) as ONNX Runtime, compiled for a CPU
(or an Intel GPU or NPU) in f32 or bf16.

bf16 runs only where the processor does it natively (AMX or AVX-512 BF16: OpenVINO's CPU plugin
then lists ``BF16`` among its optimisation capabilities); elsewhere OpenVINO would emulate it, slower
than f32, and vidrestore never asks for that. A network is kept in bf16 only when its bf16 output
agrees with its f32 output at :data:`BF16_MIN_DB` or more on a probe input; the verdict is kept
beside the exported file (a small JSON record, keyed by the export's own sha256, OpenVINO's version
and the threshold), so the check runs once per network and machine.

OpenVINO's compiled-model cache is used, in the engines folder's ``openvino/``: compiling GFPGAN
v1.4 takes about 2.2 s on a 2-core CPU, loading it from the cache 0.1 s. Its blobs are verified as
the exports are: each one's sha256 is recorded when it is made (``sums.json``), and before any
compile a blob whose bytes no longer match its record, or that has none, is deleted (OpenVINO then
compiles again and writes it anew).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidrestore.device import Placement, native_bf16, openvino_core
from vidrestore.errors import ConfigError
from vidrestore.models.onnx import exported_fp32, write_replacing
from vidrestore.models.store import sha256_file

__all__ = ["BF16_MIN_DB", "OpenVinoEngine", "bf16_parity", "native_bf16", "openvino_devices"]

log = logging.getLogger(__name__)

BF16_MIN_DB = 38.0  # bf16 output against f32, PSNR with the f32 output's own range as the peak


def _core() -> Any:
    return openvino_core()


def openvino_devices() -> list[str]:
    """The devices OpenVINO can compile for here (CPU; GPU, NPU where their drivers are present)."""
    return list(_core().available_devices)


def _psnr(ref: np.ndarray, out: np.ndarray) -> float:
    peak = float(ref.max() - ref.min()) or 1.0
    mse = float(np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * float(np.log10(peak * peak / mse))


def _probe(example: tuple[int, ...]) -> np.ndarray:
    """A fixed, smooth input in the range every network here takes ([-1, 1] or [0, 1]): low
    frequencies, as faces and frames have, not white noise."""
    rng = np.random.default_rng(0)
    n, c, h, w = example
    small = rng.uniform(0, 1, (n, c, max(1, h // 16), max(1, w // 16))).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(small), size=(h, w), mode="bicubic", align_corners=False)
    return np.ascontiguousarray(big.clamp(0, 1).numpy())


def bf16_parity(path: Path, example: tuple[int, ...], device: str, threads: int) -> float:
    """The lowest PSNR over the outputs of ``path`` compiled in bf16 against f32, on :func:`_probe`."""
    x = _probe(example)
    got = []
    for precision in ("f32", "bf16"):
        compiled = _compile(path, device, precision, threads)
        got.append([np.asarray(o) for o in compiled({0: x}).values()])
    return min(_psnr(a, b) for a, b in zip(*got, strict=True))


_BLOBS = threading.Lock()


def _checked_blobs(folder: Path) -> dict[str, str]:
    """The compiled-model cache in ``folder`` with every blob that does not match its recorded
    sha256 (or has none) deleted; returns the records of those kept."""
    try:
        sums = json.loads((folder / "sums.json").read_text())
    except (OSError, ValueError):
        sums = {}
    kept = {}
    for blob in folder.glob("*.blob"):
        if sums.get(blob.name) == sha256_file(blob):
            kept[blob.name] = sums[blob.name]
        else:
            log.warning("OpenVINO's cached %s does not match its record; it is compiled again", blob.name)
            blob.unlink(missing_ok=True)
    return kept


def _compile(path: Path, device: str, precision: str, threads: int, cache: Path | None = None) -> Any:
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    if cache is None:
        return _core().compile_model(str(path), device, config)
    with _BLOBS:
        cache.mkdir(parents=True, exist_ok=True)
        sums = _checked_blobs(cache)
        compiled = _core().compile_model(str(path), device, {**config, "CACHE_DIR": str(cache)})
        for blob in cache.glob("*.blob"):
            if blob.name not in sums:
                sums[blob.name] = sha256_file(blob)
        write_replacing(cache / "sums.json", lambda tmp: tmp.write_text(json.dumps(sums, indent=1)))
    return compiled


def _bf16_verdict(path: Path, example: tuple[int, ...], device: str, threads: int) -> float:
    """:func:`bf16_parity` for ``path``, from its record when one was made for these bytes."""
    import openvino as ov

    record = path.with_suffix(".bf16.json")
    key = {"onnx_sha256": sha256_file(path), "openvino": ov.__version__, "device": device, "min_db": BF16_MIN_DB}
    try:
        kept = json.loads(record.read_text())
        if kept.get("key") == key:
            return float(kept["db"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    db = round(bf16_parity(path, example, device, threads), 2)
    write_replacing(record, lambda tmp: tmp.write_text(json.dumps({"key": key, "db": db}, indent=1)))
    return db


class OpenVinoEngine:
    """A network compiled by OpenVINO for ``device`` (``CPU``, or ``GPU``/``NPU`` where present), in
    ``precision`` (``fp32`` or ``bf16``; bf16 falls back to fp32, said once, where the network's
    bf16 output does not hold :data:`BF16_MIN_DB`). Inputs and outputs pass through host memory;
    one call runs at a time (a compiled model's request is not shared between threads)."""

    name = "openvino"

    def __init__(
        self,
        role: str,
        module: nn.Module,
        shape: Any,
        placement: Placement,
        cache: Path,
        weights_sha256: str,
        threads: int = 0,
        precision: str = "fp32",
        device: str = "CPU",
    ) -> None:
        if device not in openvino_devices():
            raise ConfigError(
                f"openvino_device = {device!r} is not present here; OpenVINO sees {', '.join(openvino_devices())}"
            )
        self.path = exported_fp32(module, role, shape, cache, weights_sha256)
        self.role, self.out_device, self.outputs = role, placement.device, shape.outputs
        threads = threads or torch.get_num_threads()
        self.precision = precision
        if precision == "bf16":
            db = _bf16_verdict(self.path, shape.example, device, threads)
            if db < BF16_MIN_DB:
                log.warning(
                    "the %s in bf16 agrees with f32 at %.1f dB only (%.0f dB needed): it runs in fp32",
                    role,
                    db,
                    BF16_MIN_DB,
                )
                self.precision = "fp32"
        ov_precision = "bf16" if self.precision == "bf16" else "f32"
        self.compiled = _compile(self.path, device, ov_precision, threads, cache / "openvino")
        self._lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feed = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        with self._lock:
            result = self.compiled({0: feed})
            got = [torch.from_numpy(np.array(o, dtype=np.float32)).to(self.out_device) for o in result.values()]
        return got[0] if self.outputs == 1 else tuple(got)
