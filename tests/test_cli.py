from __future__ import annotations

import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliResult, assert_one_line_error, run_subprocess

from vidrestore import __version__
from vidrestore.models.registry import DEFAULT_REGISTRY

Cli = Callable[..., CliResult]


def test_version_and_help(cli: Cli) -> None:
    r = cli("--version")
    assert r.code == 0 and __version__ in r.out
    r = cli("--help")
    assert r.code == 0
    for word in ("restore", "inspect", "models", "Exit codes"):
        assert word in r.out
    r = cli("restore", "--help")
    assert r.code == 0 and "--set KEY=VALUE" in r.out and "--dry-run" in r.out


def test_usage_errors_are_one_line_exit_2(cli: Cli) -> None:
    r = cli("restore", "x.mp4")  # no -o
    assert r.code == 2
    assert_one_line_error(r.err)
    r = cli("frobnicate")
    assert r.code == 2
    assert_one_line_error(r.err)


def test_misspelt_key_exits_2_naming_it(cli: Cli) -> None:
    r = cli("restore", "x.mp4", "-o", "y.mp4", "--set", "restorer.blnd=0.5")
    assert r.code == 2
    assert_one_line_error(r.err)
    assert "restorer.blnd" in r.err


def test_bad_config_file_exits_2_naming_file_and_key(cli: Cli, tmp_path: Path) -> None:
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("output:\n  crf: 99\n")
    r = cli("restore", "x.mp4", "-o", "y.mp4", "--config", cfg)
    assert r.code == 2
    assert_one_line_error(r.err)
    assert "mine.yaml" in r.err and "output.crf" in r.err


def test_models_list_works_offline_and_shows_every_model_missing(cli: Cli) -> None:
    r = cli("models", "list")
    assert r.code == 0, r.err
    assert r.err == ""
    for name, spec in DEFAULT_REGISTRY.items():
        line = next(ln for ln in r.out.splitlines() if ln.startswith(name + " "))
        assert "missing" in line and spec.filename in line


def test_models_path(cli: Cli, tmp_path: Path) -> None:
    r = cli("models", "path", "gfpgan-1.4", "--weights-dir", tmp_path)
    assert r.code == 0 and r.out.strip() == str(tmp_path / "GFPGANv1.4.pth")
    r = cli("models", "path", "nope")
    assert r.code == 3
    assert_one_line_error(r.err)


def test_models_fetch_offline_exits_3_with_url_and_path(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    r = cli("models", "fetch", "gfpgan-1.4", "--weights-dir", tmp_path)
    assert r.code == 3
    assert_one_line_error(r.err)
    assert DEFAULT_REGISTRY["gfpgan-1.4"].url in r.err
    assert str(tmp_path / "GFPGANv1.4.pth") in r.err
    assert list(tmp_path.iterdir()) == []


def test_models_fetch_tries_every_model_and_names_each_one_missing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, a config's models are each tried: one line names every file to bring, with its URL
    and where to save it, not only the first."""
    from vidrestore.models.usage import models_for

    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    r = cli("models", "fetch", "--preset", "vhs", "--weights-dir", tmp_path)
    assert r.code == 3
    assert_one_line_error(r.err)
    from vidrestore.config import load_config
    from vidrestore.presets import preset_path

    names = models_for(load_config(preset_path("vhs"), []))
    assert len(names) >= 3
    assert f"{len(names)} of {len(names)} model(s)" in r.err
    for name in names:
        assert DEFAULT_REGISTRY[name].url in r.err
        assert str(tmp_path / DEFAULT_REGISTRY[name].filename) in r.err
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_at_run_time_exit_3(cli: Cli, face_clip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "o.mp4"
    r = cli("restore", face_clip.path, "-o", out, "--weights-dir", tmp_path / "empty")
    assert r.code == 3
    assert_one_line_error(r.err)
    assert "models fetch" in r.err and DEFAULT_REGISTRY["retinaface_resnet50"].url in r.err
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    p = run_subprocess("restore", tmp_path / "none.mp4", "-o", tmp_path / "o.mp4", "--detector", "none", "--debug")
    assert p.returncode == 4
    assert "Traceback" in p.stderr
    p = run_subprocess("restore", tmp_path / "none.mp4", "-o", tmp_path / "o.mp4", "--detector", "none")
    assert p.returncode == 4
    assert_one_line_error(p.stderr)


def test_device_errors_are_config_errors(cli: Cli, face_clip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    r = cli(
        "restore",
        face_clip.path,
        "-o",
        tmp_path / "o.mp4",
        "--device",
        "cuda",
        "--detector",
        "centerface",
        "--set",
        "restorer.model=none",
        "--set",
        "upscaler.model=none",
    )
    assert r.code == 2
    assert_one_line_error(r.err)
    assert "no CUDA GPU" in r.err
