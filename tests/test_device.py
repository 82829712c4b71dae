from __future__ import annotations

import pytest
import torch

from vidrestore.device import resolve_placement
from vidrestore.errors import ConfigError


def test_cpu_runs_fp32() -> None:
    p = resolve_placement("cpu", "auto")
    assert p.device.type == "cpu" and p.dtype == torch.float32
    assert resolve_placement("cpu", "fp32").dtype == torch.float32


def test_half_precision_is_refused_on_the_cpu() -> None:
    with pytest.raises(ConfigError, match="precision = 'fp16' needs a GPU"):
        resolve_placement("cpu", "fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_absent_cuda_is_a_clear_error() -> None:
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match="no CUDA GPU is available"):
            resolve_placement(name, "auto")
    assert resolve_placement("auto", "auto").device.type in ("cpu", "mps")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="Metal is present")
def test_absent_mps_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="Metal backend is not available"):
        resolve_placement("mps", "auto")


@pytest.mark.needs_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_auto_precision_is_bf16_where_supported() -> None:
    p = resolve_placement("cuda", "auto")
    assert p.device.type == "cuda"
    assert p.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    with pytest.raises(ConfigError, match="only"):
        resolve_placement(f"cuda:{torch.cuda.device_count()}", "auto")
