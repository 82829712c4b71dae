"""Build a network from a weights file: read it safely, infer its shape, load it strictly.

Each architecture family has one small adapter that reads the hyper-parameters off the
state dict's tensor shapes (so a user's fine-tuned or a smaller variant loads without
extra settings) and builds the network from the research package's own class. Files are
read with ``torch.load(..., weights_only=True)``: no pickled code ever runs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from vidrestore.errors import ModelError
from vidrestore.models.compat import import_codeformer, import_research_module
from vidrestore.models.registry import Arch
from vidrestore.models.speedups import batch_modulated_convs

__all__ = ["build_model", "load_model", "read_state_dict"]

log = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in a ``.pth`` file, unwrapped from ``params_ema``/``params``/``state_dict``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"weights file {path} does not exist") from exc
    except Exception as exc:  # torch raises many types for a corrupt or non-torch file
        raise ModelError(f"{path} is not a readable PyTorch weights file ({type(exc).__name__})") from exc
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


def _count(state: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def _gfpgan(state: StateDict) -> nn.Module:
    arch = import_research_module("gfpgan.archs.gfpganv1_clean_arch")
    n_up = _count(state, r"conv_body_up\.(\d+)\.")
    log_size = n_up + 2
    ch4 = state["final_conv.weight"].shape[0]
    narrow = ch4 * 2 / 512
    num_style_feat = state["stylegan_decoder.style_mlp.1.weight"].shape[0]
    num_mlp = _count(state, r"stylegan_decoder\.style_mlp\.(\d+)\.weight")
    channel_multiplier = 2
    if log_size >= 6:  # the 64-pixel level is the first whose width depends on it
        ch64 = state["toRGB.3.weight"].shape[1]
        channel_multiplier = round(ch64 / (256 * narrow * 0.5))
    sft_out = state["condition_scale.0.2.weight"].shape[0]
    sft_half = sft_out == state["condition_scale.0.0.weight"].shape[0]
    different_w = state["final_linear.weight"].shape[0] != num_style_feat
    return arch.GFPGANv1Clean(  # type: ignore[no-any-return]
        out_size=2**log_size,
        num_style_feat=num_style_feat,
        channel_multiplier=channel_multiplier,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=num_mlp,
        input_is_latent=True,
        different_w=different_w,
        narrow=narrow,
        sft_half=sft_half,
    )


def _restoreformer(state: StateDict) -> nn.Module:
    arch = import_research_module("gfpgan.archs.restoreformer_arch")
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = _count(state, r"encoder\.down\.(\d+)\.")
    ch_mult = tuple(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels))
    resolution = 512
    attn = tuple(resolution // 2**i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in state)
    n_embed, embed_dim = state["quantize.embedding.weight"].shape
    with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints the latent's shape
        return arch.RestoreFormer(  # type: ignore[no-any-return]
            n_embed=n_embed,
            embed_dim=embed_dim,
            ch=ch,
            ch_mult=ch_mult,
            num_res_blocks=_count(state, r"encoder\.down\.0\.block\.(\d+)\."),
            attn_resolutions=attn,
            resolution=resolution,
            z_channels=state["quant_conv.weight"].shape[1],
            enable_mid="encoder.mid.block_1.conv1.weight" in state,
        )


def _codeformer(state: StateDict) -> nn.Module:
    module = import_codeformer()
    return module.CodeFormerArch().load(dict(state)).model  # type: ignore[no-any-return]


def _rrdbnet(state: StateDict) -> nn.Module:
    arch = import_research_module("basicsr.archs.rrdbnet_arch")
    in_ch = state["conv_first.weight"].shape[1]
    scale = {3: 4, 12: 2, 48: 1}.get(in_ch)
    if scale is None:
        raise ValueError(f"unexpected conv_first input channels {in_ch}")
    return arch.RRDBNet(  # type: ignore[no-any-return]
        num_in_ch=3,
        num_out_ch=state["conv_last.weight"].shape[0],
        scale=scale,
        num_feat=state["conv_first.weight"].shape[0],
        num_block=_count(state, r"body\.(\d+)\."),
        num_grow_ch=state["body.0.rdb1.conv1.weight"].shape[0],
    )


def _srvgg(state: StateDict) -> nn.Module:
    arch = import_research_module("realesrgan.archs.srvgg_arch")
    convs = sorted(int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.weight$", k)) and state[k].ndim == 4)
    last = state[f"body.{convs[-1]}.weight"]
    upscale = math.isqrt(last.shape[0] // 3)
    return arch.SRVGGNetCompact(  # type: ignore[no-any-return]
        num_in_ch=3,
        num_out_ch=3,
        num_feat=state["body.0.weight"].shape[0],
        num_conv=len(convs) - 2,
        upscale=upscale,
        act_type="prelu",
    )


def _retinaface(state: StateDict) -> nn.Module:
    module = import_research_module("facexlib.detection.retinaface")
    network = "mobile0.25" if any(k.startswith("body.stage1.") for k in state) else "resnet50"
    with warnings.catch_warnings():  # facexlib passes torchvision's deprecated pretrained=False
        warnings.simplefilter("ignore", UserWarning)
        return module.RetinaFace(network_name=network, half=False, phase="test", device="cpu")  # type: ignore[no-any-return]


def _parsenet(state: StateDict) -> nn.Module:
    """ParseNet at 512 px, its widths and depth read from ``state`` (the release: 64 channels first,
    clipped to 32..256, ten body blocks; a narrower file is built narrower). Every width in the net
    is the first one doubled or halved and clipped, so the first and the body's give the range."""
    module = import_research_module("facexlib.parsing.parsenet")
    base = int(state["encoder.0.conv2d.weight"].shape[0])
    low = int(state["out_img_conv.conv2d.weight"].shape[1])  # the first width, clipped from below
    high = int(state["body.0.conv1.conv2d.weight"].shape[0])  # the deepest width, clipped from above
    depth = len({k.split(".")[1] for k in state if k.startswith("body.")})
    return module.ParseNet(  # type: ignore[no-any-return]
        in_size=512, out_size=512, parsing_ch=19, base_ch=base, res_depth=depth, ch_range=[low, high]
    )


_BUILDERS: dict[str, Callable[[StateDict], nn.Module]] = {
    "gfpgan_v1_clean": _gfpgan,
    "restoreformer": _restoreformer,
    "codeformer": _codeformer,
    "rrdbnet": _rrdbnet,
    "srvgg_compact": _srvgg,
    "retinaface": _retinaface,
    "parsenet": _parsenet,
}


def build_model(arch: Arch, state: StateDict) -> nn.Module:
    """An untrained network of family ``arch`` shaped to match ``state``."""
    return _BUILDERS[arch](state)


def load_model(arch: Arch, path: Path, device: torch.device | str = "cpu") -> nn.Module:
    """Read ``path``, build the matching ``arch`` network, load it strictly, ``eval()`` it.

    A file of the wrong family or shape raises ModelError naming the file.
    """
    state = read_state_dict(path)
    try:
        model = build_model(arch, state)
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError, IndexError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} does not fit the {arch} architecture ({first[:160]})") from exc
    model.eval().requires_grad_(False)
    if arch == "gfpgan_v1_clean":
        batch_modulated_convs(model)  # same arithmetic, one batched convolution per layer
    log.info("loaded %s from %s", arch, path)
    return model.to(device)
