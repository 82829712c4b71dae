"""HDR input: faces restored in an SDR view and mapped back; HDR signalling and metadata kept."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from conftest import CliResult, Weights

from testkit.clips import astronaut
from vidrestore.device import Placement
from vidrestore.records import Face, Frame
from vidrestore.stages.detect import CenterFaceDetector
from vidrestore.stages.networks import RestorerNeeds
from vidrestore.stages.restore import RestoreStage
from vidrestore.transfer import HLG, PQ, SdrView, _nits_to_pq

CPU = Placement(torch.device("cpu"), torch.float32)
MASTER = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"


def as_pq(sdr: np.ndarray) -> np.ndarray:
    """An SDR picture as a PQ signal (uint16): gamma 2.4 to light, reference white at 203 cd/m²."""
    nits = torch.from_numpy(sdr.astype(np.float32) / 255.0) ** 2.4 * 203.0
    return (_nits_to_pq(nits).numpy() * 65535).round().astype(np.uint16)


@pytest.mark.parametrize(("transfer", "top"), [(PQ, 0.75), (HLG, 1.0)])  # PQ 0.75 is ~1000 cd/m²
def test_the_sdr_view_maps_back_exactly(transfer: int, top: float) -> None:
    view = SdrView(transfer)
    signal = torch.linspace(0, top, 4001)
    seen = view.to_view(signal)
    assert float(seen.min()) >= 0 and float(seen.max()) <= 1
    assert torch.all(seen[1:] >= seen[:-1])  # monotonic: order of brightness kept
    assert torch.allclose(view.to_signal(seen), signal, atol=2e-4)


class Recorder:
    """A restorer that hands back what it was given, and keeps it."""

    size = 512
    needs = RestorerNeeds()

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def restore(self, faces: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        self.seen.append(faces.clone())
        return faces


def _face() -> Face:
    (d,) = CenterFaceDetector(threshold=0.5).detect([astronaut()])
    return Face(0, float(d.scores[0]), d.boxes[0], d.landmarks[0], d.landmarks[0].copy())


def _crop_seen(image: np.ndarray, trc: int) -> tuple[torch.Tensor, np.ndarray]:
    rec = Recorder()
    frame = Frame(0, 0, Fraction(1, 25), image, faces=(_face(),), color_trc=trc)
    (out,) = list(RestoreStage(rec, CPU.device).run(iter([frame])))  # type: ignore[arg-type]
    return rec.seen[0][0], out.image


def test_the_restorer_sees_a_pq_face_as_it_would_see_the_sdr_face() -> None:
    sdr = astronaut()
    pq = as_pq(sdr)
    want, out_sdr = _crop_seen(sdr, 1)
    got, out = _crop_seen(pq, PQ)
    unmapped, _ = _crop_seen(pq, 2)  # the same signal taken for SDR: what happened before

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(10 * torch.log10(1 / torch.mean((a - b) ** 2)))

    assert psnr(got, want) > 25
    assert psnr(unmapped, want) < psnr(got, want) - 8
    # the face came back unchanged, so the result must be the SDR result's in PQ (the crop's
    # resampling aside, which both share), not a face of another brightness
    diff = out.astype(np.float64) - as_pq(out_sdr).astype(np.float64)
    assert 10 * np.log10(65535.0**2 / np.mean(diff**2)) > 45


def _hdr_clip(path: Path, frames: int = 4) -> None:
    pq = as_pq(astronaut()[:256, 96:352])
    with av.open(str(path), "w") as c:
        v: Any = c.add_stream("libx265", rate=25)
        v.width, v.height, v.pix_fmt = 256, 256, "yuv420p10le"
        cc = v.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 9, PQ, 9, 1
        v.options = {"x265-params": f"log-level=error:hdr10=1:master-display={MASTER}:max-cll=1000,400"}
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(pq), format="rgb48le")
            f = f.reformat(format="yuv420p10le", dst_colorspace=9, dst_color_range=1)
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))


def _hdr_of(path: Path) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        tags = (int(cc.color_primaries), int(cc.color_trc), int(cc.colorspace))
        frame = next(iter(c.decode(s)))
        side: Any = frame.side_data
        meta = {
            sd.type.name: struct.unpack("<22i" if sd.type.name.startswith("MASTERING") else "<2I", bytes(sd))
            for sd in (item if hasattr(item, "type") else side[item] for item in side)  # a mapping from 18.1.1
            if sd.type.name in ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL")
        }
        return tags, meta


def test_hdr10_input_keeps_its_signalling_and_metadata_and_its_faces_are_restored(
    cli: Any, weights: Weights, tmp_path: Path
) -> None:
    src, dst = tmp_path / "hdr.mp4", tmp_path / "out.mp4"
    _hdr_clip(src)
    r: CliResult = cli(
        "restore", src, "-o", dst, "--detector", "centerface", *weights.sets(), "--set", "detector.threshold=0.3"
    )
    assert r.code == 0, r.err
    assert "4 restored" in r.err
    tags, meta = _hdr_of(dst)
    assert tags == (9, PQ, 9)
    assert meta == _hdr_of(src)[1] and set(meta) == {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"}
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.name == "hevc"  # auto picks HEVC: HDR10 metadata lives there
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"


def test_x265_parameters_from_the_side_data() -> None:
    from vidrestore.io.encoders import x265_hdr_params

    md = struct.pack("<20i2i", 34000, 50000, 16000, 50000, 13250, 50000, 34500, 50000, 7500, 50000, 3000, 50000,
                     15635, 50000, 16450, 50000, 1, 10000, 10000000, 10000, 1, 1)  # fmt: skip
    cll = struct.pack("<2I", 1000, 400)
    params = x265_hdr_params({"MASTERING_DISPLAY_METADATA": md, "CONTENT_LIGHT_LEVEL": cll})
    assert params == f"hdr10=1:repeat-headers=1:master-display={MASTER}:max-cll=1000,400"
    assert x265_hdr_params({}) == "hdr10=1:repeat-headers=1"
