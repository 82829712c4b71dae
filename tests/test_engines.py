"""Engines: ONNX Runtime and torch.compile (Inductor) against eager torch on the CPU, for every
network the pipeline runs, on the real architectures with random weights loaded through the real
loader; the export cache; and the engine a run used, in its report."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CliResult, Weights

from testkit.clips import FaceClip, astronaut
from testkit.weights import save_random_weights
from vidrestore.device import Placement, cpu_has_bf16, native_bf16
from vidrestore.errors import ConfigError
from vidrestore.models import onnx as onnx_module
from vidrestore.models.engine import (
    CLEAR_GAIN,
    CPU_AUTO,
    CPU_AUTO_BF16,
    EngineMaker,
    NetShape,
    choose_engine,
    engine_precision,
    make_engine,
)
from vidrestore.models.loading import load_model
from vidrestore.models.store import sha256_file
from vidrestore.stages.detect import RetinaFaceDetector
from vidrestore.stages.networks import FaceParser, GFPGANRestorer, Upscaler

CPU = Placement(torch.device("cpu"), torch.float32)
needs_bf16 = pytest.mark.skipif(
    not cpu_has_bf16(), reason="this CPU does not do bf16 natively (no AMX or AVX-512 BF16): bf16 would be emulated"
)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def maker(kind: str, cache: Path, weights: Path, precision: str = "fp32") -> EngineMaker:
    sha = sha256_file(weights)

    def make(role: str, module: torch.nn.Module, shape: NetShape):  # type: ignore[no-untyped-def]
        return make_engine(kind, role, module, shape, CPU, cache, sha, precision=precision)

    return make


def faces() -> torch.Tensor:
    crop = torch.from_numpy(astronaut()[:256, 128:384].copy()).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(crop, size=(512, 512), mode="bilinear").repeat(2, 1, 1, 1)


# Inductor compiles C++: minutes
ENGINES = ["onnxruntime", "openvino", pytest.param("compile", marks=pytest.mark.slow)]


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


def _chosen(rows: list[dict[str, object]], network: str, engines: tuple[str, ...]) -> str:
    """The rule the tables follow: ``engines`` in order, each replacing the choice so far (eager
    first) only where it measured CLEAR_GAIN faster; bf16 only where it held against f32 (38 dB;
    the detector: its points within half a pixel)."""
    timed = {str(r["engine"]): r for r in rows if str(r["network"]).startswith(network) and "x_eager" in r}
    best, speed = "eager", 1.0
    for engine in engines:
        row = timed[engine]
        if engine.endswith("-bf16"):
            held = float(row["vs_f32"]) <= 0.5 if network.startswith("retinaface") else float(row["vs_f32"]) >= 38
            if not held:
                continue
        if float(row["x_eager"]) >= speed * CLEAR_GAIN:
            best, speed = engine.removesuffix("-bf16"), float(row["x_eager"])
    return best


def test_auto_follows_the_committed_measurement() -> None:
    """auto runs on a CPU what bench.engines measured clearly faster there (1.25x or more): with
    native bf16, among ONNX Runtime and OpenVINO f32 and bf16; without it, among ONNX Runtime and
    OpenVINO f32; eager on a GPU (no GPU measurement yet). The tables in the code and the
    committed JSON agree, and this CPU gets the table that speaks for it."""
    rows = json.loads((Path(__file__).parent.parent / "bench" / "results" / "engines.json").read_text())["rows"]
    roles = {"gfpgan-1.4": "restorer", "parsenet": "parser", "realesr-general-x4v3": "upscaler"}
    roles["retinaface_resnet50"] = "detector"
    for name, role in roles.items():
        assert CPU_AUTO_BF16[role] == _chosen(rows, name, ("onnxruntime", "openvino", "openvino-bf16")), role
        assert CPU_AUTO[role] == _chosen(rows, name, ("onnxruntime", "openvino")), role
        here = CPU_AUTO_BF16 if native_bf16() else CPU_AUTO
        assert choose_engine("auto", torch.device("cpu"), role) == here[role], role
        assert choose_engine("auto", torch.device("cpu"), role, "fp32") == CPU_AUTO[role], role
        assert choose_engine("auto", torch.device("cuda"), role) == "eager"
    assert choose_engine("compile", torch.device("cpu"), "detector") == "compile"


def test_tensorrt_without_a_gpu_is_a_clear_error(weights: Weights, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tensorrt needs a CUDA GPU.*pip install 'vidrestore\[tensorrt\]'"):
        _ = GFPGANRestorer(
            load_model("gfpgan_v1_clean", weights.gfpgan), CPU, maker("tensorrt", tmp_path, weights.gfpgan)
        )


@pytest.mark.parametrize("bf16", ["0", pytest.param("1", marks=needs_bf16)])
def test_the_cli_says_which_engine_ran_each_network_and_refuses_tensorrt_on_a_cpu(
    bf16: str, weights: Weights, tmp_path: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--report`` names the engine and precision of every network as ``auto`` chose them here
    (without bf16: ONNX Runtime for the restorer; with it: OpenVINO bf16), and ``--dry-run`` said
    the same before anything ran."""
    from PIL import Image

    monkeypatch.setenv("VIDRESTORE_CPU_BF16", bf16)
    src = tmp_path / "face.png"
    Image.fromarray(astronaut()).save(src)
    common = ["--detector", "centerface", *weights.sets(), "--weights-dir", str(tmp_path / "w"), "--offline"]
    r = cli("restore", str(src), "-o", str(tmp_path / "out.png"), "--report", str(tmp_path / "r.json"), *common)
    assert r.code == 0, r.err
    expected = {
        "detector": "opencv fp32",  # CenterFace: OpenCV's DNN module
        "upscaler": "openvino bf16" if bf16 == "1" else "eager fp32",
        "restorer": "openvino bf16" if bf16 == "1" else "onnxruntime fp32",
    }
    assert json.loads((tmp_path / "r.json").read_text())["engines"] == expected
    dry = cli("restore", str(src), "-o", str(tmp_path / "d.png"), "--dry-run", *common)
    assert dry.code == 0, dry.err
    planned = dict(re.findall(r"^model (\S+): .*; runs (.+) on cpu$", dry.out, re.MULTILINE))
    roles = {"centerface": "detector", "realesr-general-x4v3": "upscaler", "gfpgan-1.4": "restorer"}
    assert {roles[name]: engine for name, engine in planned.items()} == expected
    r = cli("restore", str(src), "-o", str(tmp_path / "t.png"), "--set", "restorer.engine=tensorrt", *common)
    assert r.code == 2 and "pip install 'vidrestore[tensorrt]'" in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "t.png").exists()


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


_EAGER: dict[Path, list[np.ndarray]] = {}


@pytest.mark.parametrize(
    ("kind", "precision", "db"),
    [
        ("onnxruntime", "fp32", 40),
        pytest.param("openvino", "fp32", 40, marks=pytest.mark.slow),  # each network's parity: 45 dB above
        pytest.param("openvino", "bf16", 35, marks=needs_bf16),
        pytest.param("compile", "fp32", 40, marks=pytest.mark.slow),
    ],
)
def test_the_whole_pipeline_matches_eager_on_a_real_face_clip(
    kind: str,
    precision: str,
    db: float,
    weights: Weights,
    face_clip: FaceClip,
    tmp_path: Path,
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every frame of a real face clip, restored with the engine, within 40 dB of eager fp32 (35 dB
    in bf16), the parsing mask on (lossless output, so the codec adds nothing)."""
    monkeypatch.setenv("VIDRESTORE_CPU_BF16", "1")  # bf16 where this CPU does it (asked for below only)
    clip = face_clip.path
    common = [*weights.sets(parsing=True), "--detector", "centerface", "--weights-dir", str(tmp_path / "w")]
    common += ["--offline", "--crf", "0"]
    outs = {("eager", "fp32"): _EAGER[clip]} if clip in _EAGER else {}
    for engine, asked in (("eager", "fp32"), (kind, precision)):
        if (engine, asked) in outs:
            continue
        out = tmp_path / f"{engine}-{asked}.mkv"
        report = tmp_path / f"{engine}-{asked}.json"
        sets = ["--set", f"engine={engine}", "--set", f"precision={asked}", "--report", str(report)]
        r = cli("restore", str(clip), "-o", str(out), *sets, *common)
        assert r.code == 0, r.err
        assert json.loads(report.read_text())["engines"]["restorer"] == f"{engine} {asked}"
        outs[engine, asked] = _frames(out)
    _EAGER[clip] = outs["eager", "fp32"]  # the reference, run once for every engine compared with it
    eager, other = outs["eager", "fp32"], outs[kind, precision]
    assert len(eager) == len(other) > 0
    for a, b in zip(eager, other, strict=True):
        assert psnr(torch.from_numpy(a), torch.from_numpy(b), 255.0) >= db


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
    auto = choose_engine("auto", torch.device("cpu"), "restorer")
    assert auto != "eager" and first.restore.restorer.net.name == auto  # type: ignore[attr-defined]
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


# -- OpenVINO and bf16 ---------------------------------------------------------------------------


@pytest.fixture
def bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """This CPU as it is (the suite runs as one without native bf16: see conftest)."""
    monkeypatch.setenv("VIDRESTORE_CPU_BF16", "1")


@needs_bf16
def test_bf16_holds_38_db_against_fp32_for_every_network(weights: Weights, tmp_path: Path, bf16: None) -> None:
    """OpenVINO bf16 against OpenVINO f32, the real architectures (small, random weights): the
    restorer, the parser and both upscalers at 38 dB or more, and each engine says bf16."""
    model = load_model("gfpgan_v1_clean", weights.gfpgan)
    f32 = GFPGANRestorer(model, CPU, maker("openvino", tmp_path, weights.gfpgan))
    bf16 = GFPGANRestorer(model, CPU, maker("openvino", tmp_path, weights.gfpgan, "bf16"))
    assert bf16.net.precision == "bf16"  # type: ignore[attr-defined]
    assert psnr(bf16.restore(faces()), f32.restore(faces())) >= 38
    # the parser's own output, its class scores (its hard class map changes where two classes are
    # close, at boundaries the pipeline blurs by 101 px)
    parsenet = load_model("parsenet", weights.parsenet)
    x = torch.nn.functional.interpolate(faces(), size=(128, 128), mode="bilinear") * 2 - 1
    want = FaceParser(parsenet, CPU, size=128, make=maker("openvino", tmp_path, weights.parsenet)).net(x)
    got = FaceParser(parsenet, CPU, size=128, make=maker("openvino", tmp_path, weights.parsenet, "bf16")).net(x)
    assert isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)
    assert psnr(got, want, float(want.max() - want.min())) >= 38
    for arch, key in (("srvgg_compact", "params"), ("rrdbnet_x2", "params_ema")):
        path = save_random_weights(arch, tmp_path / f"{arch}.pth", small=True, key=key)
        net = load_model("rrdbnet" if arch.startswith("rrdbnet") else arch, path)
        crop = torch.rand(1, 3, 40, 52)
        a = Upscaler(net, CPU, maker("openvino", tmp_path, path)).upscale(crop)
        b = Upscaler(net, CPU, maker("openvino", tmp_path, path, "bf16")).upscale(crop)
        assert psnr(b, a) >= 38, arch


@needs_bf16
def test_a_network_whose_bf16_misses_the_threshold_runs_in_fp32_and_the_check_runs_once(
    weights: Weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, bf16: None
) -> None:
    from vidrestore.models import openvino as ov_module

    checks: list[Path] = []
    real = ov_module.bf16_parity
    monkeypatch.setattr(ov_module, "bf16_parity", lambda p, *a: checks.append(p) or real(p, *a))
    monkeypatch.setattr(ov_module, "BF16_MIN_DB", 150.0)  # no bf16 output is that close
    model = load_model("gfpgan_v1_clean", weights.gfpgan)
    with caplog.at_level("WARNING"):
        net = GFPGANRestorer(model, CPU, maker("openvino", tmp_path, weights.gfpgan, "bf16")).net
    assert net.precision == "fp32" and "runs in fp32" in caplog.text  # type: ignore[attr-defined]
    again = GFPGANRestorer(model, CPU, maker("openvino", tmp_path, weights.gfpgan, "bf16")).net
    assert again.precision == "fp32" and len(checks) == 1  # type: ignore[attr-defined]  # the verdict is kept
    monkeypatch.setattr(ov_module, "BF16_MIN_DB", 38.0)  # another threshold: checked again, and held
    third = GFPGANRestorer(model, CPU, maker("openvino", tmp_path, weights.gfpgan, "bf16")).net
    assert third.precision == "bf16" and len(checks) == 2  # type: ignore[attr-defined]


def test_precision_follows_the_cpu_and_bf16_is_never_emulated(
    monkeypatch: pytest.MonkeyPatch, weights: Weights, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """auto takes bf16 under OpenVINO only where the CPU does it natively; a CPU without it (as
    VIDRESTORE_CPU_BF16=0 makes any) gets fp32 from auto, the f32 table, and one line, exit 2, for
    an explicit bf16."""
    cpu = torch.device("cpu")
    monkeypatch.setenv("VIDRESTORE_CPU_BF16", "1")
    assert native_bf16() == cpu_has_bf16()
    assert engine_precision("auto", "openvino", cpu) == ("bf16" if cpu_has_bf16() else "fp32")
    assert engine_precision("auto", "onnxruntime", cpu) == engine_precision("fp32", "openvino", cpu) == "fp32"
    assert choose_engine("auto", cpu, "restorer") == (CPU_AUTO_BF16 if cpu_has_bf16() else CPU_AUTO)["restorer"]
    monkeypatch.setenv("VIDRESTORE_CPU_BF16", "0")
    assert not native_bf16()
    assert engine_precision("auto", "openvino", cpu) == "fp32"
    assert choose_engine("auto", cpu, "restorer") == CPU_AUTO["restorer"]
    from PIL import Image

    src = tmp_path / "face.png"
    Image.fromarray(astronaut()).save(src)
    r = cli("restore", src, "-o", tmp_path / "o.png", "--set", "precision=bf16", *weights.sets())
    assert r.code == 2 and "would be emulated" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not (tmp_path / "o.png").exists()


def test_an_openvino_device_that_is_not_here_is_a_clear_error(
    weights: Weights, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    from PIL import Image

    src = tmp_path / "face.png"
    Image.fromarray(astronaut()).save(src)
    sets = ["--set", "engine=openvino", "--set", "openvino_device=NPU", "--detector", "centerface"]
    r = cli("restore", src, "-o", tmp_path / "o.png", *sets, *weights.sets(), "--weights-dir", tmp_path / "w")
    assert r.code == 2 and "openvino_device = 'NPU' is not present here; OpenVINO sees CPU" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "o.png").exists()


def test_openvinos_compiled_cache_is_verified_like_the_exports(weights: Weights, tmp_path: Path) -> None:
    """A second engine for the same network loads OpenVINO's cached blob; a blob changed on disk is
    deleted and compiled again, never loaded; the results stay eager's."""
    model = load_model("gfpgan_v1_clean", weights.gfpgan)
    eager = GFPGANRestorer(model, CPU).restore(faces())
    GFPGANRestorer(model, CPU, maker("openvino", tmp_path, weights.gfpgan))
    folder = tmp_path / "openvino"
    (blob,) = folder.glob("*.blob")
    sums = json.loads((folder / "sums.json").read_text())
    assert sums == {blob.name: sha256_file(blob)}
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    again = GFPGANRestorer(model, CPU, maker("openvino", tmp_path, weights.gfpgan))
    (rewritten,) = folder.glob("*.blob")
    assert json.loads((folder / "sums.json").read_text())[rewritten.name] == sha256_file(rewritten)
    assert bytes(data) != rewritten.read_bytes()  # compiled anew, not the altered bytes
    assert psnr(again.restore(faces()), eager) >= 45


def test_model_threads_sets_the_threads_of_torch_and_of_every_engine(weights: Weights, tmp_path: Path) -> None:
    """``pipeline.model_threads`` is the CPU threads of every network: torch's, ONNX Runtime's
    session and OpenVINO's compiled model alike (0 leaves torch's count, which the engines take)."""
    from vidrestore.config import load_config
    from vidrestore.models.store import ModelStore
    from vidrestore.stages.assemble import build_face_stages

    sets = [f"restorer.weights={weights.gfpgan}", "restorer.parsing_mask=false", "detector.model=centerface"]
    sets += [f"upscaler.weights={weights.upscaler}", "restorer.engine=onnxruntime", "upscaler.engine=openvino"]
    kept = torch.get_num_threads()
    try:
        stages = build_face_stages(load_config(None, [*sets, "pipeline.model_threads=1"]), ModelStore(tmp_path / "w"))
        assert torch.get_num_threads() == 1
        assert stages.restore is not None and stages.restore.upscaler is not None
        session = stages.restore.restorer.net.session  # type: ignore[attr-defined]
        assert session.get_session_options().intra_op_num_threads == 1
        compiled = stages.restore.upscaler.net.compiled  # type: ignore[attr-defined]
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    finally:
        torch.set_num_threads(kept)
    stages = build_face_stages(load_config(None, sets), ModelStore(tmp_path / "w2"))
    assert stages.restore is not None and stages.restore.upscaler is not None
    assert torch.get_num_threads() == kept
    compiled = stages.restore.upscaler.net.compiled  # type: ignore[attr-defined]
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == kept


def test_an_engine_on_the_cpu_frees_the_torch_copy_of_its_weights_and_eager_gets_them_back(
    weights: Weights, tmp_path: Path
) -> None:
    """Once ONNX Runtime or OpenVINO holds a network's weights, torch's copy is freed (the CPU path
    never reads it); stages built again reuse the engine without loading it back, and a build that
    needs the module itself (here: eager) reads the weights from the file again, whole."""
    from vidrestore.config import load_config
    from vidrestore.models.store import ModelStore
    from vidrestore.stages.assemble import build_face_stages

    sets = [f"restorer.weights={weights.gfpgan}", f"restorer.parsing_weights={weights.parsenet}"]
    sets += [f"upscaler.weights={weights.upscaler}", "detector.model=centerface", "restorer.parsing_mask=true"]
    sets += ["restorer.engine=onnxruntime", "upscaler.engine=openvino"]
    store, loaded = ModelStore(tmp_path / "w"), {}  # type: ignore[var-annotated]
    face = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float() / 255
    first = build_face_stages(load_config(None, sets), store, loaded=loaded)
    assert first.restore is not None and first.restore.upscaler is not None and first.restore.parser is not None
    for net in (first.restore.restorer.model, first.restore.upscaler.model, first.restore.parser.model):
        assert sum(p.numel() for p in net.parameters()) == 0  # type: ignore[attr-defined]
    restored = first.restore.restorer.restore(face)
    again = build_face_stages(load_config(None, [*sets, "restorer.blend=0.5"]), store, loaded=loaded)
    assert again.restore is not None and again.restore.restorer.net is first.restore.restorer.net
    eager = build_face_stages(load_config(None, [*sets, "restorer.engine=eager"]), store, loaded=loaded)
    assert eager.restore is not None and eager.restore.restorer.net.name == "eager"
    model = eager.restore.restorer.model
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in load_model("gfpgan_v1_clean", weights.gfpgan).parameters()
    )
    assert psnr(eager.restore.restorer.restore(face), restored) >= 45
