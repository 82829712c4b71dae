"""Decode/encode pass-through (detector.model: none): every frame, timestamp and track survives."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import CliResult, assert_one_line_error
from media import best_effort_seconds, probe, seconds

from testkit.clips import write_clip
from vidrestore.control import RunControl
from vidrestore.io.encoders import encoder_options, pick_pix_fmt
from vidrestore.io.reader import VideoReader

Cli = Callable[..., CliResult]


def frames(n: int = 25, w: int = 96, h: int = 64) -> list[np.ndarray]:
    """Moving gradients: cheap to encode, not trivial for the encoder."""
    yy, xx = np.mgrid[0:h, 0:w]
    return [
        np.stack([(xx * 3 + i * 7) % 256, (yy * 4 + i * 5) % 256, (xx + yy + i * 11) % 256], -1).astype(np.uint8)
        for i in range(n)
    ]


def passthrough(cli: Cli, src: Path, dst: Path, *extra: str) -> CliResult:
    r = cli("restore", src, "-o", dst, "--detector", "none", "-q", *extra)
    assert r.code == 0, r.err
    return r


def assert_same_timing(a_path: Path, b_path: Path, check_audio: bool = True, shift_ok: bool = False) -> None:
    """Same frames at the same instants; ``shift_ok``: a constant shift of less than a frame is allowed
    (Matroska cannot store the negative decode times of some encoders' B-frames, so FFmpeg shifts
    every stream of the file together: sync holds, the clip starts a fraction of a frame later)."""
    a, b = probe(a_path), probe(b_path)
    assert b.frames == a.frames
    assert all(y > x for x, y in zip(b.pts, b.pts[1:])), "pts must strictly increase"
    one = a.frame_duration_s
    shift = seconds(b)[0] - seconds(a)[0] if shift_ok else 0.0
    assert abs(shift) < one
    assert [t - shift for t in seconds(b)] == pytest.approx(seconds(a), abs=1e-3), "per-frame timestamps kept"
    assert abs(b.video_start_s - a.video_start_s) <= one
    assert abs(b.video_end_s - a.video_end_s) <= one
    if check_audio:
        assert list(b.audio.values()) == list(a.audio.values()), "audio packets byte-identical"
        for (sa, ea), (sb, eb) in zip(a.audio_span_s.values(), b.audio_span_s.values()):
            assert abs(sb - sa) <= one and abs(eb - ea) <= one


def test_h264_aac_mp4(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_clip(src, frames(), metadata={"title": "a call", "comment": "kept"})
    passthrough(cli, src, dst)
    assert_same_timing(src, dst)
    b = probe(dst)
    assert b.codec == "h264" and len(b.audio) == 1
    assert b.container_metadata.get("title") == "a call"


def test_vp9_opus_webm(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.webm", tmp_path / "out.webm"
    write_clip(src, frames(), codec="libvpx-vp9")
    passthrough(cli, src, dst, "--codec", "libvpx-vp9")
    assert_same_timing(src, dst)
    assert probe(dst).codec == "vp9"


def _with_subtitles(src: Path, dst: Path, tmp: Path) -> None:
    srt = tmp / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,400\nHello\n\n2\n00:00:00,400 --> 00:00:00,900\nWorld\n")
    with av.open(str(src)) as a, av.open(str(srt)) as s, av.open(str(dst), "w") as out:
        mapping = {}
        for stream in a.streams:
            mapping[stream.index] = out.add_stream_from_template(stream)
            mapping[stream.index].metadata.update(stream.metadata)
        sub = out.add_stream_from_template(s.streams[0])
        sub.metadata["language"] = "spa"
        for packet in a.demux():
            if packet.size:  # not "dts is not None": a keyframe can have no dts
                packet.stream = mapping[packet.stream.index]
                out.mux(packet)
        for packet in s.demux():
            if packet.size:  # not "dts is not None": a keyframe can have no dts
                packet.stream = sub
                out.mux(packet)


def test_mkv_two_audio_tracks_and_subtitles(cli: Cli, tmp_path: Path) -> None:
    plain, src, dst = tmp_path / "plain.mkv", tmp_path / "in.mkv", tmp_path / "out.mkv"
    write_clip(plain, frames(), audio_tracks=2)
    _with_subtitles(plain, src, tmp_path)
    passthrough(cli, src, dst)
    assert_same_timing(src, dst)
    a, b = probe(src), probe(dst)
    assert len(b.audio) == 2
    assert b.audio_languages == ["eng", "fra"]
    assert b.subtitles == a.subtitles and b.subtitles[0][1] == "spa" and len(b.subtitles[0][2]) == 2


def test_variable_frame_rate_keeps_every_timestamp(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "vfr.mkv", tmp_path / "out.mkv"
    # a screen recording: bursts at 30 fps, pauses of up to a second
    gaps = [33, 33, 34, 33, 500, 33, 34, 1000, 40, 40, 16, 17, 250, 33, 33, 34, 33, 120, 33, 33]
    pts = [0, *np.cumsum(gaps).tolist()]
    write_clip(src, frames(len(pts)), pts=pts, time_base=Fraction(1, 1000), rate=30)
    passthrough(cli, src, dst)
    assert_same_timing(src, dst)
    assert probe(dst).pts == pts  # not forced to a constant rate
    # and into MP4 too (another time base: the same instants)
    dst2 = tmp_path / "out.mp4"
    passthrough(cli, src, dst2)
    assert seconds(probe(dst2)) == pytest.approx([p / 1000 for p in pts], abs=1e-3)


def test_odd_size(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "odd.mkv", tmp_path / "out.mkv"
    write_clip(src, frames(w=97, h=65), pix_fmt="yuv444p")
    passthrough(cli, src, dst)
    assert_same_timing(src, dst)
    b = probe(dst)
    assert (b.width, b.height) == (97, 65)


def test_ten_bit_stays_ten_bit(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "deep.mkv", tmp_path / "out.mkv"
    write_clip(src, frames(), pix_fmt="yuv420p10le")
    passthrough(cli, src, dst)
    assert_same_timing(src, dst)
    assert probe(dst).pix_fmt == "yuv420p10le"


def test_rotation_and_colour_metadata_are_kept(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "phone.mp4", tmp_path / "out.mp4"
    write_clip(src, frames(), rotation=90, bt709=True)
    a = probe(src)
    assert a.rotation == 90 and a.color == (1, 1, 1, 1)
    passthrough(cli, src, dst)
    b = probe(dst)
    assert b.rotation == 90
    assert b.color == (1, 1, 1, 1)
    assert_same_timing(src, dst)


def test_no_audio_and_no_audio_flag(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "mute.mp4", tmp_path / "out.mp4"
    write_clip(src, frames(), audio=False)
    passthrough(cli, src, dst)
    assert_same_timing(src, dst, check_audio=False)
    assert probe(dst).audio == {}
    loud, dropped = tmp_path / "loud.mp4", tmp_path / "dropped.mp4"
    write_clip(loud, frames())
    passthrough(cli, loud, dropped, "--no-audio")
    assert probe(dropped).audio == {}


def test_audio_the_container_cannot_hold_is_reencoded_with_a_warning(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "aac.mkv", tmp_path / "out.webm"
    write_clip(src, frames(), audio="aac")
    r = passthrough(cli, src, dst, "--codec", "libvpx-vp9")
    warn = [ln for ln in r.err.splitlines() if "re-encoding" in ln]
    assert len(warn) == 1 and "track 1" in warn[0] and "aac" in warn[0]
    b = probe(dst)
    assert len(b.audio) == 1 and len(next(iter(b.audio.values()))) > 10
    assert b.frames == 25


def test_decoded_pixels_survive_the_round_trip(cli: Cli, tmp_path: Path) -> None:
    import cv2

    from testkit.clips import astronaut

    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    photo = cv2.resize(astronaut(), (192, 192), interpolation=cv2.INTER_AREA)
    write_clip(src, [np.roll(photo, i, axis=1)[32:160] for i in range(25)], crf=10)
    passthrough(cli, src, dst, "--crf", "10")
    # compare what the codec stores (Y, U, V planes), so no RGB conversion of the test's own muddies it
    a = [f.to_ndarray(format="yuv444p").astype(float) for f in av.open(str(src)).decode(video=0)]
    b = [f.to_ndarray(format="yuv444p").astype(float) for f in av.open(str(dst)).decode(video=0)]
    assert len(a) == len(b) == 25
    for x, y in zip(a, b):
        for plane in range(3):
            mse = np.mean((x[plane] - y[plane]) ** 2)
            assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 38  # within codec tolerance
        assert abs(float(np.mean(y[0] - x[0]))) < 0.3  # and no drift in brightness


def test_truncated_file_is_processed_up_to_where_it_stops(cli: Cli, tmp_path: Path) -> None:
    full, cut, dst = tmp_path / "full.mkv", tmp_path / "cut.mkv", tmp_path / "out.mkv"
    write_clip(full, frames(50))
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    r = cli("restore", cut, "-o", dst, "--detector", "none")
    assert r.code == 0, r.err
    assert "really ends early" in r.err and "truncated" in r.err
    decodable = sum(1 for _ in av.open(str(cut)).decode(video=0))
    assert 0 < probe(dst).frames == decodable < 50


def test_reader_streams_through_a_bounded_queue(tmp_path: Path) -> None:
    src = tmp_path / "in.mp4"
    write_clip(src, frames(60))
    control = RunControl()
    reader = VideoReader(src, control, queue_size=4)
    reader.start()
    time.sleep(0.5)
    assert reader.frames.qsize() <= 4  # blocked, not reading ahead
    got = [f.index for f in reader]
    reader.close()
    assert got == list(range(60))
    assert control.error is None


@pytest.mark.parametrize("case", ["empty", "text", "audio-only", "unknown-codec", "header-only", "missing"])
def test_bad_inputs_exit_4_with_one_line(cli: Cli, tmp_path: Path, case: str) -> None:
    src = tmp_path / "bad.mkv"
    if case == "empty":
        src.write_bytes(b"")
    elif case == "text":
        src.write_text("this is not a video\n" * 50)
    elif case == "audio-only":
        src = tmp_path / "bad.m4a"
        with av.open(str(src), "w", format="mp4") as c:
            a = c.add_stream("aac", rate=48000, layout="stereo")
            for i in range(20):
                fr = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
                fr.sample_rate, fr.pts = 48000, i * 1024
                c.mux(a.encode(fr))
            c.mux(a.encode(None))
    elif case == "unknown-codec":
        good = tmp_path / "good.mkv"
        write_clip(good, frames())
        data = good.read_bytes()
        assert data.count(b"V_MPEG4/ISO/AVC") == 1
        src.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/QQQ"))
    elif case == "header-only":
        good = tmp_path / "good.mkv"
        write_clip(good, frames())
        src.write_bytes(good.read_bytes()[:300])
    dst = tmp_path / "out.mkv"
    r = cli("restore", src, "-o", dst, "--detector", "none")
    assert r.code == 4, r.err
    assert_one_line_error(r.err)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if ".part-" in p.name] == []


def test_refuses_to_overwrite_the_input_or_an_existing_file(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_clip(src, frames(5))
    before = src.read_bytes()
    r = cli("restore", src, "-o", src, "--detector", "none", "-y")
    assert r.code == 2 and "replace the input" in r.err
    assert src.read_bytes() == before
    dst.write_bytes(b"precious")
    r = cli("restore", src, "-o", dst, "--detector", "none")
    assert r.code == 2 and "--overwrite" in r.err
    assert_one_line_error(r.err)
    assert dst.read_bytes() == b"precious"
    passthrough(cli, src, dst, "-y")
    assert probe(dst).frames == 5


def test_unavailable_encoder_is_a_clear_error_and_nvenc_falls_back(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "in.mp4"
    write_clip(src, frames(5))
    r = cli("restore", src, "-o", tmp_path / "o.mp4", "--detector", "none", "--codec", "libx999")
    assert r.code == 2 and "output.codec" in r.err
    import torch

    if torch.cuda.is_available():
        pytest.skip("NVENC may really work here")
    r = cli("restore", src, "-o", tmp_path / "n.mp4", "--detector", "none", "--codec", "h264_nvenc")
    assert r.code == 0, r.err
    assert "falling back to libx264" in r.err
    assert probe(tmp_path / "n.mp4").codec == "h264"


def test_nvdec_and_auto_nvenc_fall_back_to_software_with_one_line_each(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for on a machine without them: the run is the software one, and each fallback is said once."""
    import torch

    from vidrestore.io import probe as probe_module
    from vidrestore.run import file as file_module

    if torch.cuda.is_available():
        pytest.skip("NVDEC and NVENC may really work here")
    monkeypatch.setattr(probe_module, "_SAID", set())  # said once per process: this test's process too
    src = tmp_path / "in.mp4"
    write_clip(src, frames(5))
    software, hardware = tmp_path / "s.mkv", tmp_path / "h.mkv"
    lossless = ("--detector", "none", "--crf", "0")  # so the two outputs compare bit for bit
    assert cli("restore", src, "-o", software, *lossless, "--set", "input.decoder=software").code == 0
    monkeypatch.setattr(file_module, "_nvenc", lambda config: True)  # as on a CUDA machine with codec auto
    r = cli("restore", src, "-o", hardware, *lossless, "--set", "input.decoder=nvdec")
    assert r.code == 0, r.err
    lines = r.err.splitlines()
    assert sum("NVDEC is not available here" in line and "decoding in software" in line for line in lines) == 1
    assert sum("h264_nvenc cannot be opened here" in line for line in lines) == 1
    assert probe(hardware).codec == "h264" and probe(hardware).frames == 5
    with av.open(str(software)) as a, av.open(str(hardware)) as b:
        for x, y in zip(a.decode(video=0), b.decode(video=0), strict=True):
            assert np.array_equal(x.to_ndarray(), y.to_ndarray())
    r = cli("restore", src, "-o", tmp_path / "again.mkv", "--detector", "none", "--set", "input.decoder=nvdec")
    assert "NVDEC" not in r.err and "NVENC" not in r.err  # once per process
    monkeypatch.setattr(probe_module, "_SAID", set())
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    r = cli("restore", junk, "-o", tmp_path / "never.mkv", "--detector", "none", "--set", "input.decoder=nvdec")
    assert r.code == 4 and "NVDEC" not in r.err  # the file is the trouble, not the decoder
    assert_one_line_error(r.err)


def test_encoder_option_builders() -> None:
    assert encoder_options("libx264", 18, "medium") == {"crf": "18", "preset": "medium"}
    assert encoder_options("libsvtav1", 30, "slow") == {"crf": "30", "preset": "5"}
    assert encoder_options("libvpx-vp9", 31, "fast") == {"crf": "31", "b": "0", "row-mt": "1", "deadline": "good"}
    assert encoder_options("h264_nvenc", 20, "medium") == {"rc": "vbr", "cq": "20", "preset": "p4"}
    assert pick_pix_fmt("libx264", 8, 97, 64) == "yuv444p"
    assert pick_pix_fmt("libx264", 10, 96, 64) == "yuv420p10le"
    assert pick_pix_fmt("hevc_nvenc", 10, 96, 64) == "p010le"


@pytest.mark.parametrize("codec", ["libx265", "libsvtav1"])
def test_other_encoders(cli: Cli, tmp_path: Path, codec: str) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / f"out-{codec}.mkv"
    write_clip(src, frames(10, w=128, h=96))
    passthrough(cli, src, dst, "--codec", codec, "--set", "output.preset=ultrafast")
    assert_same_timing(src, dst, shift_ok=True)
    assert probe(dst).codec in {"libx265": ("hevc",), "libsvtav1": ("av1", "libdav1d")}[codec]


@pytest.mark.slow
def test_sigint_during_encode_leaves_nothing_at_the_target(tmp_path: Path) -> None:
    src, dst = tmp_path / "long.mp4", tmp_path / "out.mp4"
    write_clip(src, frames(600, w=640, h=360))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidrestore",
            "restore",
            str(src),
            "-o",
            str(dst),
            "--detector",
            "none",
            "--set",
            "output.preset=veryslow",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(".part-" in p.name for p in tmp_path.iterdir()):
        time.sleep(0.05)
    assert any(".part-" in p.name for p in tmp_path.iterdir()), "encoding never started"
    time.sleep(0.5)
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.time() - sent < 5, "Ctrl-C must stop the run promptly"
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["long.mp4"]


def test_a_damaged_packet_mid_stream_is_skipped_and_counted(cli: Cli, tmp_path: Path) -> None:
    good, bad, dst = tmp_path / "good.mkv", tmp_path / "bad.mkv", tmp_path / "out.mkv"
    write_clip(good, frames(30))
    with av.open(str(good)) as src, av.open(str(bad), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        n = 0
        for packet in src.demux():
            if not packet.size:
                continue
            index = packet.stream.index
            if packet.stream.type == "video":
                n += 1
                if n == 12:  # replace one frame's data with garbage of the same size
                    damaged = av.Packet(bytes([0xFF]) * packet.size)
                    damaged.pts, damaged.dts, damaged.time_base = packet.pts, packet.dts, packet.time_base
                    packet = damaged
                    at = float(packet.pts * packet.time_base)
            packet.stream = streams[index]
            out.mux(packet)
    r = cli("restore", bad, "-o", dst, "--detector", "none")
    assert r.code == 0, r.err
    # said once, at the damaged frame's time (frame 12 in decode order)
    assert f"is damaged: video #0 at {at:.2f}-{at + 0.04:.2f} s (1 packet(s) skipped)" in r.err
    p = probe(dst)
    assert 0 < p.frames < 30
    assert all(y > x for x, y in zip(p.pts, p.pts[1:]))
    assert list(p.audio.values()) == list(probe(good).audio.values())  # the audio is all there


def _suite_file(kind: str, tmp: Path) -> Path:
    """The I/O suite's kinds of input, one file each."""
    if kind == "mp4-h264-bframes-aac":
        write_clip(src := tmp / "in.mp4", frames())
    elif kind == "webm-vp9-opus":
        write_clip(src := tmp / "in.webm", frames(), codec="libvpx-vp9")
    elif kind == "mkv-vfr":
        pts = [0, 33, 66, 100, 600, 633, 1633, 1673, 1690, 1707, 1957, 1990]
        write_clip(src := tmp / "in.mkv", frames(len(pts)), pts=pts, time_base=Fraction(1, 1000), rate=30)
    elif kind == "mov-rotated":
        write_clip(src := tmp / "in.mov", frames(), rotation=90)
    elif kind == "mkv-10bit":
        write_clip(src := tmp / "in.mkv", frames(), pix_fmt="yuv420p10le")
    elif kind == "ts-h264":
        write_clip(src := tmp / "in.ts", frames())
    elif kind == "avi-mpeg4-bframes":
        src = tmp / "in.avi"
        with av.open(str(src), "w") as c:
            v: Any = c.add_stream("mpeg4", rate=25)
            v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
            v.codec_context.max_b_frames = 2
            for i, img in enumerate(frames()):
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts = i
                c.mux(v.encode(f))
            c.mux(v.encode(None))
    else:
        raise AssertionError(kind)
    return src


@pytest.mark.parametrize(
    "kind",
    ["mp4-h264-bframes-aac", "webm-vp9-opus", "mkv-vfr", "mov-rotated", "mkv-10bit", "ts-h264", "avi-mpeg4-bframes"],
)
def test_output_times_are_ffmpegs_best_effort_times(cli: Cli, tmp_path: Path, kind: str) -> None:
    src = _suite_file(kind, tmp_path)
    dst = tmp_path / f"out{src.suffix}"
    passthrough(cli, src, dst)
    want = best_effort_seconds(src)
    got = seconds(probe(dst))
    assert len(got) == len(want)
    known = [(g, w) for g, w in zip(got, want) if w is not None]
    assert len(known) >= len(want) - 1  # FFmpeg leaves at most the last frame without a time
    offset = known[0][0] - known[0][1]  # a container may start the output at another instant; sync is relative
    assert [g - offset for g, _ in known] == pytest.approx([w for _, w in known], abs=1.5e-3)
    assert all(b > a for a, b in itertools.pairwise(got))


def test_webm_with_no_flags_gets_vp9_and_keeps_its_opus_audio(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.webm", tmp_path / "out.webm"
    write_clip(src, frames(), codec="libvpx-vp9")
    r = cli("restore", src, "-o", dst, "--detector", "none", "-q")
    assert r.code == 0, r.err
    assert probe(dst).codec == "vp9"
    assert_same_timing(src, dst)  # the Opus packets byte for byte


def test_mp4_into_webm_reencodes_the_aac_to_opus(cli: Cli, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.webm"
    write_clip(src, frames())
    r = cli("restore", src, "-o", dst, "--detector", "none")
    assert r.code == 0, r.err
    b = probe(dst)
    assert b.codec == "vp9" and len(b.audio) == 1 and b.frames == 25


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-o", "out.webm", "--codec", "libx264"], ["cannot hold h264", "libvpx-vp9", ".mp4"]),
        (["-o", "out.flv", "--codec", "libx265"], ["cannot hold hevc", "libx264"]),
        (["-o", "out.xyz"], ["cannot write '.xyz'", ".mkv"]),
        (["-o", "out.mp4", "--set", "output.preset=turbo"], ["output.preset", "ultrafast"]),
    ],
)
def test_impossible_outputs_are_refused_before_any_model_loads(
    cli: Cli, tmp_path: Path, args: list[str], words: list[str]
) -> None:
    src = tmp_path / "in.mp4"
    write_clip(src, frames(5))
    missing = tmp_path / "no-such-weights.pth"  # loading any model would fail with exit 3
    argv = [a if not a.startswith("out.") else str(tmp_path / a) for a in args]
    r = cli("restore", src, *argv, "--detector", "centerface", "--set", f"restorer.weights={missing}")
    assert r.code == 2, r.err
    assert_one_line_error(r.err)
    for word in words:
        assert word in r.err
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"]


def test_container_table_defaults() -> None:
    from vidrestore.io.encoders import CONTAINERS, plan_output

    assert plan_output(".webm", "auto", 30, "medium").video == "libvpx-vp9"
    assert plan_output(".webm", "auto", 30, "medium").audio == "libopus"
    assert plan_output(".MP4", "auto", 18, "fast") == plan_output(".mp4", "libx264", 18, "fast")
    assert plan_output(".avi", "auto", 18, "medium").options["bf"] == "0"  # AVI keeps no pts: no B-frames
    assert plan_output(".mkv", "libsvtav1", 30, "slow").options == {"crf": "30", "preset": "5"}
    for suffix, box in CONTAINERS.items():  # every default is an encoder this FFmpeg build has
        assert plan_output(suffix, "auto", 23, "medium").video == box.video


@pytest.mark.parametrize("suffix", [".avi", ".ts", ".flv", ".mov", ".m4v", ".3gp", ".mkv"])
def test_every_container_in_the_table_writes_and_keeps_its_frames(cli: Cli, tmp_path: Path, suffix: str) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / f"out{suffix}"
    write_clip(src, frames(12))
    r = cli("restore", src, "-o", dst, "--detector", "none", "-q")
    assert r.code == 0, r.err
    b = probe(dst)
    assert b.frames == 12 and all(y > x for x, y in zip(b.pts, b.pts[1:]))
    assert len(b.audio) == 1


def test_joined_recordings_keep_real_times_and_audio_sync_after_a_reset(cli: Cli, tmp_path: Path) -> None:
    # two MPEG-TS recordings joined byte for byte: the second restarts its clock (and is variable-rate)
    one, two, joined, dst = tmp_path / "1.ts", tmp_path / "2.ts", tmp_path / "joined.ts", tmp_path / "out.ts"
    write_clip(one, frames(60))
    gaps = [40] * 20 + [200] + [40] * 19 + [400] + [40] * 18  # 60 frames
    write_clip(two, frames(60), pts=[0, *np.cumsum(gaps).tolist()], time_base=Fraction(1, 1000))
    joined.write_bytes(one.read_bytes() + two.read_bytes())
    report = tmp_path / "report.json"
    r = cli("restore", joined, "-o", dst, "--detector", "none", "--report", report)
    assert r.code == 0, r.err
    assert "jumped back" in r.err
    import json

    assert json.loads(report.read_text())["counts"]["timestamp_resets"] >= 2  # the video's and the audio's
    b = probe(dst)
    t = seconds(b)
    assert b.frames == 120 and all(y > x for x, y in itertools.pairwise(t))
    assert [round(y - x, 3) for x, y in itertools.pairwise(t[60:])] == [g / 1000 for g in gaps]  # real spacing
    (start, end), one_frame = next(iter(b.audio_span_s.values())), 0.04
    heard = sum(e - s for s, e in (next(iter(probe(x).audio_span_s.values())) for x in (one, two)))
    assert end - start == pytest.approx(heard, abs=one_frame)  # all of both recordings' audio, no gap
    first = probe(one)
    lead = next(iter(first.audio_span_s.values()))[0] - first.video_start_s
    assert start - b.video_start_s == pytest.approx(lead, abs=one_frame)  # in sync as the input was
    assert abs(end - b.video_end_s) <= 3 * one_frame  # and still in sync at the end, after the reset


def _clip_with_extras(dst: Path, *, font: bool = False, klv: bool = False, cover: bool = False) -> None:
    """A clip with the streams people's files carry besides video and audio."""
    from av.stream import Disposition

    with av.open(str(dst), "w") as c:
        cov: Any = None
        if cover:  # cover art first: a one-frame picture track (Matroska) or an attached picture (MP4)
            cov = c.add_stream("mjpeg")
            cov.width, cov.height, cov.pix_fmt = 32, 32, "yuvj420p"
            cov.disposition = Disposition.attached_pic
        v: Any = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
        a: Any = c.add_stream("aac", rate=48000, layout="stereo")
        d: Any = c.add_data_stream("klv") if klv else None
        if font:
            c.add_attachment("DejaVuSans.ttf", "application/x-truetype-font", b"\x00\x01\x00\x00FONT" * 50)
        if cov is not None:
            pic = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24")
            pic = pic.reformat(format="yuvj420p")
            pic.pts = 0
            c.mux(cov.encode(pic))
            c.mux(cov.encode(None))
        for i, img in enumerate(frames(25)):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            c.mux(v.encode(f))
            tone = av.AudioFrame.from_ndarray(np.zeros((2, 1920), np.float32), format="fltp", layout="stereo")
            tone.sample_rate, tone.pts, tone.time_base = 48000, i * 1920, Fraction(1, 48000)
            c.mux(a.encode(tone))
            if d is not None:
                pk = av.Packet(b"\x06\x0e\x2b\x34" + bytes([i]) * 12)
                pk.stream, pk.pts, pk.dts, pk.time_base = d, i * 3600, i * 3600, Fraction(1, 90000)
                c.mux(pk)
        c.mux(v.encode(None))
        c.mux(a.encode(None))


def _streams(path: Path) -> list[tuple[str, str | None]]:
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name if s.codec_context else None) for s in c.streams]


def test_font_attachments_are_copied_where_the_container_holds_them(cli: Cli, tmp_path: Path) -> None:
    src, dst, mp4 = tmp_path / "in.mkv", tmp_path / "out.mkv", tmp_path / "out.mp4"
    _clip_with_extras(src, font=True)
    passthrough(cli, src, dst)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        (fa,) = [s for s in a.streams if s.type == "attachment"]
        (fb,) = [s for s in b.streams if s.type == "attachment"]
        assert (fb.name, fb.mimetype, fb.data) == (fa.name, fa.mimetype, fa.data)
    r = passthrough(cli, src, mp4)
    warn = [ln for ln in r.err.splitlines() if "attachment" in ln]
    assert len(warn) == 1 and "DejaVuSans.ttf" in warn[0] and "left out" in warn[0]
    assert probe(mp4).frames == 25


def test_data_streams_are_copied_where_the_container_holds_them(cli: Cli, tmp_path: Path) -> None:
    src, dst, mkv = tmp_path / "in.ts", tmp_path / "out.ts", tmp_path / "out.mkv"
    _clip_with_extras(src, klv=True)
    passthrough(cli, src, dst)

    def klv_packets(path: Path) -> list[bytes]:
        with av.open(str(path)) as c:
            (d,) = [s for s in c.streams if s.type == "data"]
            return [bytes(p) for p in c.demux(d) if p.size]

    assert klv_packets(dst) == klv_packets(src) and len(klv_packets(src)) == 25
    r = passthrough(cli, src, mkv)
    warn = [ln for ln in r.err.splitlines() if "(data" in ln]
    assert len(warn) == 1 and "track 2" in warn[0] and "left out" in warn[0]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_cover_art_is_never_taken_for_the_video_and_is_kept(cli: Cli, tmp_path: Path, suffix: str) -> None:
    src, dst = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    _clip_with_extras(src, cover=True)
    r = passthrough(cli, src, dst)
    assert "copied as it is" not in r.err  # cover art is no second video track
    b = probe(dst)
    assert b.frames == 25 and (b.width, b.height) == (96, 64)
    assert ("video", "mjpeg") in _streams(dst)


def test_a_killed_runs_temp_file_is_removed_by_the_next_run(tmp_path: Path) -> None:
    src, dst = tmp_path / "long.mp4", tmp_path / "out.mp4"
    write_clip(src, frames(300, w=320, h=240))
    args = [sys.executable, "-m", "vidrestore", "restore", str(src), "-o", str(dst), "--detector", "none"]
    proc = subprocess.Popen(
        [*args, "--encode-preset", "veryslow"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(".part-" in p.name for p in tmp_path.iterdir()):
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no clean-up can run
    proc.wait(timeout=30)
    left = [p.name for p in tmp_path.iterdir() if ".part-" in p.name]
    assert len(left) == 1 and not dst.exists()
    done = subprocess.run([*args, "--encode-preset", "ultrafast"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "out.mp4"]
