"""Segments: a long video cut at keyframes, restored piece by piece (resumable, in parallel, on Ray)
and joined, gives what a whole-file run gives.

The clip: 75 frames (3 s) of a moving real face with audio, a keyframe every 10 frames, cut into
segments of about 0.8 s (4 segments). Encoded losslessly (``--crf 0``), so the restored pixels
themselves are compared, not the encoder's noise.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import CliResult, Weights, assert_one_line_error
from media import probe

from testkit.clips import FaceClip, make_face_clip, write_clip
from vidrestore.config import load_config
from vidrestore.run.segments.manifest import MANIFEST, work_folder
from vidrestore.run.segments.plan import plan_segments

Cli = Callable[..., CliResult]

SECONDS = "0.8"


def _motion(i: int) -> tuple[float, float, float]:
    return (20 * math.sin(i / 9), 3.0 * math.sin(i / 4), 0.0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> FaceClip:
    return make_face_clip(tmp_path_factory.mktemp("long") / "long.mp4", frames=75, trajectory=_motion, gop=10)


def _args(weights: Weights, *extra: str) -> list[str]:
    return [
        "--detector", "centerface", *weights.sets(), "--set", "upscaler.below=0", "--crf", "0",
        "--segment-seconds", SECONDS, *extra,
    ]  # fmt: skip


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(c.streams.video[0])]


@pytest.fixture(scope="module")
def whole(clip: FaceClip, weights: Weights, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same clip as one piece."""
    from vidrestore.cli import main

    out = tmp_path_factory.mktemp("whole") / "whole.mp4"
    args = ["restore", str(clip.path), "-o", str(out), *_args(weights), "--segment-seconds", "0", "-q"]
    assert main(args) == 0
    return out


def _same_as_whole(out: Path, whole: Path, clip: FaceClip) -> None:
    """Frames, timestamps and audio of ``out`` are the whole-file run's; so are the restored pixels."""
    p, w, src = probe(out), probe(whole), probe(clip.path)
    assert p.frames == w.frames == src.frames == 75
    assert p.pts == w.pts == src.pts
    assert p.audio == w.audio == src.audio  # every audio packet, byte for byte
    a, b, original = _frames(out), _frames(whole), _frames(clip.path)
    worst = max(int(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
    assert worst <= 1, worst  # lossless: the restored pixels are the whole-file run's
    # every frame, the seams included, carries the restoration (it differs from the input as much)
    changed = [float(np.abs(x - o).mean()) for x, o in zip(a, original, strict=True)]
    assert min(changed) > 0.5 * float(np.median(changed)), changed


def _report(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())  # type: ignore[no-any-return]


# -- the plan ----------------------------------------------------------------------------


def test_cuts_fall_on_keyframes_with_warm_up_before_each(clip: FaceClip) -> None:
    plan = plan_segments(clip.path, float(SECONDS), warm=24)
    assert plan.whole is None and plan.frames == 75
    with av.open(str(clip.path)) as c:
        keys = {p.pts for p in c.demux(c.streams.video[0]) if p.size and p.is_keyframe}
    segs = plan.segments
    assert [s.first_frame for s in segs] == [0, 20, 40, 60]  # 0.8 s = 20 frames, on the every-10 keyframes
    assert sum(s.frames for s in segs) == 75
    assert all(s.start in keys for s in segs)
    assert [s.end for s in segs[:-1]] == [s.start for s in segs[1:]] and segs[-1].end is None
    for s in segs[1:]:  # decoding starts at a keyframe at least 24 frames (or the file's start) earlier
        assert s.seek in keys and s.seek <= plan.times[max(0, s.first_frame - 24)]


def test_short_zero_and_untrustworthy_inputs_run_whole(clip: FaceClip, tmp_path: Path) -> None:
    assert plan_segments(clip.path, 0, 24).whole == "segment_seconds is 0"
    assert plan_segments(clip.path, 2.0, 24).whole is not None  # under twice 2 s
    shuffled = tmp_path / "dup.mp4"  # two frames at one time: the plan cannot number frames by time
    make_face_clip(shuffled, frames=50, gop=10)
    with av.open(str(shuffled)) as c, av.open(str(tmp_path / "dup.mkv"), "w") as o:
        v = o.add_stream_from_template(c.streams.video[0])
        for k, p in enumerate(q for q in c.demux(c.streams.video[0]) if q.size):
            p.stream = v
            if k == 30:
                p.pts = p.pts - 512
            o.mux(p)
    assert plan_segments(tmp_path / "dup.mkv", 0.4, 24).whole is not None


# -- segmented runs ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_segmented_run_equals_the_whole_file_run(
    cli: Cli, clip: FaceClip, weights: Weights, whole: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "seg.mp4", tmp_path / "seg.json"
    r = cli("restore", clip.path, "-o", out, *_args(weights), "--report", report)
    assert r.code == 0, r.err
    assert "segments: 4 (0 kept from an earlier run, 0 retried) on 1 worker(s)" in r.err
    _same_as_whole(out, whole, clip)
    segs = _report(report)["segments"]
    assert [s["first_frame"] for s in segs] == [0, 20, 40, 60] and sum(s["frames"] for s in segs) == 75
    assert all(s["seconds"] > 0 and s["worker"] and not s["resumed"] for s in segs)
    assert not work_folder(out).exists()  # removed on success
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.json", "seg.mp4"]


@pytest.mark.slow
def test_two_worker_threads_give_the_same_output(
    cli: Cli, clip: FaceClip, weights: Weights, whole: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "w2.mp4", tmp_path / "w2.json"
    threads = ("--workers", "2", "--set", "pipeline.worker_kind=threads")
    r = cli("restore", clip.path, "-o", out, *_args(weights, *threads), "--report", report)
    assert r.code == 0, r.err
    _same_as_whole(out, whole, clip)
    assert len({s["worker"] for s in _report(report)["segments"]}) == 2


def test_two_worker_processes_give_what_one_worker_gives(cli: Cli, weights: Weights, tmp_path: Path) -> None:
    """``workers: 2`` (spawned processes, the default kind) against ``workers: 1``, both in segments:
    the same frames, times, audio bytes and pixels, bit for bit."""
    short = make_face_clip(tmp_path / "short.mp4", frames=20, size=(192, 144), trajectory=_motion, gop=10)
    one, two, report = tmp_path / "one.mp4", tmp_path / "two.mp4", tmp_path / "two.json"
    cut = ("--segment-seconds", "0.4")  # two segments of 10 frames: one for each worker
    assert cli("restore", short.path, "-o", one, *_args(weights, *cut)).code == 0
    r = cli("restore", short.path, "-o", two, *_args(weights, *cut, "--workers", "2"), "--report", report)
    assert r.code == 0, r.err
    a, b = probe(one), probe(two)
    assert a.frames == b.frames == 20 and a.pts == b.pts and a.audio == b.audio and a.audio
    for x, y in zip(_frames(one), _frames(two), strict=True):
        assert np.array_equal(x, y)
    pids = {s["worker"].split(":")[1] for s in _report(report)["segments"]}
    assert len(pids) == 2 and str(os.getpid()) not in pids  # two processes, neither this one


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_redoes_only_the_unfinished_segments(
    cli: Cli, clip: FaceClip, weights: Weights, whole: Path, tmp_path: Path
) -> None:
    out = tmp_path / "resumed.mp4"
    folder = work_folder(out)
    args = ["restore", str(clip.path), "-o", str(out), *_args(weights), "--set", "pipeline.encode_threads=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidrestore", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    finished: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:  # bounded: until one segment is done
            if (folder / MANIFEST).is_file():
                entries = json.loads((folder / MANIFEST).read_text())["segments"]
                finished = [e["index"] for e in entries if e["state"] == "done"]
                if finished and any(p.name.startswith(".seg-") for p in folder.iterdir()):
                    break  # one done, the next one half-written
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert finished and len(finished) < 4, finished
    assert not out.exists() and folder.is_dir()
    report = tmp_path / "resumed.json"
    r = cli(*args, "--resume", "--report", report)
    assert r.code == 0, r.err
    assert f"{len(finished)} of 4 segments are kept from an earlier run" in r.err
    _same_as_whole(out, whole, clip)
    segs = _report(report)["segments"]
    assert [s["segment"] for s in segs if s["resumed"]] == finished
    redone = [s for s in segs if not s["resumed"]]
    assert len(redone) == 4 - len(finished)
    assert not folder.exists()


def test_a_changed_config_with_resume_is_refused_and_without_it_starts_afresh(
    cli: Cli, clip: FaceClip, weights: Weights, tmp_path: Path
) -> None:
    from vidrestore.models.registry import DEFAULT_REGISTRY
    from vidrestore.models.store import ModelStore
    from vidrestore.run.tasks import plan_work

    out = tmp_path / "changed.mp4"
    sets = [a for a in _args(weights) if "=" in a]  # the --set values
    earlier = ["detector.model=centerface", "output.crf=0", f"pipeline.segment_seconds={SECONDS}"]
    config = load_config(None, [*sets, *earlier, "restorer.blend=0.5"])
    store = ModelStore(tmp_path / "cache", DEFAULT_REGISTRY)
    plan_work([(clip.path, out)], config, store, "auto")  # an earlier run's work folder, at blend 0.5
    assert (work_folder(out) / MANIFEST).is_file()
    r = cli("restore", clip.path, "-o", out, *_args(weights), "--resume", "--restorer", "none")
    assert r.code == 2, r.err
    assert "cannot resume: the configuration changed" in r.err and "Traceback" not in r.err
    assert not out.exists() and (work_folder(out) / MANIFEST).is_file()  # nothing lost either
    r = cli("restore", clip.path, "-o", out, *_args(weights), "--restorer", "none")
    assert r.code == 0, r.err
    assert "different configuration: starting afresh" in r.err
    assert probe(out).frames == 75 and not work_folder(out).exists()


# -- Ray -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray with two logical GPUs (there is no real one): two one-GPU actors."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_same_output_as_the_local_run(
    cli: Cli, clip: FaceClip, weights: Weights, whole: Path, tmp_path: Path, ray_cluster: None
) -> None:
    out, report = tmp_path / "ray.mp4", tmp_path / "ray.json"
    r = cli("restore", clip.path, "-o", out, *_args(weights), "--ray", "--report", report)
    assert r.code == 0, r.err
    _same_as_whole(out, whole, clip)
    segs = _report(report)["segments"]
    assert len({s["worker"] for s in segs}) == 2  # two actors, one logical GPU each
    assert all(s["attempts"] == 1 for s in segs)


@pytest.mark.slow
def test_a_ray_worker_killed_mid_segment_is_retried(
    cli: Cli, clip: FaceClip, weights: Weights, whole: Path, tmp_path: Path, ray_cluster: None
) -> None:
    out, report = tmp_path / "killed.mp4", tmp_path / "killed.json"
    folder = work_folder(out)
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_writer() -> None:  # bounded: until one actor is caught writing a segment, or stopped
        deadline = time.monotonic() + 240
        while not stop.is_set() and not killed and time.monotonic() < deadline:
            parts = list(folder.glob(".seg-*.part-*")) if folder.is_dir() else []
            if parts:
                pid = int(parts[0].stem.rsplit("-", 2)[1])  # .seg-N.part-HOST-PID-TAG: an AtomicTarget's name
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_one_writer)
    watcher.start()
    try:
        r = cli("restore", clip.path, "-o", out, *_args(weights), "--ray", "--report", report)
    finally:
        stop.set()
        watcher.join()
    assert killed
    assert r.code == 0, r.err
    assert "trying again" in r.err
    _same_as_whole(out, whole, clip)
    segs = _report(report)["segments"]
    assert sum(s["attempts"] - 1 for s in segs) == 1
    assert not folder.exists()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("phone.mp4", {"rotation": 90, "bt709": True}),
        ("two-tracks.mkv", {"audio_tracks": 2, "sample_rate": (48000, 24000)}),
        ("web.webm", {"codec": "libvpx-vp9"}),
        ("vfr.mkv", {"pts": [sum(1 + k % 3 for k in range(i)) for i in range(75)], "time_base": Fraction(1, 50)}),
    ],
)
def test_the_join_keeps_what_a_whole_file_run_keeps(
    cli: Cli, tmp_path: Path, name: str, options: dict[str, object]
) -> None:
    """Rotation and colour tags, several audio tracks, VP9 in WebM, variable frame rate: the
    segments' join keeps what the whole file holds (faces aside: no detector, so the pictures
    pass through and only the cutting and joining are tested)."""
    src, out = tmp_path / name, tmp_path / f"out-{name}"
    rng = np.random.default_rng(0)
    images = [np.full((96, 128, 3), 40 + k, np.uint8) + rng.integers(0, 20, (96, 128, 3), np.uint8) for k in range(75)]
    write_clip(src, images, gop=10, **options)  # type: ignore[arg-type]
    report, whole = tmp_path / "r.json", tmp_path / f"whole-{name}"
    r = cli("restore", src, "-o", out, "--detector", "none", "--segment-seconds", "0.5", "--report", report)
    assert r.code == 0, r.err
    assert len(_report(report)["segments"]) >= 3
    assert cli("restore", src, "-o", whole, "--detector", "none", "--segment-seconds", "0").code == 0
    a, b, w = probe(src), probe(out), probe(whole)
    assert (b.frames, b.pts, b.audio, b.rotation) == (a.frames, a.pts, a.audio, a.rotation)
    assert (b.color, b.codec, b.pix_fmt, b.container_metadata) == (w.color, w.codec, w.pix_fmt, w.container_metadata)


def test_a_worker_process_that_cannot_load_its_models_fails_the_run_in_one_line(
    cli: Cli, clip: FaceClip, weights: Weights, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "never.mp4"
    r = cli("restore", clip.path, "-o", out, *_args(weights, "--workers", "2"), "--set", f"restorer.weights={bad}")
    assert r.code == 3, r.err
    assert_one_line_error(r.err)
    assert "bad.pth" in r.err and not out.exists()


def test_auto_workers_come_from_cores_and_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidrestore.config import load_config
    from vidrestore.run import local

    auto = load_config(None, ["pipeline.workers=0", "device=auto"])
    monkeypatch.setattr(local.torch.cuda, "is_available", lambda: False)
    assert local.worker_count(auto, 10) == (
        1,
        "workers: 1 (auto: on the CPU one pipeline's networks already use every core)",
    )
    monkeypatch.setattr(local.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(local.torch.cuda, "mem_get_info", lambda: (20 << 30, 141 << 30))
    monkeypatch.setattr(local.os, "cpu_count", lambda: 16)
    n, why = local.worker_count(auto, 10)
    assert n == 3 and why == "workers: 3 (auto: 16 cores, 20 GiB free on the GPU, 6 GiB each)"
    assert local.worker_count(auto, 2)[0] == 2  # never more than the tasks
    assert local.worker_count(load_config(None, ["pipeline.workers=4"]), 10) == (4, "")


@pytest.mark.slow
def test_worker_processes_from_a_python_script(weights: Weights, tmp_path: Path) -> None:
    """The API with two worker processes, from a script that keeps its call under the __main__ guard."""
    short = make_face_clip(tmp_path / "short.mp4", frames=20, size=(192, 144), trajectory=_motion, gop=10)
    out = tmp_path / "out.mp4"
    script = tmp_path / "run.py"
    sets = [
        "detector.model=centerface", f"restorer.weights={weights.gfpgan}", "restorer.parsing_mask=false",
        "upscaler.below=0", "pipeline.workers=2", "pipeline.segment_seconds=0.4",
    ]  # fmt: skip
    script.write_text(
        "from vidrestore import load_config, restore\n"
        "if __name__ == '__main__':\n"
        f"    summary = restore({str(short.path)!r}, {str(out)!r}, load_config(None, {sets!r}))\n"
        "    print(summary.stats.frames, len({s['worker'] for s in summary.stats.segments}))\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["20", "2"] and probe(out).frames == 20  # two segments, one per worker
