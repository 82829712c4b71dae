"""Detection on a thread of its own while faces are restored: same output, clean stops, no leaked threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import CliResult, Weights, assert_one_line_error, psnr
from media import probe

from testkit.clips import FaceClip
from vidrestore.control import in_background

Cli = Callable[..., CliResult]


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def _fails_cleanly(cli: Cli, clip: Path, weights: Weights, tmp_path: Path, *extra: str) -> str:
    """Run with detection overlapped, expecting a failure: exit 1 with one line, nothing at the output
    or beside it, no thread left running. Returns the line."""
    before = _threads()
    out = tmp_path / "never.mp4"
    r = cli(
        "restore", clip, "-o", out, "--detector", "centerface", *weights.sets(), "--set", "pipeline.overlap=on",
        *extra,
    )  # fmt: skip
    assert r.code == 1
    assert_one_line_error(r.err)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    time.sleep(0.3)  # threads that would leak are daemons: give them a moment to show up as alive
    assert _threads() <= before, "no thread left running"
    return r.err


def test_in_background_hands_on_every_item_in_order() -> None:
    assert list(in_background(iter(range(100)), size=3, name="t")) == list(range(100))


def test_in_background_raises_the_threads_error_in_the_caller() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("inside the thread")

    got = []
    with pytest.raises(ValueError, match="inside the thread"):
        for item in in_background(broken(), size=2, name="t-broken"):
            got.append(item)
    assert got == [1] and "t-broken" not in _threads()


def test_in_background_stops_its_thread_when_the_caller_stops() -> None:
    def endless() -> Iterator[int]:
        n = 0
        while True:
            n += 1
            yield n

    it = in_background(endless(), size=2, name="t-endless")
    assert next(it) == 1
    it.close()  # what a failing consumer's generator chain does
    assert "t-endless" not in _threads()


def test_overlap_on_and_off_give_the_same_pictures(face_clip: FaceClip, weights: Weights) -> None:
    from vidrestore import load_config, restore_frames

    pictures = probe(face_clip.path, keep_images=True).images
    outs = []
    for mode in ("off", "on"):
        keys = weights.sets()[1::2]  # the KEY=VALUE halves of the --set pairs
        config = load_config(None, ["detector.model=centerface", f"pipeline.overlap={mode}", *keys])
        outs.append(list(restore_frames(pictures, config)))
    off, on = outs
    assert len(on) == len(off) == 20
    for a, b, src in zip(on, off, pictures):
        assert not np.array_equal(a, src)  # restored
        # equal up to float rounding: two threads sharing the CPU's intra-op pool may sum in another order
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2 and psnr(a, b) > 50


def test_a_detection_error_on_its_thread_stops_the_run_naming_the_frames(
    cli: Cli, face_clip: FaceClip, weights: Weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidrestore.stages.detect import CenterFaceDetector

    real = CenterFaceDetector.detect
    calls = {"n": 0}

    def failing(self: CenterFaceDetector, images: list[np.ndarray], sar: float = 1.0) -> object:
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch: frames 8-15 (detector.batch_size 8)
            raise RuntimeError("simulated detector crash")
        return real(self, images, sar)

    monkeypatch.setattr(CenterFaceDetector, "detect", failing)
    err = _fails_cleanly(cli, face_clip.path, weights, tmp_path)
    assert "stage 'detect', frame 8:" in err and "frames 8-15" in err


@pytest.mark.parametrize("extra", [[], ["--scale", "2"]])  # with whole-frame upscaling between the two
def test_a_restore_error_stops_the_detection_thread_too(
    cli: Cli, face_clip: FaceClip, weights: Weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    import torch

    from vidrestore.stages.networks import GFPGANRestorer

    def failing(self: GFPGANRestorer, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(GFPGANRestorer, "restore", failing)
    assert "stage 'restore', frame 0:" in _fails_cleanly(cli, face_clip.path, weights, tmp_path, *extra)


def test_an_encoder_error_mid_run_stops_the_detection_and_decode_threads_and_writes_nothing(
    cli: Cli, face_clip: FaceClip, weights: Weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third overlapped stage: the encoder thread fails at frame 6 while detection runs ahead."""
    from vidrestore.io.writer import VideoWriter

    real = VideoWriter._encode

    def failing(self: VideoWriter, frame: object) -> None:
        if self.frames_written == 6:
            raise OSError(28, "No space left on device")
        real(self, frame)  # type: ignore[arg-type]

    monkeypatch.setattr(VideoWriter, "_encode", failing)
    err = _fails_cleanly(cli, face_clip.path, weights, tmp_path)
    assert "stage 'encode', frame 6: writing the video failed" in err and "No space left" in err
