"""Images (PNG, JPEG, WebP, GIF, ...): read as one frame, written back in the same format; animated
GIF, APNG and WebP as all their frames.

EXIF orientation is applied on reading (the picture is processed upright, and written
upright without the orientation tag, so every viewer shows it the same way); an alpha
channel is set aside and put back unchanged. An animation's frames come as whole pictures
(each composed over the ones before, as a viewer shows it), timed in milliseconds, and go back
with their durations and loop count; a format that holds one picture is refused for it, before
any work.
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

__all__ = [
    "ANIMATED_SUFFIXES",
    "IMAGE_SUFFIXES",
    "Animation",
    "StillImage",
    "frame_count",
    "is_image",
    "read_animation",
    "read_image",
    "write_animation",
    "write_image",
]

IMAGE_SUFFIXES = frozenset({".png", ".apng", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
_FORMATS = {
    ".png": "PNG",
    ".apng": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".gif": "GIF",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
ANIMATED_SUFFIXES = frozenset({".gif", ".png", ".apng", ".webp"})  # the outputs that hold an animation
MAX_ANIMATION_BYTES = 4 << 30  # an animation is held whole (RGBA): larger ones are refused


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


@dataclass(frozen=True, eq=False)
class Animation:
    """An animated image's frames (whole pictures, in order, times in ms), their alphas, durations
    and loop count (0: for ever; None: played once, as a GIF without a loop extension is)."""

    frames: list[Frame]
    alphas: list[np.ndarray | None]
    durations_ms: list[int]
    loop: int | None
    icc_profile: bytes | None


def frame_count(path: Path) -> int:
    """How many frames the image ``path`` holds (1 for a still, or one that does not read)."""
    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1))
    except (UnidentifiedImageError, OSError, ValueError):
        return 1


def read_animation(path: Path) -> Animation | None:
    """Every frame of an animated image (None for a still), each composed as a viewer shows it."""
    try:
        with Image.open(path) as im:
            count = int(getattr(im, "n_frames", 1))
            if count < 2:
                return None
            w, h = im.size
            if count * w * h * 4 > MAX_ANIMATION_BYTES:
                raise InputError(
                    f"{path}: an animation of {count} frames at {w}x{h} is too large to restore as one; "
                    "convert it to a video first (ffmpeg -i IN.gif OUT.mp4)"
                )
            loop = im.info.get("loop")
            icc = im.info.get("icc_profile")
            frames, alphas, durations = [], [], []
            at = 0
            for k in range(count):
                im.seek(k)
                rgba = im.convert("RGBA")
                duration = int(im.info.get("duration", 100) or 0)
                pixels = np.asarray(rgba)
                alpha = pixels[:, :, 3].copy()
                alphas.append(None if alpha.min() == 255 else alpha)
                rgb = np.ascontiguousarray(pixels[:, :, :3])
                frames.append(Frame(index=k, pts=at, time_base=Fraction(1, 1000), image=rgb, duration=duration))
                durations.append(duration)
                at += max(duration, 1)
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from exc
    if all(a is None for a in alphas):
        alphas = [None] * count
    return Animation(frames, alphas, durations, None if loop is None else int(loop), icc)


def write_animation(
    path: Path, pictures: list[np.ndarray], anim: Animation, quality: int, fmt_suffix: str | None = None
) -> None:
    """Write an animation's restored ``pictures`` to ``path`` in its suffix's format, with ``anim``'s
    alphas, durations and loop count. Frames that come out identical to the one before are written
    once with their durations summed (as GIF and APNG writers do): the animation shows the same."""
    suffix = (fmt_suffix or path.suffix).lower()
    fmt = _FORMATS.get(suffix)
    if fmt is None or suffix not in ANIMATED_SUFFIXES:
        raise OutputError(f"{path}: a {suffix} file holds one picture; write the animation as .gif, .webp or .png")
    images = []
    for picture, alpha in zip(pictures, anim.alphas, strict=True):
        pic = Image.fromarray(picture, "RGB")
        if alpha is not None:
            pic.putalpha(Image.fromarray(alpha, "L"))
        images.append(pic)
    options: dict[str, object] = {"save_all": True, "append_images": images[1:], "duration": anim.durations_ms}
    if anim.loop is not None or fmt != "GIF":
        options["loop"] = anim.loop or 0
    if fmt == "GIF":
        options["disposal"] = 2  # whole frames: each replaces the one before
        options["optimize"] = False
    elif fmt == "PNG":
        options["disposal"], options["blend"] = 0, 0
    else:
        options["quality"] = quality
    if anim.icc_profile and fmt != "GIF":
        options["icc_profile"] = anim.icc_profile
    try:
        images[0].save(path, format=fmt, **options)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the animation ({exc})") from exc
