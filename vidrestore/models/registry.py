"""The models vidrestore knows by name: where they come from and how to check them.

Checksums are the SHA-256 of the official release files as recorded by independent
projects that verify them (see the project's model-checksums notes). A model whose
checksum is not confirmed has ``sha256=None``: the store will not fetch it (a download
that cannot be checked is never installed); users can still point a ``*.weights`` key
at their own copy, which is loaded as-is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_REGISTRY", "ModelRegistry", "ModelSpec"]

Arch = Literal["gfpgan_v1_clean", "restoreformer", "codeformer", "rrdbnet", "srvgg_compact", "retinaface", "parsenet"]
Role = Literal["restorer", "upscaler", "detector", "parser"]


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model file.

    ``size_mb`` is the approximate size of the release file (for the listing and the
    README); it is not used for verification, ``sha256`` is. The rest is the model's card for
    ``models list``: its licence, parameters (millions), input size, what it is good at, and the
    pip extra its architecture needs (None: the base install has it).
    """

    name: str
    role: Role
    arch: Arch
    filename: str
    url: str
    sha256: str | None
    size_mb: float
    description: str
    licence: str = ""
    params_m: float = 0.0
    input_size: str = ""
    good_at: str = ""
    extra: str | None = None

    def __post_init__(self) -> None:
        if self.sha256 is not None:
            if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
                raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")
        if "/" in self.filename or self.filename.startswith("."):
            raise ValueError(f"{self.name}: filename must be a plain file name")


class ModelRegistry(Mapping[str, ModelSpec]):
    """An immutable name -> spec mapping. Pass your own to the store to add models."""

    def __init__(self, specs: Iterator[ModelSpec] | list[ModelSpec] | tuple[ModelSpec, ...]) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"model {spec.name!r} registered twice")
            self._specs[spec.name] = spec

    def __getitem__(self, name: str) -> ModelSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


_GFPGAN = "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/"
_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download/"
_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download/"

_APACHE = "Apache-2.0"
_CODEFORMER_LICENCE = "NTU S-Lab License 1.0 (non-commercial use only)"

DEFAULT_REGISTRY = ModelRegistry(
    [
        ModelSpec(
            "gfpgan-1.4",
            "restorer",
            "gfpgan_v1_clean",
            "GFPGANv1.4.pth",
            _GFPGAN + "GFPGANv1.4.pth",
            "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
            348.6,
            "GFPGAN v1.4 face restorer (default)",
            licence=_APACHE,
            params_m=86.4,
            input_size="512x512 aligned face",
            good_at="more detail and a truer identity than v1.3 (GFPGAN's own notes); the default",
        ),
        ModelSpec(
            "gfpgan-1.3",
            "restorer",
            "gfpgan_v1_clean",
            "GFPGANv1.3.pth",
            _GFPGAN + "GFPGANv1.3.pth",
            "c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
            348.6,
            "GFPGAN v1.3 face restorer (smoother, less detail)",
            licence=_APACHE,
            params_m=86.4,
            input_size="512x512 aligned face",
            good_at="a more natural, less sharpened look, on very low and on high quality input",
        ),
        ModelSpec(
            "gfpgan-1.2",
            "restorer",
            "gfpgan_v1_clean",
            "GFPGANCleanv1-NoCE-C2.pth",
            "https://github.com/TencentARC/GFPGAN/releases/download/v0.2.0/GFPGANCleanv1-NoCE-C2.pth",
            None,
            348.6,
            "GFPGAN v1.2 face restorer (checksum not yet confirmed: supply it via restorer.weights)",
            licence=_APACHE,
            params_m=86.4,
            input_size="512x512 aligned face",
            good_at="sharper output with a retouched look (GFPGAN's notes: 'beauty makeup')",
        ),
        ModelSpec(
            "restoreformer",
            "restorer",
            "restoreformer",
            "RestoreFormer.pth",
            _GFPGAN + "RestoreFormer.pth",
            "07404d446d62ca3d5ed38b1de09a947a1e77d46dbccec961a74d713a8f24ace0",
            290.8,
            "RestoreFormer face restorer (multi-head cross attention over a learned face dictionary)",
            licence=_APACHE,
            params_m=72.7,
            input_size="512x512 aligned face",
            good_at="another look: details drawn from a learned dictionary of face parts",
        ),
        ModelSpec(
            "codeformer",
            "restorer",
            "codeformer",
            "codeformer.pth",
            "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
            "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
            376.6,
            "CodeFormer face restorer with its fidelity knob (restorer.fidelity)",
            licence=_CODEFORMER_LICENCE,
            params_m=94.1,
            input_size="512x512 aligned face",
            good_at="heavy degradation (old, tiny, blurred faces); restorer.fidelity trades detail for faithfulness",
            extra="codeformer",
        ),
        ModelSpec(
            "realesr-general-x4v3",
            "upscaler",
            "srvgg_compact",
            "realesr-general-x4v3.pth",
            _ESRGAN + "v0.2.5.0/realesr-general-x4v3.pth",
            "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
            4.9,
            "Real-ESRGAN general x4 v3, compact (default small-face upscaler)",
            licence="BSD-3-Clause",
            params_m=1.2,
            input_size="any",
            good_at="fast 4x upscaling of small faces' crops",
        ),
        ModelSpec(
            "realesrgan-x4plus",
            "upscaler",
            "rrdbnet",
            "RealESRGAN_x4plus.pth",
            _ESRGAN + "v0.1.0/RealESRGAN_x4plus.pth",
            "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
            67.0,
            "Real-ESRGAN x4plus, RRDB (stronger, ~15x slower than general-x4v3)",
            licence="BSD-3-Clause",
            params_m=16.7,
            input_size="any",
            good_at="the strongest 4x upscaler; whole frames (output.scale)",
        ),
        ModelSpec(
            "realesrgan-x2plus",
            "upscaler",
            "rrdbnet",
            "RealESRGAN_x2plus.pth",
            _ESRGAN + "v0.2.1/RealESRGAN_x2plus.pth",
            None,
            67.1,
            "Real-ESRGAN x2plus, RRDB (checksum not yet confirmed: supply it via upscaler.weights)",
            licence="BSD-3-Clause",
            params_m=16.7,
            input_size="any (even sides)",
            good_at="2x whole-frame upscaling (output.scale 2)",
        ),
        ModelSpec(
            "retinaface_resnet50",
            "detector",
            "retinaface",
            "detection_Resnet50_Final.pth",
            _FACEXLIB + "v0.1.0/detection_Resnet50_Final.pth",
            "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
            109.5,
            "RetinaFace ResNet-50 face detector (default)",
            licence="MIT",
            params_m=27.3,
            input_size="any (detector.size)",
            good_at="accurate boxes and 5 landmarks, small faces included",
        ),
        ModelSpec(
            "retinaface_mobile0.25",
            "detector",
            "retinaface",
            "detection_mobilenet0.25_Final.pth",
            _FACEXLIB + "v0.1.0/detection_mobilenet0.25_Final.pth",
            None,
            1.8,
            "RetinaFace MobileNet-0.25 (checksum not yet confirmed: supply it via detector.weights)",
            licence="MIT",
            params_m=0.4,
            input_size="any (detector.size)",
            good_at="a fast detector for large faces",
        ),
        ModelSpec(
            "parsenet",
            "parser",
            "parsenet",
            "parsing_parsenet.pth",
            _FACEXLIB + "v0.2.2/parsing_parsenet.pth",
            "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
            85.3,
            "ParseNet face parsing, for paste-back masks (restorer.parsing_mask)",
            licence="MIT",
            params_m=21.3,
            input_size="512x512 aligned face",
            good_at="hair, ears and face edges in the paste-back mask",
        ),
    ]
)
