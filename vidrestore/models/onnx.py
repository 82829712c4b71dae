"""Networks run by ONNX Runtime: exported once from the loaded weights, cached, verified on load.

The exported file lives in the weights folder's ``engines/``, named by a digest of its key: the
weights file's sha256, the network's role and input shape, the opset and the exporter (torch's
version). Beside it a small JSON record holds that key and the exported file's own sha256. A file
is loaded only when its record's key is the one wanted and its bytes hash to the recorded sum;
otherwise (a changed weights file, opset or torch, a file cut short or altered) it is exported again.
Both are written under temporary names and renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidrestore.device import Placement
from vidrestore.errors import ConfigError, ModelError
from vidrestore.models.store import sha256_file

__all__ = ["EXPORTER", "EXPORTS", "OPSET", "OnnxEngine", "exported_fp32", "exported_model", "write_replacing"]

log = logging.getLogger(__name__)

OPSET = 17
EXPORTER = f"torch.onnx {torch.__version__} (TorchScript)"  # part of the cache key: another exporter, another file
EXPORTS: list[Path] = []  # every export this process made, in order (what the cache tests count)


def write_replacing(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename over ``path``: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_key(role: str, example: tuple[int, ...], weights_sha256: str, opset: int) -> dict[str, Any]:
    return {
        "role": role,
        "input": list(example),
        "weights_sha256": weights_sha256,
        "opset": opset,
        "exporter": EXPORTER,
    }


def exported_model(
    module: nn.Module,
    role: str,
    example: tuple[int, ...],
    dynamic: dict[int, str],
    outputs: int,
    folder: Path,
    weights_sha256: str,
    opset: int | None = None,
) -> Path:
    """The ONNX file for ``module`` (exported now unless a verified one is cached in ``folder``)."""
    opset = opset or OPSET
    key = export_key(role, example, weights_sha256, opset)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = folder / f"{role}-{digest}.onnx"
    record = path.with_suffix(".json")
    if path.exists() and record.exists():
        try:
            kept = json.loads(record.read_text())
        except (OSError, ValueError):
            kept = {}
        if kept.get("key") == key and kept.get("sha256") == sha256_file(path):
            return path
        log.warning("the cached %s engine %s does not match its record; exporting it again", role, path.name)
    folder.mkdir(parents=True, exist_ok=True)
    log.info("exporting the %s to ONNX (once for these weights)", role)
    names = [f"out{i}" for i in range(outputs)]
    axes = {"x": dynamic, **{n: {0: dynamic[0]} for n in names if 0 in dynamic}}
    x = torch.zeros(example, device=next(module.parameters()).device, dtype=next(module.parameters()).dtype)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices: not the user's concern
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    module.eval(),
                    (x,),
                    str(tmp),
                    opset_version=opset,
                    dynamo=False,
                    input_names=["x"],
                    output_names=names,
                    dynamic_axes=axes,
                )
            except Exception as exc:  # the exporter raises many kinds for an unsupported network
                raise ModelError(
                    f"the {role} cannot be exported to ONNX ({type(exc).__name__}); use engine eager"
                ) from exc

    write_replacing(path, write)
    sums = {"key": key, "sha256": sha256_file(path)}
    write_replacing(record, lambda tmp: tmp.write_text(json.dumps(sums, indent=1)))
    EXPORTS.append(path)
    return path


def exported_fp32(module: nn.Module, role: str, shape: Any, folder: Path, weights_sha256: str) -> Path:
    """The ONNX file of ``module`` in fp32 for a network of ``shape`` (:class:`NetShape`), exported
    from a copy when the loaded module is in another precision: the module itself is shared with
    the eager fallbacks. (ONNX Runtime has no bf16 kernels worth using on a CPU; OpenVINO turns
    the f32 graph into bf16 itself.)"""
    full = module if next(module.parameters()).dtype == torch.float32 else copy.deepcopy(module).float()
    return exported_model(full, role, shape.example, shape.dynamic, shape.outputs, folder, weights_sha256)


class OnnxEngine:
    """A network run by ONNX Runtime: on the CPU with the configured threads, on CUDA through the
    CUDA provider (``onnxruntime-gpu``), or through TensorRT (``engine: tensorrt``, its built
    engines cached beside the ONNX file). Inputs and outputs pass through host memory."""

    def __init__(
        self,
        kind: str,
        role: str,
        module: nn.Module,
        shape: Any,
        placement: Placement,
        cache: Path,
        weights_sha256: str,
        threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        self.name, self.role, self.device = kind, role, placement.device
        path = self.path = exported_fp32(module, role, shape, cache, weights_sha256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers: list[Any] = ["CPUExecutionProvider"]
        if kind == "tensorrt":
            if placement.device.type != "cuda" or "TensorrtExecutionProvider" not in available:
                raise ConfigError(
                    "engine tensorrt needs a CUDA GPU and ONNX Runtime's TensorRT provider: "
                    "pip install 'vidrestore[tensorrt]'"
                )
            trt = {
                "device_id": placement.device.index or 0,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache / "tensorrt"),
                "trt_fp16_enable": role != "restorer",  # fp16 turns GFPGAN's output to solid colour
            }
            providers = [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider", *providers]
        elif placement.device.type == "cuda" and "CUDAExecutionProvider" in available:
            providers = [("CUDAExecutionProvider", {"device_id": placement.device.index or 0}), *providers]
        elif placement.device.type == "cuda":
            log.warning(
                "ONNX Runtime here has no CUDA provider (pip install onnxruntime-gpu): the %s runs on the CPU", role
            )
        self.precision = "fp16" if kind == "tensorrt" and role != "restorer" else "fp32"
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.outputs = shape.outputs

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feed = {"x": np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())}
        got = [torch.from_numpy(o).to(self.device) for o in self.session.run(None, feed)]
        return got[0] if self.outputs == 1 else tuple(got)
