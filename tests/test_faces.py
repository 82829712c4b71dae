"""Detection, tracking and smoothing on real faces (skimage's astronaut), no downloads."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import psnr

from testkit.clips import ASTRONAUT_LANDMARKS, astronaut, make_face_clip
from testkit.weights import save_random_weights
from vidrestore.config import SmoothingConfig
from vidrestore.control import RunControl
from vidrestore.device import resolve_placement
from vidrestore.io.reader import VideoReader
from vidrestore.models.loading import load_model
from vidrestore.records import Frame
from vidrestore.stages.detect import CenterFaceDetector, Detections, RetinaFaceDetector
from vidrestore.stages.framewise import detect_frames
from vidrestore.stages.track import TrackSmoother


@pytest.fixture(scope="module")
def centerface() -> CenterFaceDetector:
    return CenterFaceDetector(size=960, threshold=0.5)


def test_centerface_finds_the_astronaut_with_ordered_landmarks(centerface: CenterFaceDetector) -> None:
    (d,) = centerface.detect([astronaut()])
    assert len(d) == 1
    lm = d.landmarks[0]
    assert np.abs(lm - ASTRONAUT_LANDMARKS).max() < 3
    left_eye, right_eye, nose, mouth_l, mouth_r = lm
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    x1, y1, x2, y2 = d.boxes[0]
    assert x1 < lm[:, 0].min() and lm[:, 0].max() < x2 and y1 < lm[:, 1].min() and lm[:, 1].max() < y2


def test_working_resolution_maps_back_to_source_pixels() -> None:
    big = cv2.resize(astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    (d,) = CenterFaceDetector(size=512, threshold=0.5).detect([big])
    assert np.abs(d.landmarks[0] - (ASTRONAUT_LANDMARKS * 2 + 0.5)).max() < 6


def test_batched_detection_equals_one_by_one(centerface: CenterFaceDetector) -> None:
    imgs = [astronaut(), np.ascontiguousarray(np.roll(astronaut(), 40, axis=1)), np.zeros((512, 512, 3), np.uint8)]
    batched = centerface.detect(imgs)
    for img, b in zip(imgs, batched):
        (one,) = centerface.detect([img])
        assert len(one) == len(b)
        np.testing.assert_allclose(one.landmarks, b.landmarks, atol=1e-3)
    assert len(batched[2]) == 0


def test_rotated_video_frames_are_detected_upright(centerface: CenterFaceDetector) -> None:
    upright = astronaut()
    stored = np.ascontiguousarray(np.rot90(upright, k=-1))  # stored turned; display matrix turns it back
    frame = Frame(0, 0, Fraction(1, 25), stored, rotation=90)
    ((_, d),) = list(detect_frames(centerface, iter([frame]), 4, lambda *a: None))
    assert len(d) == 1
    # map the known upright landmarks into the stored picture: rot90(k=-1) sends (x, y) to (H-1-y, x)
    expected = np.stack([511 - ASTRONAUT_LANDMARKS[:, 1], ASTRONAUT_LANDMARKS[:, 0]], axis=1)
    assert np.abs(d.landmarks[0] - expected).max() < 4


def test_retinaface_runs_batched_through_the_real_loader(tmp_path: Path) -> None:
    import torch

    path = save_random_weights("retinaface_mobile", tmp_path / "det.pth", key=None, seed=3)
    model = load_model("retinaface", path)
    det = RetinaFaceDetector(model, torch.device("cpu"), size=320, threshold=0.0, min_face=1)
    imgs = [astronaut(), astronaut()[::-1].copy()]
    out = det.detect(imgs)
    assert len(out) == 2
    for d in out:
        assert d.boxes.shape[1:] == (4,) and d.landmarks.shape[1:] == (5, 2)
        assert np.all(np.diff(d.scores) <= 0)
    (one,) = det.detect(imgs[:1])
    np.testing.assert_allclose(one.scores, out[0].scores, atol=1e-4)


def _retinaface(tmp_path: Path, dtype: Any = None) -> RetinaFaceDetector:
    import torch

    path = save_random_weights("retinaface_mobile", tmp_path / "det.pth", key=None, seed=3)
    return RetinaFaceDetector(
        load_model("retinaface", path), torch.device("cpu"), size=320, dtype=dtype or torch.float32
    )


def test_retinaface_uploads_each_batch_once_and_makes_the_scene_cut_thumbnails(tmp_path: Path) -> None:
    from vidrestore.stages.detect import thumbnail

    det = _retinaface(tmp_path)
    imgs = [astronaut(), astronaut()[::-1].copy(), np.zeros((512, 512, 3), np.uint8)]
    found = det.detect(imgs)
    assert det.io.uploads == 3 and det.io.downloads == 0  # pictures counted; nothing comes back but numbers
    for img, d in zip(imgs, found):
        assert d.thumb is not None and d.thumb.shape == (36, 64)
        # made from the shrunk picture on the device, close to the host's full-size thumbnail
        assert np.abs(d.thumb - thumbnail(img)).mean() < 0.01


def test_retinaface_reads_a_batch_back_once_and_finds_the_same_in_planes(tmp_path: Path) -> None:
    """One readback per batch (candidates and thumbnails together); a batch of planes gives what the
    same pictures give in RGB; a picture with more candidates than are read back at once gets NMS over
    all of them, as before."""
    import av
    import torch

    from vidrestore.io.pixels import SWS_FLAGS, planes_of

    det = _retinaface(tmp_path)
    imgs = [astronaut(), astronaut()[::-1].copy()]
    boxes, scores, _, _ = det.decoded(imgs)
    det.threshold = float(scores[0].sort(descending=True).values[200])  # random weights: 200 candidates
    found = det.detect(imgs)
    assert det.io.readbacks == 1 and 0 < len(found[0]) < 200
    to_planes = [
        av.VideoFrame.from_ndarray(im, format="rgb24").reformat(format="yuv420p", interpolation=SWS_FLAGS)
        for im in imgs
    ]
    planes = [planes_of(f) for f in to_planes]
    p_boxes, p_scores, _, _ = det.decoded(planes)  # type: ignore[arg-type]
    assert float((p_scores - scores).abs().max()) < 0.01  # the same network input within a level or so
    assert float(((p_boxes - boxes).abs() * (scores > 0.5)[..., None]).max()) < 2.0
    few = _retinaface(tmp_path)
    few.threshold, few.CANDIDATES = det.threshold, 5  # type: ignore[misc]
    for a, b in zip(found, few.detect(imgs), strict=True):
        rows = (np.lexsort(d.boxes.T[::-1]) for d in (a, b))  # equal scores may come in either order
        assert np.array_equal(*(d.boxes[r] for d, r in zip((a, b), rows, strict=True)))
    assert torch.is_tensor(boxes)


def test_retinaface_shrinks_integer_pictures_before_making_them_float(tmp_path: Path) -> None:
    import torch
    import torch.nn.functional as F

    det = _retinaface(tmp_path)
    batch = torch.from_numpy(np.stack([astronaut()])).permute(0, 3, 1, 2)
    first = det._working(batch, (154, 154))
    after = F.interpolate(batch.float(), size=first.shape[2:], mode="bilinear", antialias=True, align_corners=False)
    assert first.shape == (1, 3, 154, 154) and first.dtype == torch.float32
    assert (first - after).abs().max() <= 1.0  # uint8 resize rounds to whole levels
    deep = det._working((batch.to(torch.int32) * 257), (154, 154))  # 16-bit pictures: scaled to 0..255 first
    assert (deep - after).abs().max() <= 1e-3


def test_retinaface_in_bf16_finds_the_same_points_as_in_fp32(tmp_path: Path) -> None:
    import torch

    full = _retinaface(tmp_path).decoded([astronaut()])
    half = _retinaface(tmp_path, torch.bfloat16).decoded([astronaut()])
    top = torch.argsort(full[1][0], descending=True)[:200]
    assert (full[2][0][top] - half[2][0][top]).abs().max() < 0.5  # points, source pixels
    assert (full[0][0][top] - half[0][0][top]).abs().max() < 0.5  # boxes
    assert (full[1][0] - half[1][0]).abs().max() < 0.01  # scores


# -- tracking and smoothing -----------------------------------------------------------------


def _track(path: Path, detector: CenterFaceDetector, config: SmoothingConfig) -> list[Frame]:
    reader = VideoReader(path, RunControl())
    try:
        return list(TrackSmoother(config).run(detect_frames(detector, iter(reader), 8, lambda *a: None)))
    finally:
        reader.close()


def _slow_then_fast(i: int) -> tuple[float, float, float]:
    if i < 40:
        return (0.5 * i - 10, 4 * math.sin(i / 8), 0.0)  # slow drift and sway
    return (9.5 - 8.0 * (i - 39), 4 * math.sin(39 / 8), 0.0)  # then fast: 8 px per frame, no jump


def _jitter(err: np.ndarray) -> float:
    """Jitter around the true trajectory: RMS of the frame-to-frame change of the landmark error.

    A constant offset between a detector's points and ours is no jitter; a wobble is.
    """
    return float(np.sqrt((np.diff(err, axis=0) ** 2).sum(-1).mean()))


def test_smoothing_halves_jitter_without_lagging_fast_motion(tmp_path: Path, centerface: CenterFaceDetector) -> None:
    clip = make_face_clip(
        tmp_path / "jitter.mp4",
        frames=60,
        size=(480, 320),
        face_scale=0.7,
        trajectory=_slow_then_fast,
        blur=1.2,
        noise=6,
        crf=30,
    )
    frames = _track(clip.path, centerface, SmoothingConfig())
    assert all(len(f.faces) == 1 for f in frames)
    assert len({f.faces[0].track_id for f in frames}) == 1
    raw = np.array([f.faces[0].landmarks_raw for f in frames]) - clip.landmarks
    smooth = np.array([f.faces[0].landmarks for f in frames]) - clip.landmarks
    slow, fast = slice(3, 37), slice(43, 57)
    assert _jitter(smooth[slow]) <= 0.5 * _jitter(raw[slow])
    assert _jitter(smooth[fast]) <= 0.5 * _jitter(raw[fast])
    # no lag: on the fast part the smoothed points are no further from the truth than the raw ones
    raw_err = np.linalg.norm(raw[fast], axis=-1).mean()
    smooth_err = np.linalg.norm(smooth[fast], axis=-1).mean()
    assert smooth_err <= raw_err
    # smoothing 'none' hands the raw points through
    plain = _track(clip.path, centerface, SmoothingConfig(method="none"))
    for f in plain:
        np.testing.assert_array_equal(f.faces[0].landmarks, f.faces[0].landmarks_raw)


def _dets(points: list[np.ndarray | None]) -> list[Detections]:
    out = []
    for lm in points:
        if lm is None:
            out.append(Detections.empty())
            continue
        box = np.array([*lm.min(0) - 10, *lm.max(0) + 10], np.float32)
        out.append(Detections(box[None], np.array([0.9], np.float32), lm[None].astype(np.float32)))
    return out


def _frames(n: int, cut_at: int | None = None) -> list[Frame]:
    out = []
    for i in range(n):
        img = np.full((64, 64, 3), 200 if cut_at is not None and i >= cut_at else 20, np.uint8)
        out.append(Frame(i, i, Fraction(1, 25), img))
    return out


BASE = np.array([[20, 20], [40, 20], [30, 30], [22, 40], [38, 40]], np.float64)


def test_gap_of_three_frames_is_filled_by_interpolation() -> None:
    points: list[np.ndarray | None] = [BASE + [i, 0] for i in range(20)]
    for i in (8, 9, 10):
        points[i] = None
    out = list(TrackSmoother(SmoothingConfig(method="none", max_gap=5)).run(zip(_frames(20), _dets(points))))
    assert [len(f.faces) for f in out] == [1] * 20
    assert {f.faces[0].track_id for f in out} == {0}
    for i in (8, 9, 10):
        face = out[i].faces[0]
        assert face.interpolated and face.landmarks_raw is None
        np.testing.assert_allclose(face.landmarks, BASE + [i, 0], atol=1e-6)
    assert not out[7].faces[0].interpolated


def test_a_gap_longer_than_max_gap_splits_the_track() -> None:
    points: list[np.ndarray | None] = [BASE.copy() for _ in range(20)]
    for i in range(5, 12):
        points[i] = None
    out = list(
        TrackSmoother(SmoothingConfig(method="none", max_gap=3, fade_frames=0)).run(zip(_frames(20), _dets(points)))
    )
    assert [len(f.faces) for f in out[5:12]] == [0] * 7
    assert out[4].faces[0].track_id != out[12].faces[0].track_id


def test_scene_cut_ends_tracks_and_ending_tracks_fade_out() -> None:
    points: list[np.ndarray | None] = [BASE.copy() for _ in range(30)]
    out = list(TrackSmoother(SmoothingConfig(method="none")).run(zip(_frames(30, cut_at=15), _dets(points))))
    assert out[14].faces[0].track_id != out[15].faces[0].track_id  # a new person after the cut
    assert all(f.faces[0].weight == 1.0 for f in out)  # cuts and the end of the video do not fade
    # a face that leaves for good fades out over its last frames instead of snapping back
    leaving: list[np.ndarray | None] = [BASE.copy() if i < 12 else None for i in range(30)]
    cfg = SmoothingConfig(method="none", fade_frames=4, max_gap=3)
    out = list(TrackSmoother(cfg).run(zip(_frames(30), _dets(leaving))))
    weights = [f.faces[0].weight for f in out[:12]]
    assert weights[:8] == [1.0] * 8
    assert weights[8:] == pytest.approx([4 / 5, 3 / 5, 2 / 5, 1 / 5])


def test_two_faces_keep_their_own_tracks_whatever_the_detection_order() -> None:
    frames = _frames(12)
    dets = []
    for i in range(12):
        a, b = BASE + [2 * i, 0], BASE + [2 * i, 60]
        both = _dets([a])[0], _dets([b])[0]
        order = both if i % 2 else both[::-1]  # the detector lists them in any order
        dets.append(
            Detections(
                np.concatenate([o.boxes for o in order]),
                np.concatenate([o.scores for o in order]),
                np.concatenate([o.landmarks for o in order]),
            )
        )
    out = list(TrackSmoother(SmoothingConfig(method="none")).run(zip(frames, dets)))
    top = min(out[0].faces, key=lambda face: face.landmarks[0, 1]).track_id
    for f in out:
        assert len(f.faces) == 2
        assert min(f.faces, key=lambda face: face.landmarks[0, 1]).track_id == top


def test_retinaface_follows_the_restorers_precision_unless_told_fp32(tmp_path: Path) -> None:
    import torch

    from vidrestore import load_config
    from vidrestore.device import Placement
    from vidrestore.models.store import ModelStore
    from vidrestore.stages.assemble import build_detector

    path = save_random_weights("retinaface_mobile", tmp_path / "det.pth", key=None, seed=3)
    half = Placement(torch.device("cpu"), torch.bfloat16)  # what auto picks on a CUDA GPU
    store = ModelStore(tmp_path / "models")
    for precision, dtype in (("auto", torch.bfloat16), ("fp32", torch.float32)):
        sets = ["detector.model=retinaface_mobile0.25", f"detector.weights={path}", f"detector.precision={precision}"]
        det = build_detector(load_config(None, sets), store, half)
        assert isinstance(det, RetinaFaceDetector) and det.dtype == dtype
        assert next(det.model.parameters()).dtype == dtype


# -- non-square pixels and fields ---------------------------------------------------------------


def _ffmpeg_copy(src: Path, dst: Path, vf: str, *extra: str) -> Path:
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg CLI is not installed (apt-get install ffmpeg)")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(src), "-vf", vf, "-c:v", "libx264", "-crf", "8", *extra]
        + ["-an", str(dst)],
        check=True,
    )
    return dst


def _tracked(path: Path, *sets: str) -> list[Frame]:
    from vidrestore import load_config
    from vidrestore.control import RunControl
    from vidrestore.models.store import ModelStore, default_weights_dir
    from vidrestore.run.file import open_reader
    from vidrestore.stages.assemble import FaceStages, build_detector

    config = load_config(None, ["detector.model=centerface", "detector.threshold=0.5", *sets])
    store = ModelStore(default_weights_dir())
    stages = FaceStages(config, build_detector(config, store, resolve_placement("cpu", "auto")), None)
    reader = open_reader(path, config, RunControl(), copy_streams=False)
    try:
        return list(stages.track(iter(reader)))
    finally:
        reader.close()


def test_an_anamorphic_copy_is_aligned_as_it_is_seen(tmp_path: Path, weights: Any) -> None:
    """A square-pixel face clip (as soft as video from a disc is), and a copy stored 270 px wide with
    32:27 pixels (shown 320 wide, as a 16:9 DVD stores its picture): the landmarks, in display
    pixels, are within 1 px of the square clip's; and given the same (true) landmarks, the aligned
    faces the restorer is given from the two copies match at 35 dB or more: the alignment composes
    the similarity with the pixel shape, so only the squeeze's own resampling is left between them."""
    from vidrestore import load_config
    from vidrestore.models.store import ModelStore, default_weights_dir
    from vidrestore.stages.assemble import build_face_stages
    from vidrestore.stats import RunStats

    square = make_face_clip(
        tmp_path / "square.mp4", frames=8, crf=8, blur=0.8, trajectory=lambda i: (3.0 * i, 0.0, 0.02 * i)
    )
    squeezed = _ffmpeg_copy(square.path, tmp_path / "squeezed.mp4", "scale=270:240,setsar=32/27")
    a, b = _tracked(square.path), _tracked(squeezed)
    assert all(f.sar == Fraction(32, 27) for f in b) and all(f.sar == 1 for f in a)
    assert len(a) == len(b) == 8 and all(len(f.faces) == 1 for f in (*a, *b))
    # the landmarks alignment uses (smoothed) within 1 px; the detector's own, frame by frame, within
    # half a pixel at the median (CenterFace is 1-2 px from the truth on either clip)
    used = [np.abs(x.faces[0].landmarks - y.faces[0].landmarks).max() for x, y in zip(a, b, strict=True)]
    raw = [np.abs(x.faces[0].landmarks_raw - y.faces[0].landmarks_raw).max() for x, y in zip(a, b, strict=True)]
    assert max(used) <= 1.0, used
    assert float(np.median(raw)) <= 0.5, raw

    def aligned(path: Path) -> list[np.ndarray]:
        sets = [
            "detector.model=centerface",
            "detector.threshold=0.5",
            "upscaler.model=none",
            "restorer.parsing_mask=false",
            f"restorer.weights={weights.gfpgan}",
            "temporal.method=none",
        ]
        config = load_config(None, sets)
        stages = build_face_stages(config, ModelStore(default_weights_dir()), RunStats())
        assert stages.restore is not None and stages.detector is not None
        detect, count = stages.detector.detect, [0]

        def truth(images: Any, sar: float = 1.0) -> Any:  # the detector's boxes, the clip's own landmarks
            found = detect(images, sar)
            for d in found:  # a detector answers in stored pixels
                d.landmarks[:] = square.landmarks[count[0]][None] / np.array([sar, 1.0], np.float32)
                count[0] += 1
            return found

        stages.detector.detect = truth  # type: ignore[method-assign]
        seen: list[np.ndarray] = []
        inner = stages.restore.restorer.restore

        def record(batch: Any, fp32: bool = False) -> Any:
            seen.extend(batch.float().numpy())
            return inner(batch, fp32=fp32)

        stages.restore.restorer.restore = record  # type: ignore[method-assign]
        from vidrestore.control import RunControl
        from vidrestore.run.file import open_reader

        reader = open_reader(path, config, RunControl(), copy_streams=False)
        try:
            list(stages(iter(reader)))
        finally:
            reader.close()
        return seen

    crops_a, crops_b = aligned(square.path), aligned(squeezed)
    assert len(crops_a) == len(crops_b) == 8
    scores = [psnr(np.clip(x * 255, 0, 255), np.clip(y * 255, 0, 255)) for x, y in zip(crops_a, crops_b, strict=True)]
    assert min(scores) >= 35, scores


def test_an_interlaced_moving_face_is_found_in_every_deinterlaced_picture(tmp_path: Path) -> None:
    """A face moving fast at 50 pictures a second, woven into 25 interlaced frames (top field first):
    deinterlaced, it gives 50 pictures again, and a face is found in at least as many of them as in
    the progressive source."""
    source = make_face_clip(
        tmp_path / "fields.mp4", frames=24, rate=50, crf=8, trajectory=lambda i: (6.0 * i - 70, 2.0 * i, 0.0)
    )
    woven = _ffmpeg_copy(
        source.path, tmp_path / "woven.mkv", "tinterlace=interleave_top,fieldorder=tff", "-flags", "+ildct+ilme"
    )
    progressive, deinterlaced = _tracked(source.path), _tracked(woven)
    assert len(deinterlaced) == len(progressive) == 24
    found = sum(1 for f in deinterlaced if f.faces and f.faces[0].landmarks_raw is not None)
    assert found >= sum(1 for f in progressive if f.faces and f.faces[0].landmarks_raw is not None)


def test_the_alignment_moves_smoothly_with_the_landmarks() -> None:
    """The least-squares similarity: landmarks moved by a tenth of a pixel move the aligned face by
    about as much (facexlib's least-median fit can switch point pairs there and jump by pixels), and
    on landmarks that fit a similarity exactly it is that similarity."""
    from vidrestore.geometry import estimate_similarity, invert, map_points, template

    t = template(512)
    truth = np.array([[0.21, -0.03, 150.0], [0.03, 0.21, 90.0]])  # a face about 110 px wide
    points = map_points(invert(truth), t)
    assert np.allclose(estimate_similarity(points, t), truth, atol=1e-9)
    rng = np.random.default_rng(0)
    corners = np.array([[0.0, 0.0], [511.0, 0.0], [0.0, 511.0], [511.0, 511.0]])
    base = map_points(invert(estimate_similarity(points, t)), corners)
    for _ in range(200):
        moved = points + rng.uniform(-0.1, 0.1, points.shape)
        shift = np.abs(map_points(invert(estimate_similarity(moved, t)), corners) - base).max()
        assert shift < 0.5, shift  # in frame pixels, at the crop's corners
