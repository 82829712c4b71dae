"""The restorers besides GFPGAN v1.4: each against its own reference inference, same weights and detector.

GFPGAN v1.2/v1.3 share v1.4's architecture (its fidelity test is in ``test_restore.py``);
RestoreFormer is compared with the ``gfpgan`` package's ``GFPGANer(arch="RestoreFormer")`` loop,
CodeFormer with its own inference script's loop on facexlib's helper.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import CliResult, Weights, assert_one_line_error, psnr, restore_still

from testkit.clips import astronaut
from testkit.weights import reference_codeformer, reference_gfpganer, save_random_weights
from vidrestore.device import Placement
from vidrestore.geometry import estimate_similarity, invert, template, transformed_bounds
from vidrestore.models.loading import load_model
from vidrestore.models.registry import DEFAULT_REGISTRY
from vidrestore.stages.detect import CenterFaceDetector
from vidrestore.stages.networks import CodeFormerRestorer, GFPGANRestorer, build_restorer

Cli = Callable[..., CliResult]
CPU = Placement(torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def restoreformer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_weights("restoreformer", tmp_path_factory.mktemp("rf") / "RestoreFormer.pth", small=True)


@pytest.fixture(scope="session")
def codeformer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # as released (spandrel's class has one size), under the release's key
    return save_random_weights("codeformer", tmp_path_factory.mktemp("cf") / "codeformer.pth", small=False)


def _still() -> np.ndarray:
    return np.ascontiguousarray(np.pad(astronaut(), ((40, 40), (60, 60), (0, 0)), mode="reflect"))


def _face_region(img: np.ndarray) -> tuple[int, int, int, int]:
    (d,) = CenterFaceDetector(threshold=0.5).detect([img])
    m = invert(estimate_similarity(d.landmarks[0], template(512)))
    return transformed_bounds(m, 512, 512, img.shape[1], img.shape[0])


def _ours(img: np.ndarray, weights: Weights, model: str, file: Path, *extra: str) -> np.ndarray:
    return restore_still(
        img,
        f"restorer.model={model}",
        f"restorer.weights={file}",
        f"restorer.parsing_weights={weights.parsenet}",
        "restorer.parsing_size=512",  # as the references parse (the default 256 is checked with GFPGAN)
        *extra,
    )


@pytest.mark.slow
def test_restoreformer_matches_gfpganer_on_a_still(weights: Weights, restoreformer_file: Path) -> None:
    ref = reference_gfpganer(
        load_model("restoreformer", restoreformer_file),
        load_model("parsenet", weights.parsenet),
        CenterFaceDetector(threshold=0.5),
    )
    img = _still()
    _, _, expected_bgr = ref.enhance(img[:, :, ::-1].copy(), paste_back=True)
    expected = expected_bgr[:, :, ::-1]
    ours = _ours(img, weights, "restoreformer", restoreformer_file)
    x0, y0, x1, y1 = _face_region(img)
    assert not np.array_equal(expected[y0:y1, x0:x1], img[y0:y1, x0:x1])
    value = psnr(ours[y0:y1, x0:x1], expected[y0:y1, x0:x1])
    assert value >= 40, f"PSNR {value:.1f} dB"


@pytest.mark.slow
def test_codeformer_matches_its_inference_script_at_each_fidelity(weights: Weights, codeformer_file: Path) -> None:
    net = load_model("codeformer", codeformer_file)
    parser = load_model("parsenet", weights.parsenet)
    img = _still()
    x0, y0, x1, y1 = _face_region(img)
    ours = {}
    for w in (0.0, 1.0):
        expected = reference_codeformer(net, parser, CenterFaceDetector(threshold=0.5), w)(img[:, :, ::-1].copy())
        expected = expected[:, :, ::-1]
        ours[w] = _ours(img, weights, "codeformer", codeformer_file, f"restorer.fidelity={w}")
        value = psnr(ours[w][y0:y1, x0:x1], expected[y0:y1, x0:x1])
        assert value >= 40, f"w={w}: PSNR {value:.1f} dB"
    # the knob reaches the network: the two restorations differ on the face
    diff = np.abs(ours[0.0][y0:y1, x0:x1].astype(int) - ours[1.0][y0:y1, x0:x1].astype(int)).mean()
    assert diff > 1.0, diff


def test_each_restorer_says_what_it_needs(restoreformer_file: Path, codeformer_file: Path) -> None:
    rf = build_restorer("restoreformer", load_model("restoreformer", restoreformer_file), CPU)
    assert isinstance(rf, GFPGANRestorer) and rf.size == 512 and rf.needs.value_range == (-1.0, 1.0)
    half = Placement(torch.device("cpu"), torch.float16)
    cf = build_restorer("codeformer", load_model("codeformer", codeformer_file), half, fidelity=0.7)
    assert isinstance(cf, CodeFormerRestorer) and cf.fidelity == 0.7
    assert not cf.needs.fp16 and cf.needs.knobs == ("restorer.fidelity",)
    assert cf.dtype == torch.float32  # fp16 is not safe for CodeFormer; no bf16 on this device either
    faces = torch.rand(2, 3, 512, 512)
    out = rf.restore(faces)
    assert out.shape == faces.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ValueError, match="not a face restorer"):
        build_restorer("rrdbnet", torch.nn.Identity(), CPU)


def test_every_restorer_in_the_registry_has_a_card_and_a_loader() -> None:
    from vidrestore.models.loading import _BUILDERS

    restorers = [s for s in DEFAULT_REGISTRY.values() if s.role == "restorer"]
    assert {s.name for s in restorers} == {"gfpgan-1.4", "gfpgan-1.3", "gfpgan-1.2", "restoreformer", "codeformer"}
    for s in restorers:
        assert s.arch in _BUILDERS and s.licence and s.params_m > 0 and s.good_at and s.input_size
    assert DEFAULT_REGISTRY["gfpgan-1.2"].sha256 is None  # no confirmed checksum: never fetched
    assert "non-commercial" in DEFAULT_REGISTRY["codeformer"].licence
    assert DEFAULT_REGISTRY["codeformer"].extra == "codeformer"


def test_models_list_shows_cards_and_the_codeformer_licence(cli: Cli) -> None:
    r = cli("models", "list")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    row = next(i for i, ln in enumerate(lines) if ln.startswith("codeformer "))
    assert "NTU S-Lab License 1.0" in lines[row]
    card = lines[row + 1]
    assert "94.1 M parameters" in card and "512x512" in card and "non-commercial" in card
    assert "pip install 'vidrestore[codeformer]'" in card
    assert any(ln.startswith("restoreformer ") and "Apache-2.0" in ln for ln in lines)


def test_a_wrong_checksum_is_caught_for_the_new_restorers(tmp_path: Path, codeformer_file: Path) -> None:
    from vidrestore.errors import ModelError
    from vidrestore.models.store import ModelStore

    store = ModelStore(tmp_path / "w")
    for name, arch in (("restoreformer", "restoreformer"), ("codeformer", "codeformer")):
        path = store.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if arch == "codeformer":
            path.write_bytes(codeformer_file.read_bytes())  # a real CodeFormer file, but not the released one
        else:
            save_random_weights(arch, path, small=True)
        with pytest.raises(ModelError, match="does not match the checksum"):
            store.resolve(name)


def test_codeformer_without_the_extra_is_exit_2_with_the_install_command(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m.startswith("spandrel")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)  # an import of it fails
    src = tmp_path / "face.png"
    cv2.imwrite(str(src), astronaut()[:, :, ::-1])
    r = cli("restore", src, "-o", tmp_path / "out.png", "--restorer", "codeformer", "--detector", "centerface")
    assert r.code == 2
    assert_one_line_error(r.err)
    assert "pip install 'vidrestore[codeformer]'" in r.err and "non-commercial" in r.err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
def test_codeformer_licence_is_said_once_and_fidelity_is_in_the_report(
    cli: Cli, tmp_path: Path, codeformer_file: Path
) -> None:
    src = tmp_path / "face.png"
    cv2.imwrite(str(src), astronaut()[:, :, ::-1])
    args = [
        "restore",
        src,
        "--restorer",
        "codeformer",
        "--fidelity",
        "0.8",
        "--detector",
        "centerface",
        "--set",
        f"restorer.weights={codeformer_file}",
        "--set",
        "restorer.parsing_mask=false",
        "--set",
        "upscaler.model=none",
    ]
    report = tmp_path / "r.json"
    first = cli(*args, "-o", tmp_path / "a.png", "--report", report)
    assert first.code == 0, first.err
    assert first.err.count("NTU S-Lab License 1.0") == 1
    data = json.loads(report.read_text())
    assert data["config"]["restorer"]["model"] == "codeformer"
    assert data["config"]["restorer"]["fidelity"] == 0.8
    assert data["counts"]["faces_restored"] == 1
    second = cli(*args, "-o", tmp_path / "b.png")
    assert second.code == 0, second.err
    assert "NTU S-Lab" not in second.err  # said once, at first use
