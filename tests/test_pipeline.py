"""The whole product: CLI and API runs on generated clips with small random-weight models."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CliResult, Weights, assert_one_line_error, psnr
from media import probe

from testkit.clips import FaceClip, astronaut, make_face_clip
from vidrestore import load_config, restore, restore_frames
from vidrestore.config import apply_overrides
from vidrestore.errors import InputError

Cli = Callable[..., CliResult]


def test_end_to_end_restore_keeps_frames_timestamps_and_audio(
    cli: Cli, face_clip: FaceClip, weights: Weights, tmp_path: Path
) -> None:
    out, report = tmp_path / "restored.mp4", tmp_path / "report.json"
    r = cli("restore", face_clip.path, "-o", out, "--detector", "centerface", *weights.sets(), "--report", report)
    assert r.code == 0, r.err
    a, b = probe(face_clip.path, keep_images=True), probe(out, keep_images=True)
    assert b.frames == a.frames == 20
    assert b.pts == a.pts
    assert b.audio and list(b.audio.values()) == list(a.audio.values())
    data = json.loads(report.read_text())
    counts = data["counts"]
    assert counts["frames"] == 20
    assert counts["faces_restored"] == 20 and counts["faces_failed"] == 0
    assert counts["faces_upscaled"] == 20  # the clip's face is ~70 px, under upscaler.below (96)
    assert data["config"]["detector"]["model"] == "centerface"
    assert {"vidrestore", "torch", "av"} <= set(data["versions"])
    assert {"detect", "upscale faces", "align", "restorer", "mask + paste"} <= set(data["stage_seconds"])
    # faces changed; the rest of the frame stays within codec tolerance of the input
    for i, (x, y) in enumerate(zip(a.images, b.images)):
        lm = face_clip.landmarks[i]
        cx, cy = lm.mean(axis=0)
        face = (slice(int(cy) - 25, int(cy) + 25), slice(int(cx) - 20, int(cx) + 20))
        assert psnr(x[face], y[face]) < 30, "the face should be restored (changed)"
        keep = np.ones(x.shape[:2], bool)
        keep[max(int(cy) - 110, 0) : int(cy) + 110, max(int(cx) - 110, 0) : int(cx) + 110] = False
        assert psnr(x[keep], y[keep]) > 35, "the background must stay as it was"
    assert "faces: 20 restored" in r.err


class _MissesSomeFrames:
    """A detector that misses the face in chosen frames (as an occlusion or a bad frame would)."""

    def __init__(self, inner: object, missed: set[int]) -> None:
        self.inner, self.missed, self.seen = inner, missed, 0

    def detect(self, images: list[np.ndarray], sar: float = 1.0) -> list[object]:
        from vidrestore.stages.detect import Detections

        found = self.inner.detect(images, sar)  # type: ignore[attr-defined]
        out = []
        for d in found:
            out.append(Detections.empty() if self.seen in self.missed else d)
            self.seen += 1
        return out


def test_a_face_missing_for_three_frames_is_still_restored(face_clip: FaceClip, weights: Weights) -> None:
    from vidrestore.control import RunControl
    from vidrestore.io.reader import VideoReader
    from vidrestore.stages.assemble import build_face_stages
    from vidrestore.stats import RunStats

    config = load_config(
        None,
        [
            "detector.model=centerface",
            f"restorer.weights={weights.gfpgan}",
            "upscaler.model=none",
            "restorer.parsing_mask=false",
        ],
    )
    stats = RunStats()
    stages = build_face_stages(config, _store(), stats)
    stages.detector = _MissesSomeFrames(stages.detector, {6, 7, 8})  # type: ignore[assignment]
    reader = VideoReader(face_clip.path, RunControl())
    decoded = list(reader)
    reader.close()
    out = list(stages(iter(decoded)))
    assert [f.index for f in out] == list(range(20))
    for i in (6, 7, 8):
        (face,) = out[i].faces
        assert face.interpolated and face.landmarks_raw is None
        assert not np.array_equal(out[i].image, decoded[i].image), f"frame {i} was not restored"
    assert stats.faces_filled == 3 and stats.faces_restored == 20


def _store():  # type: ignore[no-untyped-def]
    from vidrestore.models.store import ModelStore, default_weights_dir

    return ModelStore(default_weights_dir())


def test_error_in_the_restore_stage_stops_cleanly(
    cli: Cli, face_clip: FaceClip, weights: Weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidrestore.stages.picture import PlanesPicture

    real = PlanesPicture.composite
    calls = {"n": 0}

    def broken(self: PlanesPicture, faces: list, view: object) -> None:  # type: ignore[type-arg]
        calls["n"] += 1
        if calls["n"] == 5:
            raise ValueError("simulated bug in paste-back")
        real(self, faces, view)  # type: ignore[arg-type]

    monkeypatch.setattr(PlanesPicture, "composite", broken)
    before = threading.active_count()
    out = tmp_path / "never.mp4"
    r = cli(
        "restore",
        face_clip.path,
        "-o",
        out,
        "--detector",
        "centerface",
        *weights.sets(),
        "--set",
        "restorer.batch_size=2",
    )
    assert r.code == 1
    assert_one_line_error(r.err)
    assert "stage 'restore'" in r.err and "frame 4" in r.err and "simulated bug" in r.err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
    assert threading.active_count() == before, "no thread left running"


def test_python_api(face_clip: FaceClip, weights: Weights, tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "detector.model=centerface",
            f"restorer.weights={weights.gfpgan}",
            f"upscaler.weights={weights.upscaler}",
            "restorer.blend=0.5",
            "restorer.parsing_mask=false",
        ],
    )
    summary = restore(face_clip.path, tmp_path / "api.mkv", config)
    assert summary.stats.frames == 20 and summary.outputs == [tmp_path / "api.mkv"]
    assert probe(tmp_path / "api.mkv").frames == 20
    pictures = [astronaut(), np.zeros((512, 512, 3), np.uint8)]
    with_mask = apply_overrides(
        config, {"restorer": {"parsing_mask": True, "parsing_weights": str(weights.parsenet)}}, "test"
    )
    got = list(restore_frames(pictures, with_mask))  # the default paste-back mask, end to end
    assert len(got) == 2
    assert not np.array_equal(got[0], pictures[0])
    assert np.array_equal(got[1], pictures[1])
    with pytest.raises(InputError, match=r"picture 0: expected \(H, W, 3\) uint8 RGB"):
        list(restore_frames([np.zeros((4, 4), np.uint8)], config))


def test_dry_run_shows_config_streams_and_models(cli: Cli, face_clip: FaceClip, tmp_path: Path) -> None:
    r = cli("restore", face_clip.path, "-o", tmp_path / "o.mp4", "--dry-run", "--blend", "0.7")
    assert r.code == 0, r.err
    assert "blend: 0.7" in r.out
    assert "video h264 320x240" in r.out and "audio aac" in r.out
    assert "model gfpgan-1.4: missing" in r.out and "model retinaface_resnet50: missing" in r.out
    assert not (tmp_path / "o.mp4").exists()


def test_inspect_json_and_annotation(cli: Cli, face_clip: FaceClip, tmp_path: Path) -> None:
    js, ann = tmp_path / "faces.json", tmp_path / "annotated.mp4"
    r = cli("inspect", face_clip.path, "--detector", "centerface", "--json", js, "--annotate", ann)
    assert r.code == 0, r.err
    data = json.loads(js.read_text())
    assert len(data["frames"]) == 20
    f = data["frames"][3]
    assert {"index", "pts", "time", "faces"} <= set(f)
    face = f["faces"][0]
    assert {"track_id", "score", "box", "landmarks_raw", "landmarks", "interpolated"} <= set(face)
    assert np.array(face["landmarks"]).shape == (5, 2)
    assert f["time"] == pytest.approx(3 / 25)
    a = probe(ann, keep_images=True)
    assert a.frames == 20 and list(a.audio.values()) == list(probe(face_clip.path).audio.values())
    assert not np.array_equal(a.images[0], probe(face_clip.path, keep_images=True).images[0])


def test_several_inputs_go_to_a_folder(cli: Cli, face_clip: FaceClip, tmp_path: Path) -> None:
    second = tmp_path / "second.mp4"
    second.write_bytes(face_clip.path.read_bytes())
    out = tmp_path / "out"
    r = cli("restore", face_clip.path, second, "-o", f"{out}/", "--detector", "none")
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["face.mp4", "second.mp4"]


@pytest.mark.parametrize("scale", [2, 4])
def test_output_scale_upscales_the_whole_frame_then_restores(
    cli: Cli, weights: Weights, tmp_path: Path, scale: int
) -> None:
    clip = make_face_clip(tmp_path / "small.mp4", frames=4, size=(160, 120), face_scale=0.3)
    out = tmp_path / f"x{scale}.mp4"
    r = cli(
        "restore",
        clip.path,
        "-o",
        out,
        "--detector",
        "centerface",
        *weights.sets(),
        "--scale",
        str(scale),
        "--set",
        "detector.threshold=0.3",
    )
    assert r.code == 0, r.err
    p = probe(out)
    assert (p.width, p.height) == (160 * scale, 120 * scale)
    assert p.frames == 4 and p.pts == probe(clip.path).pts
    assert "4 restored" in r.err


def test_output_scale_without_faces_and_for_images(cli: Cli, weights: Weights, tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "shot.png"
    Image.fromarray(astronaut()[:100, :150]).save(src)
    r = cli(
        "restore",
        src,
        "-o",
        tmp_path / "big.png",
        "--detector",
        "none",
        "--scale",
        "2",
        "--set",
        f"upscaler.weights={weights.upscaler}",
    )
    assert r.code == 0, r.err
    assert Image.open(tmp_path / "big.png").size == (300, 200)


@pytest.mark.slow
def test_the_readme_main_command(weights: Weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's command on clips/sample.mp4: exit 3 with the store's message without weights,
    and a full run once weights are there (here: the small random-weight files, by *.weights)."""
    import re
    import shlex

    from vidrestore.cli import main

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("vidrestore restore clips/"))
    args = shlex.split(re.sub(r"\s+#.*$", "", line))[1:]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "sample.mp4").write_bytes((root / "clips" / "sample.mp4").read_bytes())
    assert main(args) == 3
    out = Path(args[args.index("-o") + 1])
    assert not out.exists()
    code = main([*args, "--detector", "centerface", "-q", *weights.sets(parsing=True)])
    assert code == 0
    p, src = probe(out), probe(tmp_path / "clips" / "sample.mp4")
    assert p.frames == src.frames == 75 and p.pts == src.pts
    assert list(p.audio.values()) == list(src.audio.values())


def test_a_device_error_in_the_restorer_exits_1_naming_the_stage_and_frame(
    cli: Cli, face_clip: FaceClip, weights: Weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidrestore.stages.networks import GFPGANRestorer

    real = GFPGANRestorer.restore
    calls = {"n": 0}

    def failing(self: GFPGANRestorer, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        calls["n"] += 1  # one face per frame, one face per call on a CPU: call 8 is frame 7's face
        if calls["n"] == 8:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(self, faces, fp32)

    monkeypatch.setattr(GFPGANRestorer, "restore", failing)
    out = tmp_path / "never.mp4"
    r = cli("restore", face_clip.path, "-o", out, "--detector", "centerface", *weights.sets())
    assert r.code == 1
    assert_one_line_error(r.err)
    assert "stage 'restore', frame 7:" in r.err and "illegal memory access" in r.err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_scale_2_with_an_even_sided_upscaler_on_an_odd_sized_video(cli: Cli, tmp_path: Path) -> None:
    from testkit.clips import write_clip
    from testkit.weights import save_random_weights

    x2 = save_random_weights("rrdbnet_x2", tmp_path / "x2.pth", small=True)
    src, out = tmp_path / "odd.mkv", tmp_path / "out.mkv"
    write_clip(src, [np.full((45, 63, 3), 40 * i, np.uint8) for i in range(3)], pix_fmt="yuv444p")
    r = cli(
        "restore", src, "-o", out, "--detector", "none", "--scale", "2",
        "--set", "upscaler.model=realesrgan-x2plus", "--set", f"upscaler.weights={x2}",
    )  # fmt: skip
    assert r.code == 0, r.err
    p = probe(out)
    assert (p.width, p.height) == (126, 90) and p.frames == 3
