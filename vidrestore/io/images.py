"""Still images (PNG, JPEG, WebP, ...): read as one frame, written back in the same format.

EXIF orientation is applied on reading (the picture is processed upright, and written
upright without the orientation tag, so every viewer shows it the same way); an alpha
channel is set aside and put back unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vidrestore.errors import InputError, OutputError
from vidrestore.records import Frame

log = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "StillImage", "is_image", "read_image", "write_image"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


@dataclass(frozen=True, eq=False)
class StillImage:
    """An image as a one-frame clip, plus what writing it back needs."""

    frame: Frame
    alpha: np.ndarray | None  # (H, W) uint8, or None
    icc_profile: bytes | None


def read_image(path: Path) -> StillImage:
    """Read ``path`` upright as RGB uint8 (alpha kept aside)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            upright = ImageOps.exif_transpose(im) or im
            icc = im.info.get("icc_profile")
            depth = _bits_per_sample(path, im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from exc
    alpha = None
    if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
        rgba = upright.convert("RGBA")
        alpha = np.asarray(rgba)[:, :, 3].copy()
        rgb = np.array(rgba.convert("RGB"))
    else:
        rgb = np.array(upright.convert("RGB"))  # writable: stages may hand it to torch
    if depth > 8:
        log.warning("%s has %d bits per channel; images are restored and written at 8 bits", path, depth)
    frame = Frame(index=0, pts=0, time_base=Fraction(1, 1), image=np.ascontiguousarray(rgb), duration=1)
    return StillImage(frame, alpha, icc)


def _bits_per_sample(path: Path, im: Image.Image) -> int:
    """The file's own bits per channel (Pillow hands 16-bit RGB PNGs over as 8-bit RGB)."""
    if im.format == "PNG":
        with path.open("rb") as fh:
            head = fh.read(25)
        return head[24] if len(head) == 25 else 8  # IHDR's bit depth byte
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258, (8,))
        return int(max(bits)) if isinstance(bits, tuple) else int(bits)
    return 16 if im.mode.startswith("I;16") else 8


def write_image(
    path: Path,
    image: np.ndarray,
    alpha: np.ndarray | None,
    quality: int,
    icc_profile: bytes | None = None,
    fmt_suffix: str | None = None,
) -> None:
    """Write RGB ``image`` (+ ``alpha``) to ``path`` in the format its suffix names."""
    suffix = (fmt_suffix or path.suffix).lower()
    fmt = _FORMATS.get(suffix)
    if fmt is None:
        raise OutputError(f"{path}: cannot write {suffix!r} images; use .png, .jpg or .webp")
    if alpha is not None and alpha.shape != image.shape[:2]:
        # the picture was resized (output.scale): scale the alpha with it
        alpha = np.asarray(Image.fromarray(alpha).resize(image.shape[1::-1], Image.Resampling.LANCZOS))
    pic = Image.fromarray(image, "RGB")
    if alpha is not None and fmt != "JPEG":
        pic.putalpha(Image.fromarray(alpha, "L"))
    options: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if icc_profile:
        options["icc_profile"] = icc_profile
    try:
        pic.save(path, format=fmt, **options)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the image ({exc})") from exc
