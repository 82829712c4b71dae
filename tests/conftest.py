"""Shared fixtures: random-weight model files, generated clips, a CLI runner."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from testkit.clips import FaceClip, make_face_clip
from testkit.weights import save_random_weights
from vidrestore.cli import main

# Two threads for the networks (this project's machines have two cores); one per process where
# pytest-xdist runs a process per core (ONNX Runtime and OpenVINO take torch's count too).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session", autouse=True)
def _suite_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """What every run in the suite sees, module- and session-scoped fixtures included (they are
    set up before any function-scoped fixture): no network, a weights cache of the suite's own, one
    folder of exported engines, and a CPU without native bf16 (the results of ``auto`` then match
    fp32 references on any machine; the bf16 tests turn it back on). The exported networks are
    shared by the whole session: each is keyed by its weights' sha256 and verified on load, as for
    a user's runs; the tests of that cache give it a folder of their own. Yields the engines folder."""
    engines = tmp_path_factory.mktemp("engines")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDRESTORE_WEIGHTS", str(tmp_path_factory.mktemp("suite-cache")))
        mp.setenv("VIDRESTORE_ENGINES", str(engines))
        mp.setenv("VIDRESTORE_OFFLINE", "1")
        mp.setenv("VIDRESTORE_CPU_BF16", "0")
        yield engines


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """The CLI points the ``vidrestore`` logger at the stderr of its call (which capsys closes after
    the test) and stops it propagating; every test starts from the logger as it was, so caplog sees
    the library's warnings whichever test ran before."""
    logger = logging.getLogger("vidrestore")
    kept = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate = kept[0], kept[1]
    logger.setLevel(kept[2])


@pytest.fixture(autouse=True)
def _isolated_weights(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, _suite_environment: Path
) -> None:
    """No test ever touches the user's real weights cache, or the network (tests of first-use
    fetching turn VIDRESTORE_OFFLINE off and serve the download themselves): each test has a cache
    of its own, and the suite's environment (:func:`_suite_environment`) as it was."""
    monkeypatch.setenv("VIDRESTORE_WEIGHTS", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("VIDRESTORE_ENGINES", str(_suite_environment))
    monkeypatch.setenv("VIDRESTORE_OFFLINE", "1")
    monkeypatch.setenv("VIDRESTORE_CPU_BF16", "0")


@dataclass(frozen=True)
class Weights:
    gfpgan: Path
    upscaler: Path
    parsenet: Path

    def sets(self, parsing: bool = False) -> list[str]:
        """CLI overrides that use these files (the parsing mask off unless asked: it is slow on a CPU)."""
        out = ["--set", f"restorer.weights={self.gfpgan}", "--set", f"upscaler.weights={self.upscaler}"]
        if parsing:
            return [*out, "--set", f"restorer.parsing_weights={self.parsenet}"]
        return [*out, "--set", "restorer.parsing_mask=false"]


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Weights:
    """Small variants of the real architectures with random weights, saved like the release files."""
    d = tmp_path_factory.mktemp("weights")
    return Weights(
        gfpgan=save_random_weights("gfpgan_v1_clean", d / "gfpgan-small.pth", small=True, scale=0.1),
        upscaler=save_random_weights("srvgg_compact", d / "srvgg-small.pth", small=True, key="params"),
        parsenet=save_random_weights("parsenet", d / "parsenet.pth", key=None),
    )


def wobble(i: int) -> tuple[float, float, float]:
    return (2.0 * i - 20.0, 3.0 * math.sin(i / 4), 0.01 * i)


@pytest.fixture(scope="session")
def face_clip(tmp_path_factory: pytest.TempPathFactory) -> FaceClip:
    """A 20-frame 320x240 H.264/AAC clip of a moving, real face."""
    return make_face_clip(tmp_path_factory.mktemp("clips") / "face.mp4", frames=20, trajectory=wobble)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``vidrestore ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str | os.PathLike[str]) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own exits (--help, --version, usage errors)
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_subprocess(*args: str | os.PathLike[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m vidrestore ARGS`` in a child process (for signals and real stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "vidrestore", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def assert_one_line_error(err: str) -> None:
    """Expected errors: exactly one line on stderr, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("vidrestore: error:"), lines[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def restore_still(img: np.ndarray, *overrides: str) -> np.ndarray:
    """One still through vidrestore as the fidelity tests run it: CenterFace (the references' detector
    too), no smoothing and no upscaler, plus ``overrides`` (the restorer and its files)."""
    from vidrestore import restore_frames
    from vidrestore.config import load_config

    base = ["detector.model=centerface", "detector.threshold=0.5", "smoothing.method=none", "upscaler.model=none"]
    (out,) = list(restore_frames([img], load_config(None, [*base, *overrides])))
    return out  # type: ignore[no-any-return]
