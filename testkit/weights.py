"""Random-weight model files of the real architectures for tests and benchmarks (full size, or
narrower variants of the same architecture where speed matters), saved like the released files so
they load through :func:`vidrestore.models.loading.load_model`; and the research packages' own
inference loops, to compare against. Nothing here downloads anything, and none of it ships in the wheel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidrestore.models.compat import import_research_module

__all__ = ["reference_codeformer", "reference_gfpganer", "save_random_weights"]


def _model(arch: str, small: bool) -> Any:
    if arch == "gfpgan_v1_clean":
        m = import_research_module("gfpgan.archs.gfpganv1_clean_arch")
        # v1.3/v1.4 as released, or the same architecture narrower and with fewer style layers
        width = (
            {"num_style_feat": 64, "channel_multiplier": 1, "num_mlp": 2, "narrow": 0.125}
            if small
            else {"num_style_feat": 512, "channel_multiplier": 2, "num_mlp": 8, "narrow": 1}
        )
        return m.GFPGANv1Clean(
            out_size=512,
            decoder_load_path=None,
            fix_decoder=False,
            input_is_latent=True,
            different_w=True,
            sft_half=True,
            **width,
        )
    if arch == "restoreformer":
        m = import_research_module("gfpgan.archs.restoreformer_arch")
        # as released, or narrower with a small codebook (the same six levels and 16x16 latent)
        width = (
            {"ch": 32, "num_res_blocks": 1, "n_embed": 64, "embed_dim": 32, "z_channels": 64}
            if small
            else {"ch": 64, "num_res_blocks": 2, "n_embed": 1024, "embed_dim": 256, "z_channels": 256}
        )
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints the latent's shape
            return m.RestoreFormer(**width)
    if arch == "codeformer":  # only as released: spandrel's class fixes the sizes
        from vidrestore.models.compat import import_codeformer

        return import_codeformer().CodeFormer()
    if arch == "srvgg_compact":
        m = import_research_module("realesrgan.archs.srvgg_arch")
        return m.SRVGGNetCompact(
            num_in_ch=3,
            num_out_ch=3,
            num_feat=16 if small else 64,
            num_conv=4 if small else 32,
            upscale=4,
            act_type="prelu",
        )
    if arch in ("rrdbnet", "rrdbnet_x2"):  # Real-ESRGAN x4plus, or x2plus
        m = import_research_module("basicsr.archs.rrdbnet_arch")
        return m.RRDBNet(
            num_in_ch=3,
            num_out_ch=3,
            scale=2 if arch == "rrdbnet_x2" else 4,
            num_feat=16 if small else 64,
            num_block=2 if small else 23,
            num_grow_ch=8 if small else 32,
        )
    if arch in ("retinaface", "retinaface_mobile"):
        m = import_research_module("facexlib.detection.retinaface")
        net = "mobile0.25" if arch == "retinaface_mobile" or small else "resnet50"
        return m.RetinaFace(network_name=net, half=False, phase="test", device="cpu")
    if arch == "parsenet":
        m = import_research_module("facexlib.parsing.parsenet")
        if small:  # a quarter of the widths and two body blocks: the same layers, about 1/16 the cost
            return m.ParseNet(in_size=512, out_size=512, parsing_ch=19, base_ch=16, res_depth=2, ch_range=[16, 64])
        return m.ParseNet(in_size=512, out_size=512, parsing_ch=19)
    raise ValueError(f"unknown architecture {arch!r}")


def save_random_weights(
    arch: str, path: Path, *, small: bool = True, seed: int = 0, key: str | None = "params_ema", scale: float = 1.0
) -> Path:
    """Build ``arch`` with random weights and save its state dict like the release files do.

    ``key`` wraps the state dict (``params_ema`` for GFPGAN/x4plus/RestoreFormer/CodeFormer,
    ``params`` for general-x4v3, ``None`` for the facexlib models). ``scale`` multiplies every
    float tensor (a smaller scale keeps a random network's output tame).

    RestoreFormer and CodeFormer pick a codebook entry per latent cell (an argmin, an argmax).
    Trained codebooks are far apart; random ones are not, so a difference of one grey level in
    the aligned crop would flip codes and change the face: the random files make the choice
    clear (one code near the origin and the rest far off; CodeFormer's code logits made
    constant), so that two pipelines can be compared at all. Every layer still runs.
    """
    torch.manual_seed(seed)
    model = _model(arch, small)
    state = {k: (v * scale if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    if arch == "restoreformer":
        book = state["quantize.embedding.weight"]
        book.copy_(torch.nn.functional.normalize(book, dim=1) * 1e3)
        book[0] = 0
    if arch == "codeformer":
        state["idx_pred_layer.0.weight"].zero_()  # LayerNorm's gain: the logits are its bias's, fixed
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: state} if key else state, path)
    return path


# -- the gfpgan package's own loop, for comparisons ------------------------------------------


class _FixedNoise(torch.nn.Module):
    """GFPGANer calls the network with ``randomize_noise=True`` (its default); fix the noise as we do."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, **kwargs: Any) -> Any:
        kwargs.pop("weight", None)  # GFPGANv1Clean ignores it
        return self.net(x, randomize_noise=False, **kwargs)


class FacexlibDetector:
    """facexlib's ``detect_faces(bgr, threshold)`` interface over one of our detectors,
    so the reference loop sees exactly the landmarks vidrestore sees."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def detect_faces(self, bgr: np.ndarray, conf_threshold: float = 0.8) -> np.ndarray:
        (d,) = self.detector.detect([np.ascontiguousarray(bgr[:, :, ::-1])])
        return np.concatenate([d.boxes, d.scores[:, None], d.landmarks.reshape(-1, 10)], axis=1)


def _face_helper(parser: torch.nn.Module, detector: Any, upscale: int, device: torch.device) -> Any:
    """facexlib's ``FaceRestoreHelper`` as GFPGAN and CodeFormer build it (512 crops, parsing mask on),
    with our detector and the given parser instead of the models its constructor would download."""
    helper_mod = import_research_module("facexlib.utils.face_restoration_helper")
    saved = helper_mod.init_detection_model, helper_mod.init_parsing_model
    helper_mod.init_detection_model = lambda *a, **k: FacexlibDetector(detector)
    helper_mod.init_parsing_model = lambda *a, **k: parser
    try:
        return helper_mod.FaceRestoreHelper(
            upscale,
            face_size=512,
            crop_ratio=(1, 1),
            det_model="retinaface_resnet50",
            save_ext="png",
            use_parse=True,
            device=device,
        )
    finally:
        helper_mod.init_detection_model, helper_mod.init_parsing_model = saved


def reference_gfpganer(
    gfpgan: torch.nn.Module,
    parser: torch.nn.Module,
    detector: Any,
    device: torch.device | str = "cpu",
    upscale: int = 1,
) -> Any:
    """The gfpgan package's ``GFPGANer`` around the given networks, without its downloads.

    Its constructor would fetch RetinaFace and ParseNet from the internet; this builds the
    same object with the detector (any of ours, through :class:`FacexlibDetector`) and the
    networks handed in, and the GFPGAN noise fixed. ``enhance()`` is the package's own code.
    """
    gfpgan_utils = import_research_module("gfpgan.utils")
    ref = gfpgan_utils.GFPGANer.__new__(gfpgan_utils.GFPGANer)
    ref.upscale, ref.bg_upsampler, ref.device = upscale, None, torch.device(device)
    ref.face_helper = _face_helper(parser, detector, upscale, ref.device)
    ref.gfpgan = _FixedNoise(gfpgan).to(ref.device)
    return ref


def reference_codeformer(
    codeformer: torch.nn.Module, parser: torch.nn.Module, detector: Any, fidelity: float
) -> Callable[[np.ndarray], np.ndarray]:
    """CodeFormer's own inference script's per-image loop (``inference_codeformer.py``, whole-image
    mode, no background upsampler), on facexlib's helper, with the given networks and detector.

    The script calls ``net(face, w=fidelity, adain=True)[0]``; spandrel's class takes the same
    weight as ``weight`` (and always uses AdaIN), so it is called that way here. Detection runs at
    full size (the script shrinks the image to 640 px for its detector; this compares restorers).
    Returns ``enhance(bgr) -> bgr``.
    """
    misc = import_research_module("basicsr.utils")
    from torchvision.transforms.functional import normalize

    helper = _face_helper(parser, detector, 1, torch.device("cpu"))

    def enhance(bgr: np.ndarray) -> np.ndarray:
        helper.clean_all()
        helper.read_image(bgr)
        helper.get_face_landmarks_5(only_center_face=False, eye_dist_threshold=5)
        helper.align_warp_face()
        for cropped in helper.cropped_faces:
            t = misc.img2tensor(cropped / 255.0, bgr2rgb=True, float32=True)
            normalize(t, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), inplace=True)
            with torch.no_grad():
                out = codeformer(t.unsqueeze(0), weight=fidelity)[0]
            restored = misc.tensor2img(out, rgb2bgr=True, min_max=(-1, 1)).astype("uint8")
            helper.add_restored_face(restored)  # (CodeFormer's own facexlib fork also takes the crop)
        helper.get_inverse_affine(None)
        return helper.paste_faces_to_input_image(upsample_img=None)  # type: ignore[no-any-return]

    return enhance
