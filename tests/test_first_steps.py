"""What a new user trips on first: one command that fetches what it needs, presets by name, small
conveniences of the command line."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import CliResult, assert_one_line_error

from testkit.clips import FaceClip
from testkit.weights import save_random_weights
from vidrestore.config import load_config
from vidrestore.errors import ModelError
from vidrestore.models.registry import DEFAULT_REGISTRY, ModelRegistry, ModelSpec
from vidrestore.models.store import ModelStore, sha256_file

Cli = Callable[..., CliResult]
ROOT = Path(__file__).resolve().parent.parent


def _no_network(*a: object, **k: object) -> None:
    raise AssertionError("nothing may be downloaded here")


def _unreachable(*a: object, **k: object) -> None:
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


# -- models fetched on first use -------------------------------------------------------------


def test_a_missing_model_is_fetched_and_verified_on_first_use(tmp_path: Path) -> None:
    payload = save_random_weights("srvgg_compact", tmp_path / "src" / "toy.pth", small=True, key="params")
    spec = ModelSpec("toy", "upscaler", "srvgg_compact", "toy.pth", payload.as_uri(), sha256_file(payload), 0.1, "")
    seen: list[int] = []
    store = ModelStore(
        tmp_path / "cache",
        ModelRegistry([spec]),
        fetch_missing=True,
        progress=lambda name: lambda done, total: seen.append(done),
    )
    path = store.resolve("toy")
    assert path == tmp_path / "cache" / "toy.pth" and path.read_bytes() == payload.read_bytes()
    assert seen[-1] == payload.stat().st_size  # the progress bar was fed
    bad = ModelSpec("bad", "upscaler", "srvgg_compact", "bad.pth", payload.as_uri(), "0" * 64, 0.1, "")
    store = ModelStore(tmp_path / "cache", ModelRegistry([bad]), fetch_missing=True)
    with pytest.raises(ModelError, match=r"failed verification.*vidrestore models fetch bad"):
        store.resolve("bad")
    assert not (tmp_path / "cache" / "bad.pth").exists()


def test_inspect_fetches_the_detector_it_needs_on_first_use(
    cli: Cli, face_clip: FaceClip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = save_random_weights("retinaface", tmp_path / "served" / "det.pth", small=True, key=None)
    real = DEFAULT_REGISTRY["retinaface_resnet50"]
    served = ModelSpec(real.name, real.role, real.arch, real.filename, payload.as_uri(), sha256_file(payload), 1, "")
    monkeypatch.setattr("vidrestore.cli.commands.DEFAULT_REGISTRY", ModelRegistry([served]))
    monkeypatch.delenv("VIDRESTORE_OFFLINE")
    cache = tmp_path / "cache"
    r = cli("inspect", face_clip.path, "--weights-dir", cache, "--set", "detector.threshold=1.0")
    assert r.code == 0, r.err
    assert (cache / real.filename).read_bytes() == payload.read_bytes()
    assert "20 frames" in r.out


def test_a_failed_download_on_first_use_exits_3_with_the_fetch_command(
    cli: Cli, face_clip: FaceClip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIDRESTORE_OFFLINE")
    monkeypatch.setattr("urllib.request.urlopen", _unreachable)
    out = tmp_path / "o.mp4"
    r = cli("restore", face_clip.path, "-o", out, "--weights-dir", tmp_path / "cache")
    assert r.code == 3
    assert_one_line_error(r.err)
    assert "vidrestore models fetch retinaface_resnet50" in r.err
    assert DEFAULT_REGISTRY["retinaface_resnet50"].url in r.err
    assert not out.exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_never_downloads_and_says_what_to_fetch(
    cli: Cli, face_clip: FaceClip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    if how == "flag":
        monkeypatch.delenv("VIDRESTORE_OFFLINE")
    extra = ["--offline"] if how == "flag" else []
    r = cli("restore", face_clip.path, "-o", tmp_path / "o.mp4", "--weights-dir", tmp_path / "c", *extra)
    assert r.code == 3
    assert_one_line_error(r.err)
    assert "vidrestore models fetch retinaface_resnet50 gfpgan-1.4 parsenet realesr-general-x4v3" in r.err


@pytest.mark.parametrize("source", [["--preset", "vhs"], ["--config", str(ROOT / "configs" / "vhs.yaml")]])
def test_models_fetch_takes_what_a_config_or_preset_uses(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: list[str]
) -> None:
    fetched: list[str] = []
    monkeypatch.setattr(ModelStore, "fetch", lambda self, name, progress=None, force=False: fetched.append(name))
    r = cli("models", "fetch", *source, "--weights-dir", tmp_path)
    assert r.code == 0, r.err
    assert "realesrgan-x4plus" in fetched and "realesr-general-x4v3" not in fetched  # the VHS preset's upscaler
    fetched.clear()
    assert cli("models", "fetch", "--weights-dir", tmp_path).code == 0
    assert "realesr-general-x4v3" in fetched


# -- presets by name, from an installed wheel too ----------------------------------------------


def test_presets_are_listed_and_used_by_name(cli: Cli, face_clip: FaceClip) -> None:
    r = cli("presets")
    assert r.code == 0
    names = [ln.split()[0] for ln in r.out.splitlines()[:-1]]
    assert names == ["quality", "screenshot", "tiny-faces", "vhs", "vhs-codeformer", "video-call"]
    assert all(len(ln.split(None, 1)) == 2 for ln in r.out.splitlines())  # a name and a line each
    r = cli("restore", face_clip.path, "--preset", "vhs", "--dry-run")
    assert r.code == 0, r.err
    assert "model: realesrgan-x4plus" in r.out
    r = cli("restore", face_clip.path, "--preset", "vhs", "--set", "upscaler.model=none", "--dry-run")
    assert "model: none" in r.out  # --set wins over the preset
    r = cli("restore", face_clip.path, "--preset", "vhsx", "--dry-run")
    assert r.code == 2 and "vhs" in r.err
    assert_one_line_error(r.err)


@pytest.mark.slow
def test_the_wheel_ships_the_presets(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("vidrestore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"vidrestore/configs/{p}.yaml" for p in ("vhs", "video-call", "default")} <= set(names)
    # every package of the code ships (a forgotten one in pyproject.toml would break a plain install) ...
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "vidrestore").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in packages} <= set(names)
    # ... and the test kit does not: it lives beside the tests
    assert not [n for n in names if n.startswith(("testkit/", "tests/", "bench/", "clips/"))]
    assert not [n for n in names if n.endswith(("/testing.py", "/corpus.py", "/groundtruth.py", "/healthy.py"))]
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = subprocess.run(
        [sys.executable, "-c", "import vidrestore, sys; from vidrestore.cli import main; "
         "print(vidrestore.__file__, file=sys.stderr); sys.exit(main(['presets']))"],
        cwd=elsewhere,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert str(site) in listed.stderr  # the installed copy, not the checkout
    assert "vhs" in listed.stdout


# -- small things ----------------------------------------------------------------------------


def test_dry_run_needs_no_output_but_a_real_run_does(cli: Cli, face_clip: FaceClip) -> None:
    assert cli("restore", face_clip.path, "--dry-run").code == 0
    r = cli("restore", face_clip.path, "--detector", "none")
    assert r.code == 2 and "-o/--output" in r.err
    assert_one_line_error(r.err)


def test_inspect_alone_prints_a_short_table(cli: Cli, face_clip: FaceClip) -> None:
    r = cli("inspect", face_clip.path, "--detector", "centerface")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "20 frames, 20 with faces, 1 track(s)"
    assert lines[1].split()[:4] == ["track", "frames", "seen", "filled"]
    track = lines[2].split()
    assert track[:4] == ["0", "0-19", "20", "0"] and 40 < float(track[6]) < 200  # median face size, px


def test_numbers_in_exponent_form_are_numbers() -> None:
    assert load_config(None, ["restorer.blend=1e-1"]).restorer.blend == pytest.approx(0.1)
    assert load_config(None, ["smoothing.motion_threshold=5E-2"]).smoothing.motion_threshold == pytest.approx(0.05)


def test_ctrl_c_in_a_multi_file_run_names_the_finished_outputs(
    cli: Cli, face_clip: FaceClip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vidrestore.run.tasks as pipeline  # where a whole-file task calls it

    real = pipeline.restore_file
    calls = {"n": 0}

    def interrupted_on_the_second(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "restore_file", interrupted_on_the_second)
    second = tmp_path / "second.mp4"
    second.write_bytes(face_clip.path.read_bytes())
    out = tmp_path / "out"
    r = cli("restore", face_clip.path, second, "-o", f"{out}/", "--detector", "none")
    assert r.code == 130
    assert "1 output(s) were finished" in r.err and str(out / face_clip.path.name) in r.err
    assert sorted(p.name for p in out.iterdir()) == [face_clip.path.name]


def test_a_16_bit_image_gets_a_warning_that_it_comes_out_8_bit(cli: Cli, tmp_path: Path) -> None:
    import cv2

    src = tmp_path / "scan.png"
    cv2.imwrite(str(src), (np.random.default_rng(0).random((32, 48, 3)) * 65535).astype(np.uint16))
    r = cli("restore", src, "-o", tmp_path / "out.png", "--detector", "none")
    assert r.code == 0, r.err
    assert "16 bits per channel" in r.err and "8 bits" in r.err
