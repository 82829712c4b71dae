from __future__ import annotations

import hashlib
import http.server
import sys
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from testkit.weights import save_random_weights
from vidrestore.errors import ModelError
from vidrestore.models.loading import load_model, read_state_dict
from vidrestore.models.registry import DEFAULT_REGISTRY, ModelRegistry, ModelSpec
from vidrestore.models.store import ModelStore, default_weights_dir, sha256_file

CHECKSUMS = {  # the confirmed values (shared/model-checksums.md); a typo in the registry fails here
    "gfpgan-1.4": "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
    "gfpgan-1.3": "c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
    "realesrgan-x4plus": "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
    "realesr-general-x4v3": "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
    "retinaface_resnet50": "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
    "parsenet": "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
    "restoreformer": "07404d446d62ca3d5ed38b1de09a947a1e77d46dbccec961a74d713a8f24ace0",
    "codeformer": "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
}


def test_registry_matches_confirmed_checksums_and_official_urls() -> None:
    for name, sha in CHECKSUMS.items():
        assert DEFAULT_REGISTRY[name].sha256 == sha, name
    for spec in DEFAULT_REGISTRY.values():
        assert spec.url.startswith("https://github.com/"), spec.name
        assert spec.url.endswith("/" + spec.filename)
        assert spec.size_mb > 0
    # not confirmed: kept without a checksum, so they are never fetched unverified
    assert DEFAULT_REGISTRY["realesrgan-x2plus"].sha256 is None
    assert DEFAULT_REGISTRY["retinaface_mobile0.25"].sha256 is None
    assert DEFAULT_REGISTRY["gfpgan-1.2"].sha256 is None


def test_spec_rejects_malformed_checksums() -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        ModelSpec("x", "restorer", "gfpgan_v1_clean", "x.pth", "https://h/x.pth", "ABC", 1.0, "")
    with pytest.raises(ValueError, match="registered twice"):
        spec = DEFAULT_REGISTRY["gfpgan-1.4"]
        ModelRegistry([spec, spec])


def test_weights_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIDRESTORE_WEIGHTS", str(tmp_path / "env"))
    assert default_weights_dir() == tmp_path / "env"
    assert default_weights_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("VIDRESTORE_WEIGHTS")
    assert default_weights_dir().parts[-2:] == ("vidrestore", "weights")


def _registry_for(payload: Path, url: str, sha: str | None) -> ModelRegistry:
    return ModelRegistry([ModelSpec("toy", "upscaler", "srvgg_compact", "toy.pth", url, sha, 0.1, "toy")])


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    return save_random_weights("srvgg_compact", tmp_path / "src" / "toy.pth", small=True, key="params")


def test_fetch_verifies_and_renames_into_place(tmp_path: Path, payload: Path) -> None:
    store = ModelStore(tmp_path / "cache", _registry_for(payload, payload.as_uri(), sha256_file(payload)))
    seen: list[tuple[int, int | None]] = []
    path = store.fetch("toy", progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "cache" / "toy.pth"
    assert path.read_bytes() == payload.read_bytes()
    assert seen and seen[-1][0] == payload.stat().st_size
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith(".part")] == []
    assert store.resolve("toy") == path


def test_tampered_download_is_rejected_and_leaves_nothing(tmp_path: Path, payload: Path) -> None:
    good = sha256_file(payload)
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))
    store = ModelStore(tmp_path / "cache", _registry_for(payload, payload.as_uri(), good))
    with pytest.raises(ModelError, match="failed verification"):
        store.fetch("toy")
    assert list((tmp_path / "cache").iterdir()) == []


def test_wrong_checksum_in_registry_is_caught(tmp_path: Path, payload: Path) -> None:
    wrong = hashlib.sha256(b"not the file").hexdigest()
    store = ModelStore(tmp_path / "cache", _registry_for(payload, payload.as_uri(), wrong))
    with pytest.raises(ModelError, match="failed verification"):
        store.fetch("toy")
    assert not (tmp_path / "cache" / "toy.pth").exists()


def test_tampered_cached_file_is_caught_at_load_time(tmp_path: Path, payload: Path) -> None:
    store = ModelStore(tmp_path / "cache", _registry_for(payload, payload.as_uri(), sha256_file(payload)))
    path = store.fetch("toy")
    assert store.resolve("toy") == path  # verified once, stamped
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError, match="does not match the checksum"):
        store.resolve("toy")


class _Truncating(http.server.BaseHTTPRequestHandler):
    body = b"x" * 5000

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[:1000])  # then hang up: a broken download

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Truncating)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/toy.pth"
    httpd.shutdown()


def test_partial_download_leaves_nothing_under_the_final_name(tmp_path: Path, server: str, payload: Path) -> None:
    store = ModelStore(tmp_path / "cache", _registry_for(payload, server, sha256_file(payload)))
    with pytest.raises(ModelError, match=r"stopped at 1000 of 5000 bytes|cannot download"):
        store.fetch("toy")
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_fetch_names_url_and_target(tmp_path: Path, payload: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    store = ModelStore(tmp_path / "cache", DEFAULT_REGISTRY)
    with pytest.raises(ModelError) as info:
        store.fetch("gfpgan-1.4")
    msg = str(info.value)
    assert DEFAULT_REGISTRY["gfpgan-1.4"].url in msg
    assert str(tmp_path / "cache" / "GFPGANv1.4.pth") in msg
    assert info.value.exit_code == 3


def test_missing_model_message_has_url_and_path(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, DEFAULT_REGISTRY)
    with pytest.raises(ModelError, match=r"vidrestore models fetch gfpgan-1\.4.*GFPGANv1\.4\.pth") as info:
        store.resolve("gfpgan-1.4")
    assert DEFAULT_REGISTRY["gfpgan-1.4"].url in str(info.value)
    with pytest.raises(ModelError, match="no confirmed checksum"):
        store.fetch("realesrgan-x2plus")


def test_local_weights_are_used_as_is(tmp_path: Path, payload: Path) -> None:
    store = ModelStore(tmp_path / "cache", DEFAULT_REGISTRY)
    assert store.resolve("realesr-general-x4v3", str(payload)) == payload  # no checksum asked of the user's file
    with pytest.raises(ModelError, match="does not exist"):
        store.resolve("realesr-general-x4v3", str(tmp_path / "nope.pth"))


# -- loading every registered architecture through the real loading code ------------------

ARCH_FILES = {
    "gfpgan-1.4": ("gfpgan_v1_clean", "params_ema"),
    "restoreformer": ("restoreformer", "params_ema"),
    "codeformer": ("codeformer", "params_ema"),
    "realesrgan-x4plus": ("rrdbnet", "params_ema"),
    "realesrgan-x2plus": ("rrdbnet_x2", "params_ema"),
    "realesr-general-x4v3": ("srvgg_compact", "params"),
    "retinaface_resnet50": ("retinaface", None),
    "retinaface_mobile0.25": ("retinaface_mobile", None),
    "parsenet": ("parsenet", None),
}


@pytest.mark.parametrize("name", sorted(ARCH_FILES))
def test_each_registered_architecture_loads_from_a_random_weight_file(name: str, tmp_path: Path) -> None:
    maker, key = ARCH_FILES[name]
    spec = DEFAULT_REGISTRY[name]
    # full-size networks, as released, with random weights, under the release file's name
    path = save_random_weights(maker, tmp_path / spec.filename, small=False, key=key)
    model = load_model(spec.arch, path)
    saved = read_state_dict(path)
    assert set(model.state_dict()) == set(saved)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert not model.training


def test_a_narrower_parsenet_file_is_built_to_its_own_widths(tmp_path: Path) -> None:
    """ParseNet's widths and depth come from the file: the release's (64 channels first, ten body
    blocks) and the test kit's narrow one both load strictly and give masks at 512 px."""
    small = load_model("parsenet", save_random_weights("parsenet", tmp_path / "s.pth", small=True, key=None))
    full = load_model("parsenet", save_random_weights("parsenet", tmp_path / "f.pth", small=False, key=None))
    assert len(small.body) == 2 and len(full.body) == 10  # type: ignore[arg-type]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters()) / 10
    with torch.no_grad():
        mask, img = small(torch.zeros(1, 3, 512, 512))
    assert mask.shape == (1, 19, 512, 512) and img.shape == (1, 3, 512, 512)


def test_gfpgan_12_and_13_use_the_same_family() -> None:
    assert DEFAULT_REGISTRY["gfpgan-1.3"].arch == DEFAULT_REGISTRY["gfpgan-1.4"].arch
    assert DEFAULT_REGISTRY["gfpgan-1.2"].arch == DEFAULT_REGISTRY["gfpgan-1.4"].arch


def test_small_variants_are_recognised_from_their_shapes(tmp_path: Path) -> None:
    path = save_random_weights("gfpgan_v1_clean", tmp_path / "g.pth", small=True)
    model = load_model("gfpgan_v1_clean", path)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


def test_corrupt_and_wrong_files_give_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError, match=r"junk\.pth is not a readable PyTorch weights file"):
        load_model("gfpgan_v1_clean", junk)
    other = save_random_weights("srvgg_compact", tmp_path / "esr.pth", small=True, key="params")
    with pytest.raises(ModelError, match=r"esr\.pth does not fit the gfpgan_v1_clean architecture"):
        load_model("gfpgan_v1_clean", other)


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "x": Evil()}, path)
    with pytest.raises(ModelError, match="not a readable PyTorch weights file"):
        read_state_dict(path)


def test_basicsr_imports_with_current_torchvision() -> None:
    from vidrestore.models.compat import import_research_module

    module = import_research_module("basicsr.archs.rrdbnet_arch")
    assert hasattr(module, "RRDBNet")
    assert "torchvision.transforms.functional_tensor" in sys.modules


def test_default_fetch_list_and_its_size_match_the_readme() -> None:
    from vidrestore.config import Config
    from vidrestore.models.usage import models_for

    names = models_for(Config())
    assert names == ["retinaface_resnet50", "gfpgan-1.4", "parsenet", "realesr-general-x4v3"]
    total = sum(DEFAULT_REGISTRY[n].size_mb for n in names)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"~{total:.0f} MB" in readme


def test_gfpgan_runs_its_modulated_convolutions_batched_with_the_same_result(tmp_path: Path) -> None:
    """The loader swaps StyleGAN2's per-sample grouped convolution for one batched convolution
    (vidrestore/models/speedups.py): same arithmetic, so the same faces to float rounding."""
    from testkit.weights import _model

    path = save_random_weights("gfpgan_v1_clean", tmp_path / "g.pth", small=True, scale=0.5)
    fast = load_model("gfpgan_v1_clean", path)
    plain = _model("gfpgan_v1_clean", small=True).eval()
    plain.load_state_dict(read_state_dict(path))
    kinds = {type(m).__name__ for m in fast.modules()}
    assert "BatchedModulatedConv2d" in kinds and "ModulatedConv2d" not in kinds
    x = torch.rand(3, 3, 512, 512) * 2 - 1
    with torch.inference_mode():
        a, _ = fast(x, return_rgb=False, randomize_noise=False)
        b, _ = plain(x, return_rgb=False, randomize_noise=False)
    assert torch.allclose(a, b, atol=1e-5)
    with torch.inference_mode():  # and each face of a batch is what it is alone
        (one, _) = fast(x[1:2], return_rgb=False, randomize_noise=False)
    assert torch.allclose(one, a[1:2], atol=1e-5)
