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

Arch = Literal["gfpgan_v1_clean", "rrdbnet", "srvgg_compact", "retinaface", "parsenet"]
Role = Literal["restorer", "upscaler", "detector", "parser"]


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model file.

    ``size_mb`` is the approximate size of the release file (for the listing and the
    README); it is not used for verification, ``sha256`` is.
    """

    name: str
    role: Role
    arch: Arch
    filename: str
    url: str
    sha256: str | None
    size_mb: float
    description: str

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
        ),
    ]
)
