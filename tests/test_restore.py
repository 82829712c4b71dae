"""Upscale, align, restore, paste back: pixel-level promises, on small real-architecture models."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import Weights, psnr, restore_still

from testkit.clips import astronaut
from vidrestore.device import Placement
from vidrestore.errors import PipelineError
from vidrestore.geometry import estimate_similarity, invert, template, transformed_bounds
from vidrestore.models.loading import load_model
from vidrestore.records import Face, Frame
from vidrestore.stages.detect import CenterFaceDetector, RetinaFaceDetector
from vidrestore.stages.networks import FaceParser, GFPGANRestorer, Upscaler
from vidrestore.stages.picture import RgbPicture
from vidrestore.stages.restore import RestoreStage

CPU = Placement(torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def restorer(weights: Weights) -> GFPGANRestorer:
    return GFPGANRestorer(load_model("gfpgan_v1_clean", weights.gfpgan), CPU)


@pytest.fixture(scope="module")
def upscaler(weights: Weights) -> Upscaler:
    return Upscaler(load_model("srvgg_compact", weights.upscaler), CPU)


def face_of(image: np.ndarray, track_id: int = 0) -> Face:
    (d,) = CenterFaceDetector(threshold=0.5).detect([image])
    return Face(track_id, float(d.scores[0]), d.boxes[0], d.landmarks[0], d.landmarks[0].copy())


def frame_with(image: np.ndarray, faces: tuple[Face, ...], index: int = 0) -> Frame:
    return Frame(index, index, Fraction(1, 25), image, faces=faces)


def region_of(face: Face, size: int, w: int, h: int) -> tuple[int, int, int, int]:
    return transformed_bounds(invert(estimate_similarity(face.landmarks, template(size))), size, size, w, h)


def test_frame_without_faces_is_bit_identical(restorer: GFPGANRestorer) -> None:
    img = astronaut()
    stage = RestoreStage(restorer, CPU.device)
    (out,) = list(stage.run(iter([frame_with(img, ())])))
    assert out.image is img or np.array_equal(out.image, img)


def test_pixels_outside_the_face_region_are_untouched(restorer: GFPGANRestorer) -> None:
    img = np.ascontiguousarray(np.pad(astronaut(), ((0, 100), (0, 300), (0, 0)), mode="edge"))
    face = face_of(img)
    (out,) = list(RestoreStage(restorer, CPU.device).run(iter([frame_with(img, (face,))])))
    x0, y0, x1, y1 = region_of(face, restorer.size, img.shape[1], img.shape[0])
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out.image[outside], img[outside])
    assert not np.array_equal(out.image[y0:y1, x0:x1], img[y0:y1, x0:x1])  # and the face did change
    assert outside.sum() > 0.5 * outside.size


def test_blend_zero_keeps_the_original_exactly(restorer: GFPGANRestorer) -> None:
    img = astronaut()
    (out,) = list(RestoreStage(restorer, CPU.device, blend=0.0).run(iter([frame_with(img, (face_of(img),))])))
    assert np.array_equal(out.image, img)


def test_batches_give_the_same_pixels_as_one_at_a_time(restorer: GFPGANRestorer) -> None:
    base = astronaut()
    frames = []
    for i in range(5):
        img = np.ascontiguousarray(np.roll(base, 7 * i, axis=1))
        frames.append(frame_with(img, (face_of(img),), index=i))
    one = list(RestoreStage(restorer, CPU.device, batch_size=1, max_frames=1).run(iter(frames)))
    batched = list(RestoreStage(restorer, CPU.device, batch_size=4, max_frames=8).run(iter(frames)))
    assert [f.index for f in batched] == list(range(5))
    for a, b in zip(one, batched):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1


def test_same_input_gives_the_same_output(restorer: GFPGANRestorer) -> None:
    img = astronaut()
    face = face_of(img)
    a = next(iter(RestoreStage(restorer, CPU.device).run(iter([frame_with(img, (face,))]))))
    b = next(iter(RestoreStage(restorer, CPU.device).run(iter([frame_with(img, (face,))]))))
    assert np.array_equal(a.image, b.image)  # randomize_noise=False: no flicker from fresh noise


def test_small_faces_are_upscaled_on_their_crop_only(restorer: GFPGANRestorer, upscaler: Upscaler) -> None:
    frame_img = np.full((480, 640, 3), 90, np.uint8)
    small = cv2.resize(astronaut(), (96, 96), interpolation=cv2.INTER_AREA)
    frame_img[200:296, 300:396] = small
    face = face_of(frame_img)
    assert face.size < 40
    seen: list[tuple[int, ...]] = []
    hook = upscaler.model.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        stage = RestoreStage(restorer, CPU.device, upscaler=upscaler, upscale_below=64, margin=0.5)
        (out,) = list(stage.run(iter([frame_with(frame_img, (face,))])))
    finally:
        hook.remove()
    assert len(seen) == 1
    _, _, h, w = seen[0]
    assert h <= 2 * face.size + 2 and w <= 2 * face.size + 2  # the crop around the face, never 480x640
    assert stage.stats.faces_upscaled == 1 and stage.stats.faces_restored == 1
    big = face_of(astronaut())
    stage2 = RestoreStage(restorer, CPU.device, upscaler=upscaler, upscale_below=64)
    list(stage2.run(iter([frame_with(astronaut(), (big,))])))
    assert stage2.stats.faces_upscaled == 0  # large faces go straight to the restorer
    assert out.image.shape == frame_img.shape


class Scripted:
    """A restorer that fails as told, then runs the real one."""

    def __init__(self, real: GFPGANRestorer, fail: object) -> None:
        self.real, self.fail, self.size, self.calls = real, fail, real.size, 0
        self.needs = real.needs

    def restore(self, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        self.calls += 1
        error = self.fail(faces, fp32, self.calls)  # type: ignore[operator]
        if error is not None:
            raise error
        return self.real.restore(faces, fp32=fp32)


def _frames(n: int) -> list[Frame]:
    img = astronaut()
    return [frame_with(img, (face_of(img),), i) for i in range(n)]


def test_out_of_memory_splits_the_batch_and_restores_every_face(restorer: GFPGANRestorer) -> None:
    flaky = Scripted(restorer, lambda faces, fp32, n: torch.OutOfMemoryError("simulated") if len(faces) > 1 else None)
    stage = RestoreStage(flaky, CPU.device, batch_size=4)  # type: ignore[arg-type]
    out = list(stage.run(iter(_frames(4))))
    assert [f.index for f in out] == [0, 1, 2, 3]
    assert stage.stats.faces_restored == 4 and stage.stats.faces_failed == 0
    assert flaky.calls == 1 + 2 + 4  # 4 -> 2 + 2 -> 1 + 1 + 1 + 1


def test_out_of_memory_on_a_single_face_stops_the_run_naming_the_frame(restorer: GFPGANRestorer) -> None:
    flaky = Scripted(restorer, lambda faces, fp32, n: torch.OutOfMemoryError("simulated"))
    stage = RestoreStage(flaky, CPU.device, batch_size=1)  # type: ignore[arg-type]
    with pytest.raises(PipelineError, match=r"frame 0.*out of memory") as err:
        list(stage.run(iter(_frames(2))))
    assert err.value.stage == "restore" and err.value.frame_index == 0


def test_a_device_error_stops_the_run_naming_the_frame_being_restored(restorer: GFPGANRestorer) -> None:
    def on_the_sixth(faces: torch.Tensor, fp32: bool, n: int) -> Exception | None:
        return RuntimeError("CUDA error: an illegal memory access was encountered") if n == 6 else None

    stage = RestoreStage(Scripted(restorer, on_the_sixth), CPU.device, batch_size=1)  # type: ignore[arg-type]
    done = []
    with pytest.raises(PipelineError, match="illegal memory access") as err:
        for frame in stage.run(iter(_frames(8))):
            done.append(frame.index)
    assert err.value.frame_index == 5 and done == [0, 1, 2, 3, 4]  # the sixth face is frame 5's
    assert stage.stats.faces_failed == 0  # nothing was quietly kept as it was
    # in batches, the error names the batch's frames (here the second group of four)
    grouped = RestoreStage(
        Scripted(restorer, lambda f, fp32, n: on_the_sixth(f, fp32, n + 4)), CPU.device, batch_size=4
    )  # type: ignore[arg-type]
    with pytest.raises(PipelineError, match="frames 4-7") as err:
        list(grouped.run(iter(_frames(8))))
    assert err.value.frame_index == 4


def test_a_nan_batch_is_retried_in_fp32_and_restored(weights: Weights) -> None:
    model = load_model("gfpgan_v1_clean", weights.gfpgan)
    # half precision that overflows: NaN out whenever the network runs in bf16
    model.register_forward_hook(
        lambda m, args, out: (out[0] * float("nan"), *out[1:]) if args[0].dtype == torch.bfloat16 else out
    )
    half = GFPGANRestorer(model, Placement(torch.device("cpu"), torch.bfloat16))
    stage = RestoreStage(half, CPU.device, batch_size=2)
    img = astronaut()
    out = list(stage.run(iter(_frames(2))))
    assert stage.stats.faces_restored == 2 and stage.stats.faces_failed == 0
    assert all(not np.array_equal(f.image, img) and np.isfinite(f.image).all() for f in out)
    assert half._full is not None and next(half._full.parameters()).dtype == torch.float32


def test_nan_even_in_fp32_keeps_the_original_face_with_a_warning(restorer: GFPGANRestorer) -> None:
    from vidrestore.stages.networks import NonFiniteOutput

    broken = Scripted(restorer, lambda faces, fp32, n: NonFiniteOutput("the restorer produced NaN/inf values"))
    stage = RestoreStage(broken, CPU.device, batch_size=1)  # type: ignore[arg-type]
    (out,) = list(stage.run(iter(_frames(1))))
    assert np.array_equal(out.image, astronaut())
    assert stage.stats.faces_failed == 1 and broken.calls == 2  # once as it is, once in fp32


def test_parsing_mask_path(restorer: GFPGANRestorer, weights: Weights) -> None:
    parser = FaceParser(load_model("parsenet", weights.parsenet), CPU)
    img = astronaut()
    face = face_of(img)
    (out,) = list(RestoreStage(restorer, CPU.device, parser=parser).run(iter([frame_with(img, (face,))])))
    assert out.image.shape == img.shape and out.image.dtype == np.uint8


def test_deep_frames_stay_deep(restorer: GFPGANRestorer) -> None:
    img16 = astronaut().astype(np.uint16) * 257
    face = face_of(astronaut())
    (out,) = list(RestoreStage(restorer, CPU.device).run(iter([frame_with(img16, (face,))])))
    assert out.image.dtype == np.uint16
    _x0, y0, _x1, _y1 = region_of(face, restorer.size, 512, 512)
    assert np.array_equal(out.image[:y0], img16[:y0])


# -- fidelity to the gfpgan package's own per-frame loop ------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "gfpgan-1.4",
        pytest.param("gfpgan-1.3", marks=pytest.mark.slow),
        pytest.param("gfpgan-1.2", marks=pytest.mark.slow),
    ],
)  # the same network and loop: 1.4 in the default run, the other weights with -m slow
def test_matches_gfpganer_enhance_on_a_still(weights: Weights, model: str) -> None:
    """GFPGANer builds v1.2, v1.3 and v1.4 alike (arch "clean"): each name, the package's own loop."""
    from testkit.weights import reference_gfpganer

    ref = reference_gfpganer(
        load_model("gfpgan_v1_clean", weights.gfpgan),
        load_model("parsenet", weights.parsenet),
        CenterFaceDetector(threshold=0.5),
    )
    img = np.ascontiguousarray(np.pad(astronaut(), ((40, 40), (60, 60), (0, 0)), mode="reflect"))
    _, _, expected_bgr = ref.enhance(img[:, :, ::-1].copy(), paste_back=True)
    expected = expected_bgr[:, :, ::-1]

    ours = restore_still(
        img,
        f"restorer.model={model}",
        f"restorer.weights={weights.gfpgan}",
        f"restorer.parsing_weights={weights.parsenet}",  # parsing mask on (the default), at 256 px
    )
    face = face_of(img)
    x0, y0, x1, y1 = region_of(face, 512, img.shape[1], img.shape[0])
    assert not np.array_equal(expected[y0:y1, x0:x1], img[y0:y1, x0:x1])
    value = psnr(ours[y0:y1, x0:x1], expected[y0:y1, x0:x1])
    assert value >= 40, f"PSNR {value:.1f} dB"


@pytest.mark.parametrize(("h", "w"), [(33, 47), (34, 47), (31, 30)])
def test_an_upscaler_that_needs_even_sides_gets_odd_crops_padded_and_cut_back(
    tmp_path_factory: pytest.TempPathFactory, h: int, w: int
) -> None:
    from testkit.weights import save_random_weights

    path = save_random_weights("rrdbnet_x2", tmp_path_factory.mktemp("x2") / "x2.pth", small=True)
    x2 = Upscaler(load_model("rrdbnet", path), CPU)
    assert x2.scale == 2 and x2.multiple == 2
    crop = torch.rand(1, 3, h, w)
    out = x2.upscale(crop)
    assert out.shape == (1, 3, 2 * h, 2 * w)
    if h % 2 == 0 and w % 2 == 0:
        return
    even = x2.upscale(torch.nn.functional.pad(crop, (0, w % 2, 0, h % 2), mode="replicate"))
    assert torch.equal(out, even[..., : 2 * h, : 2 * w])  # the padding only adds pixels that are cut off


@pytest.mark.parametrize("factor", [4, 2])
def test_a_picture_finished_tile_by_tile_matches_one_upscaled_whole(upscaler: Upscaler, factor: int) -> None:
    """Tiles are resized and converted as they come (so a big picture never exists as floats): the
    result is the whole-picture result, the x4 model resized to x2 included, within one level."""
    import torch.nn.functional as F

    image = torch.rand(1, 3, 70, 90)

    def finish(t: torch.Tensor) -> torch.Tensor:
        return (t[0].clamp(0, 1) * 255).round().permute(1, 2, 0).to(torch.uint8)

    tiled = upscaler.upscale_tiled(image, 32, finish, factor=factor)
    whole = upscaler.upscale(image)
    if factor != upscaler.scale:
        whole = F.interpolate(
            whole, size=(70 * factor, 90 * factor), mode="bicubic", antialias=True, align_corners=False
        )
    assert tiled.shape == (70 * factor, 90 * factor, 3) and tiled.dtype == torch.uint8
    assert (tiled.int() - finish(whole).int()).abs().max() <= 1


def test_the_device_resident_path_gives_the_pixels_of_the_per_face_path(tmp_path: Path) -> None:
    """Against tests/data/restore-reference.npz, made by the earlier path (per-face uploads, paste-back
    on a host copy, ParseNet per frame): the same faces, and every other pixel bit for bit."""
    import make_restore_reference as ref

    expected = list(np.load(Path(__file__).parent / "data" / "restore-reference.npz").values())
    got = ref.run(tmp_path)
    images, _ = ref.scene()
    for img, want, out in zip(images, expected, got):
        changed = np.any(want != img, axis=2) | np.any(out != img, axis=2)
        assert changed.any()
        assert np.array_equal(out[~changed], want[~changed])  # outside the faces: untouched, as before
        assert psnr(out[changed], want[changed]) >= 50


def test_each_picture_with_faces_crosses_to_the_device_and_back_once(restorer: GFPGANRestorer) -> None:
    img = astronaut()
    frames = [
        frame_with(img, (face_of(img), face_of(img, 1)), 0),
        frame_with(img, (), 1),
        frame_with(img, (face_of(img),), 2),
    ]
    stage = RestoreStage(restorer, CPU.device, batch_size=8)
    out = list(stage.run(iter(frames)))
    assert [f.index for f in out] == [0, 1, 2]
    assert (stage.io.uploads, stage.io.downloads) == (2, 2)  # the face-less frame never moves
    assert out[1].image is img


# -- batched work on the device -------------------------------------------------------------


def test_one_batched_warp_gives_what_one_warp_per_source_gives() -> None:
    """Sources of different sizes padded into one batch sample exactly what each alone would."""
    from vidrestore.geometry import warp, warp_batch
    from vidrestore.stages.align import pad_stack as _pad_stack

    gen = torch.Generator().manual_seed(0)
    sources = [torch.rand(3, h, w, generator=gen) for h, w in ((40, 52), (33, 47), (51, 38))]
    ms = [np.array([[0.8 + 0.1 * i, 0.1, 2.0 - i], [-0.1, 0.9, 1.5 * i]]) for i in range(3)]
    border = torch.tensor((0.5, 0.4, 0.3)).view(3, 1, 1)
    batched = warp_batch(_pad_stack([s - border for s in sources]), ms, 64, 64) + border
    for one, src, m in zip(batched, sources, ms):
        alone = warp(src, m, 64, 64, border=(0.5, 0.4, 0.3))
        assert torch.allclose(one, alone, atol=1e-5)


def test_buckets_keep_padding_waste_bounded() -> None:
    from vidrestore.stages.align import buckets as _buckets

    shapes = [(100, 100), (98, 101), (30, 30), (400, 380), (29, 31), (95, 99)]
    buckets = _buckets(shapes)
    assert sorted(i for b in buckets for i in b) == list(range(len(shapes)))
    for b in buckets:
        h, w = max(shapes[i][0] for i in b), max(shapes[i][1] for i in b)
        assert all(h * w <= 2 * shapes[i][0] * shapes[i][1] for i in b)
    assert len(buckets) == 3  # the large face, the three ~100 px ones, the two ~30 px ones


def _two_faces_per_frame(n: int) -> list[Frame]:
    """``n`` frames of two astronaut faces each: one large, one small enough to be upscaled."""
    import make_restore_reference as ref

    images, marks = ref.scene()
    frames = []
    for i in range(n):
        per = marks[i % 2]
        faces = tuple(
            Face(k, 0.99, np.concatenate([lm.min(0) - 20, lm.max(0) + 20]).astype(np.float32), lm, lm)
            for k, lm in enumerate(per)
        )
        frames.append(frame_with(images[i % 2], faces, i))
    return frames


def test_small_faces_of_one_crop_size_are_upscaled_in_one_batch_with_the_same_pixels(
    restorer: GFPGANRestorer, upscaler: Upscaler
) -> None:
    seen: list[tuple[int, ...]] = []
    hook = upscaler.model.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        frames = _two_faces_per_frame(4)
        one = RestoreStage(restorer, CPU.device, upscaler=upscaler, upscale_below=64, batch_size=1, max_frames=1)
        singly = [f.image for f in one.run(iter(frames))]
        calls_singly = len(seen)
        seen.clear()
        batched = RestoreStage(restorer, CPU.device, upscaler=upscaler, upscale_below=64, batch_size=8)
        together = [f.image for f in batched.run(iter(frames))]
    finally:
        hook.remove()
    assert calls_singly == 4 and batched.stats.faces_upscaled == 4
    # the four small faces' crops have one size here: one call of four
    assert [s[0] for s in seen] == [4]
    for a, b in zip(singly, together):
        changed = np.any(a != frames[0].image, axis=2) | np.any(b != frames[0].image, axis=2)
        assert psnr(a[changed], b[changed]) >= 50


def test_network_output_is_looked_at_once_per_group_not_per_batch(
    restorer: GFPGANRestorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading back waits for the device: per group of frames the host looks twice, once at the
    restorer's flags (all batches together) and once at the finished pictures (all frames together),
    never per batch, face or frame. Counted by Transfers, which every read goes through."""
    import vidrestore.stages.restore as restore_module

    reads: list[int] = []
    real = restore_module._not_finite
    monkeypatch.setattr(restore_module, "_not_finite", lambda flags, io: reads.append(len(flags)) or real(flags, io))
    counting = Scripted(restorer, lambda faces, fp32, n: None)
    img = astronaut()
    three = (face_of(img, 0), face_of(img, 1), face_of(img, 2))
    stage = RestoreStage(counting, CPU.device, batch_size=2)  # type: ignore[arg-type]
    frames = [frame_with(img, three, i) for i in range(4)]
    list(stage.run(iter(frames)))  # each frame is a group (its 3 faces fill a batch of 2)
    assert reads == [2, 2, 2, 2]  # each group: two batches, one read of their flags
    assert stage.io.readbacks == 2 * 4  # + one wait for the group's pictures
    assert stage.io.downloads == 4 and stage.io.uploads == 4  # each picture crossed once each way
    assert stage.stats.faces_restored == 12


def test_an_upscaler_giving_nan_leaves_that_face_to_be_restored_from_the_frame(
    restorer: GFPGANRestorer, weights: Weights
) -> None:
    import logging

    class Kept(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    model = load_model("srvgg_compact", weights.upscaler)
    model.register_forward_hook(lambda m, args, out: out * float("nan"))
    stage = RestoreStage(restorer, CPU.device, upscaler=Upscaler(model, CPU), upscale_below=64, batch_size=4)
    kept, logger = Kept(), logging.getLogger("vidrestore.stages.align")  # the CLI tests stop propagation
    logger.addHandler(kept)
    try:
        out = list(stage.run(iter(_two_faces_per_frame(2))))
    finally:
        logger.removeHandler(kept)
    assert stage.stats.faces_upscaled == 0 and stage.stats.faces_restored == 4 and stage.stats.faces_failed == 0
    assert all(np.isfinite(f.image).all() for f in out)
    assert sum("the upscaler gave NaN/inf" in r.getMessage() for r in kept.records) == 2


def test_small_faces_upscaled_first_cost_no_extra_wait(restorer: GFPGANRestorer, weights: Weights) -> None:
    """The upscaler's flags are read with the restorer's: still two waits per group."""
    model = load_model("srvgg_compact", weights.upscaler)
    stage = RestoreStage(restorer, CPU.device, upscaler=Upscaler(model, CPU), upscale_below=64, batch_size=4)
    out = list(stage.run(iter(_two_faces_per_frame(2))))  # one group: 4 faces fill the batch
    assert len(out) == 2 and stage.stats.faces_upscaled == 2 and stage.stats.faces_restored == 4  # one small each
    assert stage.io.readbacks == 2


def test_whole_stages_move_each_picture_a_bounded_number_of_times(face_clip: Any, weights: Weights) -> None:
    """Each frame goes up once, with its detection batch (RetinaFace), and the restore stage works on
    that same copy; a frame with faces comes back once, frames without faces never. Counted where
    pictures move."""
    from testkit.weights import save_random_weights
    from vidrestore import load_config
    from vidrestore.control import RunControl
    from vidrestore.io.reader import VideoReader
    from vidrestore.models.store import ModelStore
    from vidrestore.stages.assemble import build_face_stages

    det = save_random_weights("retinaface_mobile", face_clip.path.parent / "det.pth", key=None, seed=3)
    sets = weights.sets()[1::2]
    config = load_config(None, [*sets, "detector.model=retinaface_mobile0.25", f"detector.weights={det}"])
    stages = build_face_stages(config, ModelStore(face_clip.path.parent / "models"))
    centerface, retinaface = CenterFaceDetector(), stages.detector
    assert isinstance(retinaface, RetinaFaceDetector)

    class Both:  # RetinaFace's cost and uploads on every frame, CenterFace's faces (random weights find none)
        io = retinaface.io

        def detect(self, images: list[np.ndarray], sar: float = 1.0) -> list[Any]:
            from dataclasses import replace

            found = zip(retinaface.detect(images, sar), centerface.detect(images, sar), strict=True)
            return [replace(c, thumb=r.thumb, picture=r.picture) for r, c in found]

    stages.detector = Both()
    reader = VideoReader(face_clip.path, RunControl())
    try:
        out = list(stages(iter(reader)))
    finally:
        reader.close()
    with_faces = sum(1 for f in out if f.faces)
    assert len(out) == 20 and with_faces >= 15
    assert stages.transfers() == (len(out), with_faces)
    assert stages.restore is not None and stages.restore.io.uploads == 0
    assert all(f.on_device is None for f in out)  # nothing device-side leaves the stages


def test_an_upscaler_error_stops_the_run_naming_the_group_of_frames(restorer: GFPGANRestorer, weights: Weights) -> None:
    model = load_model("srvgg_compact", weights.upscaler)

    def broken(m: object, args: object, out: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    model.register_forward_hook(broken)
    stage = RestoreStage(restorer, CPU.device, upscaler=Upscaler(model, CPU), upscale_below=64, batch_size=4)
    with pytest.raises(PipelineError, match=r"frame 0: RuntimeError: CUDA error.*\(working on frames 0-1 together\)"):
        list(stage.run(iter(_two_faces_per_frame(2))))


def test_a_picture_uploaded_for_detection_is_restored_in_place_without_a_second_upload(
    restorer: GFPGANRestorer,
) -> None:
    img = astronaut()
    face = face_of(img)
    held = RgbPicture(torch.from_numpy(img.copy()))  # what a detection upload hands on
    frames = [Frame(0, 0, Fraction(1, 25), img, faces=(face,), on_device=held), frame_with(img, (face,), 1)]
    stage = RestoreStage(restorer, CPU.device, batch_size=1)
    shared, uploaded = list(stage.run(iter(frames)))
    assert stage.io.uploads == 1 and stage.io.downloads == 2  # only the frame without a held copy went up
    assert np.array_equal(shared.image, uploaded.image) and shared.on_device is None
    assert np.array_equal(img, astronaut())  # the decoded picture itself is never written
