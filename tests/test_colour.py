"""YUV <-> RGB on the device against swscale's accurate mode, and the planes a frame carries."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from skimage.data import astronaut

from vidrestore.colour import PlaneFormat, rgb_to_yuv, yuv_to_rgb
from vidrestore.io.pixels import SWS_COLORSPACE, SWS_FLAGS, planes_of, video_frame
from vidrestore.records import Planes

MATRICES = {"601": 6, "709": 1, "2020": 9}
FORMATS = ["yuv444p", "yuv422p", "yuv420p", "yuv444p10le", "yuv420p10le"]


def _source(fmt: str, matrix: int, full: bool, noisy: bool) -> av.VideoFrame:
    """A real picture (with noise on top: sharp chroma edges everywhere) in ``fmt``, made by swscale."""
    img = astronaut()[:258, :250].astype(np.int16)
    if noisy:
        img = img + np.random.default_rng(1).integers(-40, 41, img.shape, dtype=np.int16)
    rgb = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
    out = rgb.reformat(
        format=fmt, dst_colorspace=SWS_COLORSPACE[matrix], dst_color_range=2 if full else 1, interpolation=SWS_FLAGS
    )
    out.colorspace, out.color_range = matrix, 2 if full else 1
    return out


def _tensors(p: Planes) -> list[torch.Tensor]:
    return [torch.from_numpy(a.astype(np.int32)) for a in (p.y, p.u, p.v)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("matrix", list(MATRICES))
@pytest.mark.parametrize("full", [False, True], ids=["limited", "full"])
@pytest.mark.parametrize("noisy", [False, True], ids=["photo", "noise"])
def test_yuv_to_rgb_is_within_one_level_of_swscale(fmt: str, matrix: str, full: bool, noisy: bool) -> None:
    frame = _source(fmt, MATRICES[matrix], full, noisy)
    planes = planes_of(frame)
    assert planes is not None and planes.format.full_range == full and planes.format.matrix == MATRICES[matrix]
    bits = planes.format.bits
    # swscale's RGB at the source's own depth: its 16-bit RGB output scales 10-bit input by 64 (full
    # range) or to 255 x 256 (limited), not to 65535, so the reference is 10-bit planar RGB
    ref_fmt = "rgb24" if bits == 8 else "gbrp10le"
    kwargs = {"src_colorspace": SWS_COLORSPACE[MATRICES[matrix]], "src_color_range": 2 if full else 1}
    ref = frame.reformat(format=ref_fmt, interpolation=SWS_FLAGS, **kwargs)
    if bits == 8:
        expected = ref.to_ndarray().astype(np.int32)
    else:  # planes G, B, R
        g, b, r = (np.frombuffer(p, np.uint16).reshape(p.height, -1)[:, : p.width] for p in ref.planes)
        expected = np.stack([r, g, b], axis=-1).astype(np.int32)
    # swscale turns 10-bit limited range into RGB whose white is 1020, not 1023 (it scales up its 8-bit
    # result, measured: a gain of 0.9971 on every channel); BT.709 / BT.2100 put white at 1023, as we do
    gain = 1020 / 1023 if bits > 8 and not full else 1.0
    mine = (yuv_to_rgb(*_tensors(planes), planes.format) * planes.format.peak * gain).round().permute(1, 2, 0).numpy()
    diff = np.abs(mine.astype(np.int32) - expected)
    label = f"{fmt} {matrix} full={full}: max {diff.max()} levels off, mean {diff.mean():.3f}"
    assert diff.mean() < 0.05, label
    if not noisy and (bits == 8 or planes.format.sub_x == 1):
        assert diff.max() <= 1, label
    # Noise (a chroma edge at every sample) meets the rounding of swscale's fixed-point chroma filter:
    # at 8 bits 2 levels on a few pixels in 100,000; at 10 bits 4:2:0 up to 4 levels (one 8-bit level)
    # on 0.4% of them
    assert float((diff > 1).mean()) <= (0.005 if bits > 8 else 1e-4), label
    assert diff.max() <= (4 if bits > 8 else 2), label


@pytest.mark.parametrize("fmt", ["yuv444p", "yuv420p", "yuv420p10le"])
@pytest.mark.parametrize("matrix", list(MATRICES))
@pytest.mark.parametrize("full", [False, True], ids=["limited", "full"])
def test_a_round_trip_through_rgb_does_not_drift(fmt: str, matrix: str, full: bool) -> None:
    """Planes -> RGB (rounded at their depth, as the device picture of a face region holds them) ->
    planes: luma and chroma move by well under a tenth of a level on average, either way."""
    planes = planes_of(_source(fmt, MATRICES[matrix], full, noisy=False))
    assert planes is not None
    f = planes.format
    rgb = (yuv_to_rgb(*_tensors(planes), f) * f.peak).round() / f.peak
    y, u, v = rgb_to_yuv(rgb, f)
    assert abs(float((y.round() - torch.from_numpy(planes.y.astype(np.float32))).mean())) < 0.1
    for back, orig in ((u, planes.u), (v, planes.v)):
        h, w = orig.shape
        block = back[: h * f.sub_y, : w * f.sub_x].reshape(h, f.sub_y, w, f.sub_x).mean(dim=(1, 3))
        assert abs(float((block.round() - torch.from_numpy(orig.astype(np.float32))).mean())) < 0.1


def test_the_conversion_of_a_region_is_the_same_pixels_as_of_the_whole() -> None:
    planes = planes_of(_source("yuv420p", 1, False, noisy=True))
    assert planes is not None
    whole = yuv_to_rgb(*_tensors(planes), planes.format)
    for box in [(0, 0, 17, 9), (31, 40, 120, 101), (200, 230, 250, 258), (1, 1, 2, 2)]:
        x0, y0, x1, y1 = box
        assert torch.equal(yuv_to_rgb(*_tensors(planes), planes.format, box), whole[:, y0:y1, x0:x1])


@pytest.mark.parametrize("fmt", ["yuv420p", "yuvj420p", "yuv422p10le", "yuv444p12le", "nv12", "p010le"])
def test_planes_come_out_of_a_frame_and_go_back_unchanged(fmt: str) -> None:
    frame = av.VideoFrame.from_ndarray(astronaut()[:101, :99], format="rgb24").reformat(format=fmt)
    planes = planes_of(frame)
    assert planes is not None
    assert planes.format.full_range == (fmt == "yuvj420p")
    again = planes_of(video_frame(planes))
    assert again is not None and again.format == planes.format
    for a, b in zip((planes.y, planes.u, planes.v), (again.y, again.u, again.v), strict=True):
        assert np.array_equal(a, b)
    # and what swscale makes of both is the same picture
    direct = frame.reformat(format="rgb24", interpolation=SWS_FLAGS).to_ndarray()
    ours = video_frame(planes).reformat(format="rgb24", interpolation=SWS_FLAGS).to_ndarray()
    assert np.abs(direct.astype(int) - ours.astype(int)).max() <= (0 if fmt not in ("nv12", "p010le") else 1)


@pytest.mark.parametrize("fmt", ["gray", "rgb24", "yuva420p", "bgra", "gray10le"])
def test_formats_that_are_not_planar_yuv_go_the_rgb_way(fmt: str) -> None:
    frame = av.VideoFrame.from_ndarray(astronaut()[:64, :64], format="rgb24").reformat(format=fmt)
    assert planes_of(frame) is None


def test_planes_are_checked_on_construction() -> None:
    f = PlaneFormat("yuv420p", 8, 2, 2)
    with pytest.raises(ValueError, match="chroma"):
        Planes(np.zeros((4, 5), np.uint8), np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), f)
    with pytest.raises(ValueError, match="uint8"):
        Planes(np.zeros((4, 6), np.uint16), np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.uint8), f)
    ok = Planes(np.zeros((5, 5), np.uint8), np.full((3, 3), 128, np.uint8), np.full((3, 3), 128, np.uint8), f)
    assert ok.shape == (5, 5, 3) and ok.rgb().shape == (5, 5, 3) and ok.rgb().dtype == np.uint8
