"""The benchmark scripts run (tiny sizes), so they cannot rot between GPU sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_script_smoke_mode(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {r["batch"] for r in data["restorer"]} == {1, 2}
    for row in data["restorer"]:
        assert row["faces_per_s"] > 0 and row["finite"] and row["gflop_per_face"] > 0
    codecs = {r["codec"]: r for r in data["end_to_end"]}
    assert set(codecs) == {"libx264", "h264_nvenc"}
    assert all(r["frames"] == 6 and r["fps"] > 0 for r in codecs.values())


def test_full_size_gfpgan_costs_what_the_design_says() -> None:
    import torch

    from bench.gpu import flops_per_face
    from vidrestore.testing import _model

    gflop = flops_per_face(_model("gfpgan_v1_clean", small=False).eval(), torch.device("cpu")) / 1e9
    assert 380 < gflop < 410  # DESIGN.md: ~396 GFLOP per 512x512 face
