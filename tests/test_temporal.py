"""Temporal fusion against texture flicker, with known ground truth (``testkit.groundtruth``).

A real face (``skimage.data.astronaut()``) moves along a known path: slowly first, then fast with
its mouth opening and closing (a local warp). It goes through a "restorer" that returns the clean
face plus independent invented texture on every call (noise shaped like detail: GAN
hallucination), so the clean face is known, and so is the motion between frames.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import CliResult, Weights
from media import probe

from testkit.clips import FaceClip, astronaut
from testkit.groundtruth import GroundTruthClip, ground_truth_clip, restore_clip
from testkit.weights import save_random_weights
from vidrestore.plot import SERIES
from vidrestore.stages.fuse import TemporalFusion
from vidrestore.stats import RunStats

Cli = Callable[..., CliResult]


@pytest.fixture(scope="module")
def runs() -> dict[str, object]:
    clip = ground_truth_clip()
    fusion = TemporalFusion(strength=0.6)
    stats = RunStats()
    return {
        "clip": clip,
        "per_frame": restore_clip(clip, None),
        "fused": restore_clip(clip, fusion, stats),
        "fusion": fusion,
        "stats": stats,
    }


def test_fusion_cuts_flicker_on_still_parts_and_not_worse_on_fast_ones(runs: dict[str, object]) -> None:
    clip: GroundTruthClip = runs["clip"]  # type: ignore[assignment]
    per: list[np.ndarray] = runs["per_frame"]  # type: ignore[assignment]
    fused: list[np.ndarray] = runs["fused"]  # type: ignore[assignment]
    f_per = np.mean([clip.flicker(per, i) for i in clip.slow])
    f_fused = np.mean([clip.flicker(fused, i) for i in clip.slow])
    assert f_fused <= 0.5 * f_per, (f_fused, f_per)
    g_per = np.mean([clip.flicker(per, i) for i in clip.fast])
    g_fused = np.mean([clip.flicker(fused, i) for i in clip.fast])
    assert g_fused <= g_per * 1.02, (g_fused, g_per)
    assert runs["fusion"].fused > 0  # type: ignore[attr-defined]


def test_fusion_is_closer_to_the_clean_face_and_does_not_ghost(runs: dict[str, object]) -> None:
    clip: GroundTruthClip = runs["clip"]  # type: ignore[assignment]
    per: list[np.ndarray] = runs["per_frame"]  # type: ignore[assignment]
    fused: list[np.ndarray] = runs["fused"]  # type: ignore[assignment]
    slow, fast = clip.slow, clip.fast
    assert np.mean([clip.error(fused, i) for i in slow]) < np.mean([clip.error(per, i) for i in slow])
    assert np.mean([clip.error(fused, i) for i in fast]) <= 1.05 * np.mean([clip.error(per, i) for i in fast])
    # around the moving mouth the fused face follows the clean one (no trail of the previous mouth)
    mouth = [clip.error(fused, i, mouth=True) for i in fast]
    mouth_per = [clip.error(per, i, mouth=True) for i in fast]
    assert np.mean(mouth) <= 1.05 * np.mean(mouth_per), (np.mean(mouth), np.mean(mouth_per))
    assert max(mouth) <= 6.0, mouth  # grey levels: the invented texture's size, not a ghost's


def test_a_track_starts_afresh_after_a_gap_and_at_a_filled_in_face() -> None:
    fusion = TemporalFusion(strength=0.6)
    a = torch.rand(3, 512, 512)
    b = (a + 0.2).clamp(0, 1)
    fusion.fuse(0, 10, a, a)
    assert torch.equal(fusion.fuse(0, 12, a, b), b)  # frame 11 missing: no history used
    out = fusion.fuse(0, 13, a, a)
    assert not torch.equal(out, a)  # consecutive and still: blended with the history
    fusion.reset(0)
    assert torch.equal(fusion.fuse(0, 14, a, b), b)
    fusion.forget_before(20)
    assert torch.equal(fusion.fuse(0, 20, a, b), b)


def test_with_the_real_gfpgan_the_reported_flicker_drops_and_nothing_else_moves(
    cli: Cli, face_clip: FaceClip, weights: Weights, tmp_path: Path
) -> None:
    """The GFPGAN v1.4 architecture (random weights at full scale, whose output follows its input:
    the suite's tamed file gives a nearly constant face) on a moving face: fusion on against off."""
    gfpgan = save_random_weights("gfpgan_v1_clean", tmp_path / "gfpgan.pth", small=True)
    reports = {}
    for method in ("none", "flow-blend"):
        out, report = tmp_path / f"{method}.mp4", tmp_path / f"{method}.json"
        r = cli(
            "restore", face_clip.path, "-o", out, "--detector", "centerface", *weights.sets(),
            "--set", f"restorer.weights={gfpgan}", "--set", f"temporal.method={method}", "--report", report,
        )  # fmt: skip
        assert r.code == 0, r.err
        assert "flicker:" in r.err
        reports[method] = (json.loads(report.read_text()), probe(out))
    (off, p_off), (on, p_on) = reports["none"], reports["flow-blend"]
    t_off, t_on = off["temporal"], on["temporal"]
    assert t_off["flicker_output"] == t_off["flicker_per_frame"] > 0.5  # off: measured, not changed
    assert t_on["flicker_output"] <= 0.7 * t_on["flicker_per_frame"], t_on
    assert t_on["face_pairs"] >= 15
    # landmarks, frame count and timestamps are the fusion's to leave alone
    assert t_on["landmark_jitter_raw_px"] == t_off["landmark_jitter_raw_px"]
    assert t_on["landmark_jitter_smoothed_px"] == t_off["landmark_jitter_smoothed_px"]
    assert t_on["landmark_jitter_smoothed_px"] < t_on["landmark_jitter_raw_px"]
    assert p_on.frames == p_off.frames == 20 and p_on.pts == p_off.pts
    assert on["counts"]["faces_restored"] == off["counts"]["faces_restored"] == 20
    # per track and per frame, filed under the input
    (figures,) = t_on["files"].values()
    (track,) = figures["tracks"]
    assert track["face_pairs"] == t_on["face_pairs"] and track["flicker_output"] == t_on["flicker_output"]
    assert track["landmark_jitter_smoothed_px"] == t_on["landmark_jitter_smoothed_px"]
    assert figures["frame_columns"] == ["frame", "input", "per_frame", "output"]
    assert [row[0] for row in figures["frames"]] == list(range(1, 20))
    rows = figures["frames"]  # per frame the figures agree with the totals: fused mostly below per-frame
    assert sum(r[3] for r in rows) <= 0.7 * sum(r[2] for r in rows), rows
    assert sum(r[3] < r[2] for r in rows) >= 0.8 * len(rows), rows
    # ... which compare --plot draws
    plot = tmp_path / "flicker.png"
    restored = tmp_path / "flow-blend.mp4"
    r = cli("compare", face_clip.path, restored, "--plot", plot, "--report", tmp_path / "flow-blend.json")
    assert r.code == 0, r.err
    assert "flicker of 19 frame(s)" in r.err
    image = cv2.imread(str(plot))[:, :, ::-1]
    assert image.shape == (420, 1200, 3)
    for _, colour in SERIES:  # each line is drawn
        assert (np.abs(image.astype(int) - colour).sum(axis=2) < 30).sum() > 200, colour


def test_compare_puts_the_two_side_by_side_with_the_original_sound(
    cli: Cli, face_clip: FaceClip, tmp_path: Path
) -> None:
    restored = tmp_path / "restored.mp4"
    assert cli("restore", face_clip.path, "-o", restored, "--detector", "none").code == 0
    side, split = tmp_path / "side.mp4", tmp_path / "split.mp4"
    r = cli("compare", face_clip.path, restored, "-o", side)
    assert r.code == 0, r.err
    r = cli("compare", face_clip.path, restored, "-o", split, "--split")
    assert r.code == 0, r.err
    src, p_side, p_split = probe(face_clip.path), probe(side), probe(split)
    assert (p_side.width, p_side.height) == (2 * src.width, src.height)
    assert (p_split.width, p_split.height) == (src.width, src.height)
    for p in (p_side, p_split):
        assert p.frames == src.frames and p.pts == src.pts
        assert list(p.audio.values()) == list(src.audio.values())  # the original's audio, byte for byte
    # an image pair gives an image; a video against an image is refused (exit 4, one line)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(a), astronaut()[:, :, ::-1])
    cv2.imwrite(str(b), astronaut()[::-1, :, ::-1].copy())
    assert cli("compare", a, b, "-o", tmp_path / "ab.png").code == 0
    assert cv2.imread(str(tmp_path / "ab.png")).shape == (512, 1024, 3)
    r = cli("compare", face_clip.path, b, "-o", tmp_path / "x.mp4")
    assert r.code == 4 and "image" in r.err
    assert not (tmp_path / "x.mp4").exists()


def test_measuring_alone_samples_pairs_and_changes_nothing() -> None:
    meter = TemporalFusion(strength=0.0, measure_every=4)
    a = torch.rand(3, 512, 512)
    for i in range(9):
        restored = (a + 0.01 * i).clamp(0, 1)
        assert meter.fuse(0, i, a, restored) is restored
    assert meter.flicker.pairs == 2  # frames (3, 4) and (7, 8): the flow runs on one pair in four
    assert meter.fused == 0


def test_the_report_has_figures_per_track_and_frame(runs: dict[str, object]) -> None:
    """The stage's own figures (flow measured on the input) agree with the known truth's direction:
    the input holds still, the per-frame restoration flickers, the output much less."""
    stats: RunStats = runs["stats"]  # type: ignore[assignment]
    clip: GroundTruthClip = runs["clip"]  # type: ignore[assignment]
    t = stats.temporal()
    assert t["flicker_input"] < t["flicker_output"] < 0.6 * t["flicker_per_frame"], t
    figures = stats.temporal_files[""].to_dict()
    (track,) = figures["tracks"]
    assert track["track"] == 0 and track["face_pairs"] == t["face_pairs"] == len(clip.clean) - 1
    frames = {row[0]: row[1:] for row in figures["frames"]}
    slow = [frames[i] for i in clip.slow if i in frames]
    assert len(slow) >= len(clip.slow) - 1
    assert all(out < 0.6 * per for _, per, out in slow[1:]), slow


def test_long_runs_are_averaged_into_at_most_the_points_asked_for() -> None:
    from vidrestore.stats import TemporalFigures

    f = TemporalFigures()
    for i in range(1, 1001):
        f.add_flicker(7, i, (1.0, 4.0 if i % 2 else 2.0, 1.0))
    out = f.to_dict(max_points=100)
    assert len(out["frames"]) == 100
    assert out["frames"][0] == [1, 1.0, 3.0, 1.0]  # ten frames averaged, filed under the first
    assert out["tracks"] == [
        {"track": 7, "face_pairs": 1000, "flicker_input": 1.0, "flicker_per_frame": 3.0, "flicker_output": 1.0}
    ]


def test_compare_plot_needs_a_report_with_figures(cli: Cli, face_clip: FaceClip, tmp_path: Path) -> None:
    plot = tmp_path / "p.png"
    r = cli("compare", face_clip.path, face_clip.path, "--plot", plot)
    assert r.code == 2 and "--report" in r.err and len(r.err.strip().splitlines()) == 1
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"temporal": {"method": "none", "files": {}}}))
    r = cli("compare", face_clip.path, face_clip.path, "--plot", plot, "--report", report)
    assert r.code == 4 and "no flicker figures" in r.err and "Traceback" not in r.err
    report.write_text("{not json")
    r = cli("compare", face_clip.path, face_clip.path, "--plot", plot, "--report", report)
    assert r.code == 4 and "not a vidrestore --report" in r.err
    r = cli("compare", face_clip.path, face_clip.path)
    assert r.code == 2
    assert not plot.exists()


def test_the_flow_threads_give_the_serial_output_bit_for_bit(runs: dict[str, object]) -> None:
    """The flows run on a pool, started as soon as the faces are aligned; the result is the serial one."""
    clip: GroundTruthClip = runs["clip"]  # type: ignore[assignment]
    serial_stats, pooled_stats = RunStats(), RunStats()
    serial = restore_clip(clip, TemporalFusion(strength=0.6, threads=0), serial_stats)
    pooled_fusion = TemporalFusion(strength=0.6, threads=3)
    pooled = restore_clip(clip, pooled_fusion, pooled_stats)
    assert pooled_fusion._pool is not None  # the pool did the work
    pooled_fusion.close()
    assert len(serial) == len(pooled) == len(clip.input)
    for a, b in zip(serial, pooled, strict=True):
        assert np.array_equal(a, b)
    assert serial_stats.flicker == pooled_stats.flicker and serial_stats.flicker["pairs"] > 0
