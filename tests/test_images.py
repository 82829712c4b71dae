from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import CliResult, Weights
from media import probe
from PIL import Image

from testkit.clips import astronaut, write_clip
from vidrestore.io.images import read_image

Cli = Callable[..., CliResult]


def test_png_with_alpha_round_trips_exactly(cli: Cli, tmp_path: Path) -> None:
    rgb = astronaut()[:200, :300]
    alpha = np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1))
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(src)
    r = cli("restore", src, "-o", dst, "--detector", "none")
    assert r.code == 0, r.err
    out = np.asarray(Image.open(dst))
    assert out.shape == (200, 300, 4)
    assert np.array_equal(out[:, :, :3], rgb)  # no face: bit-identical
    assert np.array_equal(out[:, :, 3], alpha)  # alpha kept


def test_jpeg_exif_orientation_is_respected(cli: Cli, tmp_path: Path) -> None:
    upright = astronaut()[:, :400]  # 512 tall, 400 wide
    stored = np.rot90(upright, k=1)  # what a phone stores; EXIF 6 says: rotate 90 clockwise to view
    src, dst = tmp_path / "photo.jpg", tmp_path / "out.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(src, quality=95, exif=exif)
    still = read_image(src)
    assert still.frame.image.shape == upright.shape
    assert np.abs(still.frame.image.astype(int) - upright).mean() < 4
    r = cli("restore", src, "-o", dst, "--detector", "none")
    assert r.code == 0, r.err
    with Image.open(dst) as out:
        assert out.format == "JPEG"
        assert out.size == (400, 512)
        assert out.getexif().get(0x0112, 1) == 1


def test_webp_and_a_folder_of_images_and_videos(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(astronaut()[:128, :128]).save(folder / "a.webp", quality=90)
    Image.fromarray(astronaut()[128:256, :128]).save(folder / "sub" / "b.png")
    write_clip(folder / "clip.mp4", [astronaut()[:64, :96]] * 5)
    (folder / "notes.txt").write_text("not media")
    out = tmp_path / "out"
    r = cli("restore", folder, "-o", out, "--detector", "none")
    assert r.code == 0, r.err
    assert Image.open(out / "shots" / "a.webp").format == "WEBP"
    assert np.array_equal(np.asarray(Image.open(out / "shots" / "sub" / "b.png")), astronaut()[128:256, :128])
    assert probe(out / "shots" / "clip.mp4").frames == 5
    assert not (out / "shots" / "notes.txt").exists()


def test_not_an_image_exits_4(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "fake.png"
    src.write_bytes(b"\x89PNG not really")
    r = cli("restore", src, "-o", tmp_path / "o.png", "--detector", "none")
    assert r.code == 4
    assert not (tmp_path / "o.png").exists()


# -- animated images ------------------------------------------------------------------------------

_DURATIONS = [40, 80, 120, 60, 100, 40, 200, 80]


def _animation(path: Path, fmt: str) -> list[np.ndarray]:
    """An 8-frame animation of the astronaut's face panning right, with uneven durations, looping
    twice; returns its pictures."""
    face = astronaut()[20:260, 80:400]
    pictures = [np.ascontiguousarray(face[:, 8 * i : 8 * i + 256]) for i in range(len(_DURATIONS))]
    images = [Image.fromarray(p) for p in pictures]
    options: dict[str, object] = {"save_all": True, "append_images": images[1:], "duration": _DURATIONS, "loop": 2}
    if fmt == "WEBP":
        options["lossless"] = True
    images[0].save(path, format=fmt, **options)
    return pictures


def _frames(path: Path) -> tuple[list[np.ndarray], list[int], int | None]:
    with Image.open(path) as im:
        pictures, durations = [], []
        for k in range(im.n_frames):
            im.seek(k)
            pictures.append(np.asarray(im.convert("RGB")))
            durations.append(int(im.info["duration"]))
        return pictures, durations, im.info.get("loop")


@pytest.mark.parametrize(("suffix", "fmt"), [(".gif", "GIF"), (".png", "PNG"), (".webp", "WEBP")])
def test_an_animation_keeps_every_frame_its_durations_and_loop(
    cli: Cli, weights: Weights, tmp_path: Path, suffix: str, fmt: str
) -> None:
    src, dst = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    pictures = _animation(src, fmt)
    r = cli("restore", src, "-o", dst, "--detector", "centerface", "--set", "detector.threshold=0.5", *weights.sets())
    assert r.code == 0, r.err
    out, durations, loop = _frames(dst)
    assert len(out) == len(pictures) and durations == _DURATIONS and loop == 2
    assert f"faces: {len(pictures)} restored" in r.err  # every frame's face, not the first one's
    for a, b in zip(pictures, out, strict=True):
        assert a.shape == b.shape and not np.array_equal(a, b)  # restored (random weights change the face)


def test_an_animation_is_refused_before_any_work_where_its_output_holds_one_picture(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.webp", tmp_path / "out.jpg"
    _animation(src, "WEBP")
    r = cli("restore", src, "-o", dst, "--detector", "none")
    assert r.code == 2 and not dst.exists(), r.err
    (line,) = r.err.strip().splitlines()
    assert ".jpg" in line and ".gif" in line and ".webp" in line
