"""Engines: ONNX Runtime and torch.compile (Inductor) against eager torch on the CPU, for every
network the pipeline runs, on the real architectures with random weights loaded through the real
loader; the export cache; and the engine a run used, in its report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CliResult, Weights

from testkit.clips import FaceClip, astronaut
from testkit.weights import save_random_weights
from vidrestore.device import Placement
from vidrestore.errors import ConfigError
from vidrestore.models import onnx as onnx_module
from vidrestore.models.engine import CLEAR_GAIN, EngineMaker, NetShape, choose_engine, make_engine
from vidrestore.models.loading import load_model
from vidrestore.models.store import sha256_file
from vidrestore.stages.detect import RetinaFaceDetector
from vidrestore.stages.networks import FaceParser, GFPGANRestorer, Upscaler

CPU = Placement(torch.device("cpu"), torch.float32)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def maker(kind: str, cache: Path, weights: Path) -> EngineMaker:
    sha = sha256_file(weights)

    def make(role: str, module: torch.nn.Module, shape: NetShape):  # type: ignore[no-untyped-def]
        return make_engine(kind, role, module, shape, CPU, cache, sha)

    return make


def faces() -> torch.Tensor:
    crop = torch.from_numpy(astronaut()[:256, 128:384].copy()).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(crop, size=(512, 512), mode="bilinear").repeat(2, 1, 1, 1)


ENGINES = ["onnxruntime", pytest.param("compile", marks=pytest.mark.slow)]  # Inductor compiles C++: minutes


@pytest.mark.parametrize("kind", ENGINES)
def test_the_restorer_and_the_parser_match_eager(kind: str, weights: Weights, tmp_path: Path) -> None:
    """GFPGAN v1.4's architecture (small, random) and ParseNet: at least 45 dB against eager, at a
    batch of two (the export's batch axis is dynamic)."""
    model = load_model("gfpgan_v1_clean", weights.gfpgan)
    eager = GFPGANRestorer(model, CPU).restore(faces())
    other = GFPGANRestorer(model, CPU, maker(kind, tmp_path, weights.gfpgan))
    assert other.net.name == kind
    assert psnr(other.restore(faces()), eager) >= 45
    parsenet = load_model("parsenet", weights.parsenet)
    want = FaceParser(parsenet, CPU, size=128).masks(faces())
    got = FaceParser(parsenet, CPU, size=128, make=maker(kind, tmp_path, weights.parsenet)).masks(faces())
    assert psnr(got, want) >= 45


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize("arch", ["srvgg_compact", "rrdbnet_x2"])
def test_the_upscalers_match_eager_at_any_crop_size(kind: str, arch: str, tmp_path: Path) -> None:
    key = "params" if arch == "srvgg_compact" else "params_ema"
    path = save_random_weights(arch, tmp_path / f"{arch}.pth", small=True, key=key)
    model = load_model("rrdbnet" if arch.startswith("rrdbnet") else arch, path)
    eager, other = Upscaler(model, CPU), Upscaler(model, CPU, maker(kind, tmp_path, path))
    for h, w in ((40, 52), (33, 47)):  # height and width are dynamic too (and odd sides padded)
        crop = torch.rand(1, 3, h, w)
        assert psnr(other.upscale(crop), eager.upscale(crop)) >= 45


@pytest.mark.parametrize("kind", ENGINES)
def test_retinaface_finds_the_same_faces_within_half_a_pixel(kind: str, tmp_path: Path) -> None:
    path = save_random_weights("retinaface_mobile", tmp_path / "det.pth", key=None, seed=3)
    model = load_model("retinaface", path)
    eager = RetinaFaceDetector(model, CPU.device, size=320)
    other = RetinaFaceDetector(model, CPU.device, size=320, make=maker(kind, tmp_path, path))
    pictures = [astronaut(), astronaut()[::-1].copy()]
    want, got = eager.decoded(pictures), other.decoded(pictures)
    top = torch.argsort(want[1][0], descending=True)[:200]
    assert (want[0][0][top] - got[0][0][top]).abs().max() < 0.5  # boxes, source pixels
    assert (want[2][0][top] - got[2][0][top]).abs().max() < 0.5  # points
    assert (want[1] - got[1]).abs().max() < 1e-3  # scores


# -- the cache ---------------------------------------------------------------------------------


def _build(weights: Path, cache: Path) -> GFPGANRestorer:
    return GFPGANRestorer(load_model("gfpgan_v1_clean", weights), CPU, maker("onnxruntime", cache, weights))


def test_the_export_is_cached_by_weights_opset_and_exporter_and_verified_on_load(
    weights: Weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = onnx_module.EXPORTS
    before = len(exports)
    first = _build(weights.gfpgan, tmp_path)
    assert len(exports) == before + 1
    _build(weights.gfpgan, tmp_path)  # a second run: loaded, not exported again
    assert len(exports) == before + 1
    other = save_random_weights("gfpgan_v1_clean", tmp_path / "other.pth", small=True, scale=0.1, seed=5)
    _build(other, tmp_path)  # another weights file: its own export
    assert len(exports) == before + 2
    monkeypatch.setattr(onnx_module, "OPSET", 18)  # another opset
    _build(weights.gfpgan, tmp_path)
    assert len(exports) == before + 3
    monkeypatch.undo()
    monkeypatch.setattr(onnx_module, "EXPORTER", "torch.onnx 99.0")  # another exporter version
    _build(weights.gfpgan, tmp_path)
    assert len(exports) == before + 4
    monkeypatch.undo()
    path = first.net.path  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed: a corrupt cached file
    path.write_bytes(bytes(data))
    again = _build(weights.gfpgan, tmp_path)
    assert len(exports) == before + 5 and exports[-1] == path  # rebuilt, never loaded
    assert (
        psnr(
            again.restore(faces()), GFPGANRestorer(load_model("gfpgan_v1_clean", weights.gfpgan), CPU).restore(faces())
        )
        >= 45
    )
    path.write_bytes(b"")  # cut short
    _build(weights.gfpgan, tmp_path)
    assert len(exports) == before + 6
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]  # written whole or not at all


# -- choosing, refusing, reporting ---------------------------------------------------------------


def test_auto_follows_the_committed_measurement() -> None:
    """auto runs on a CPU what bench.engines measured clearly faster there (1.25x or more), and eager
    on a GPU (no GPU measurement yet): the table in the code and the committed JSON agree."""
    rows = json.loads((Path(__file__).parent.parent / "bench" / "results" / "engines.json").read_text())["rows"]
    roles = {"gfpgan-1.4": "restorer", "parsenet": "parser", "realesr-general-x4v3": "upscaler"}
    roles["retinaface_resnet50"] = "detector"
    for name, role in roles.items():
        ort = next(r for r in rows if r["network"].startswith(name) and r["engine"] == "onnxruntime")
        clear = ort["x_eager"] >= CLEAR_GAIN
        assert choose_engine("auto", torch.device("cpu"), role) == ("onnxruntime" if clear else "eager"), role
        assert choose_engine("auto", torch.device("cuda"), role) == "eager"
    assert choose_engine("compile", torch.device("cpu"), "detector") == "compile"


def test_tensorrt_without_a_gpu_is_a_clear_error(weights: Weights, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tensorrt needs a CUDA GPU.*pip install 'vidrestore\[tensorrt\]'"):
        _ = GFPGANRestorer(
            load_model("gfpgan_v1_clean", weights.gfpgan), CPU, maker("tensorrt", tmp_path, weights.gfpgan)
        )


def test_the_cli_says_which_engine_ran_each_network_and_refuses_tensorrt_on_a_cpu(
    weights: Weights, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    from PIL import Image

    src = tmp_path / "face.png"
    Image.fromarray(astronaut()).save(src)
    common = ["--detector", "centerface", *weights.sets(), "--weights-dir", str(tmp_path / "w"), "--offline"]
    r = cli("restore", str(src), "-o", str(tmp_path / "out.png"), "--report", str(tmp_path / "r.json"), *common)
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "r.json").read_text())["engines"] == {
        "detector": "opencv",  # CenterFace: OpenCV's DNN module
        "upscaler": "eager",  # auto, as measured on a CPU
        "restorer": "onnxruntime",
    }
    r = cli("restore", str(src), "-o", str(tmp_path / "t.png"), "--set", "restorer.engine=tensorrt", *common)
    assert r.code == 2 and "pip install 'vidrestore[tensorrt]'" in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "t.png").exists()


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("kind", ["onnxruntime", pytest.param("compile", marks=pytest.mark.slow)])
def test_the_whole_pipeline_matches_eager_on_a_real_face_clip(
    kind: str, weights: Weights, face_clip: FaceClip, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """Every frame of a real face clip, restored with the engine, within 40 dB of eager (lossless
    output, so the codec adds nothing)."""
    clip = face_clip.path
    common = [*weights.sets(), "--detector", "centerface", "--weights-dir", str(tmp_path / "w"), "--offline"]
    outs = {}
    for engine in ("eager", kind):
        out = tmp_path / f"{engine}.mkv"
        r = cli("restore", str(clip), "-o", str(out), "--set", f"engine={engine}", "--crf", "0", *common)
        assert r.code == 0, r.err
        outs[engine] = _frames(out)
    assert len(outs["eager"]) == len(outs[kind]) > 0
    for a, b in zip(outs["eager"], outs[kind], strict=True):
        assert psnr(torch.from_numpy(a), torch.from_numpy(b), 255.0) >= 40


def test_stages_built_again_for_another_knob_reuse_the_exported_engine(weights: Weights, tmp_path: Path) -> None:
    """A server request with its own blend builds its stages again: the ONNX Runtime session (and
    its copy of the weights) is kept with the loaded networks, not made again."""
    from vidrestore.config import load_config
    from vidrestore.models.store import ModelStore
    from vidrestore.stages.assemble import build_face_stages

    store = ModelStore(tmp_path / "w")
    sets = [f"restorer.weights={weights.gfpgan}", "restorer.parsing_mask=false", "detector.model=centerface"]
    loaded: dict[tuple[str, ...], object] = {}
    first = build_face_stages(load_config(None, [*sets, "upscaler.below=0"]), store, loaded=loaded)
    again = build_face_stages(
        load_config(None, [*sets, "upscaler.below=0", "restorer.blend=0.5"]), store, loaded=loaded
    )
    assert first.restore is not None and again.restore is not None
    assert first.restore.restorer.net.name == "onnxruntime"  # type: ignore[attr-defined]
    assert again.restore.restorer.net is first.restore.restorer.net  # type: ignore[attr-defined]


def test_the_cache_key_of_a_verified_release_is_not_hashed_again(
    weights: Weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registered model the store has verified carries a stamp of its sha256: the engine's cache
    key reads it instead of hashing hundreds of megabytes again on every run; a file changed since
    its stamp is hashed."""
    import os

    from vidrestore.models import store as store_module
    from vidrestore.models.registry import ModelRegistry, ModelSpec

    path = tmp_path / "w" / "toy.pth"
    path.parent.mkdir()
    path.write_bytes(weights.gfpgan.read_bytes())
    sha = sha256_file(path)
    spec = ModelSpec("toy", "restorer", "gfpgan_v1_clean", "toy.pth", "https://example.invalid/toy.pth", sha, 1.0, "")
    store_module.ModelStore(tmp_path / "w", ModelRegistry([spec])).resolve("toy")  # verified: stamped
    hashed: list[Path] = []
    real = store_module.sha256_file
    monkeypatch.setattr(store_module, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert store_module.known_sha256(path) == sha and hashed == []
    os.utime(path, ns=(1, 1))  # touched since: the stamp no longer speaks for it
    assert store_module.known_sha256(path) == sha and hashed == [path]
