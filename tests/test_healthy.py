"""Healthy files pass through whole: every file of a corpus made by the ffmpeg CLI is restored into
its own container with ffmpeg's frame count, ffprobe's frame times, every audio and subtitle packet
byte for byte, and no word of damage.

The corpus (``testkit.healthy``) spans MP4, MOV, MKV, WebM, AVI, TS, FLV, OGV, WMV, MPG and 3GP;
H.264 (8 and 10 bit), HEVC, ProRes, VP8, VP9, AV1, MPEG-4 Part 2 with packed B-frames, MJPEG,
Theora, WMV2, MPEG-1/2 and FFV1; AAC, AC3, FLAC, Opus, Vorbis, MP3, MP2, PCM and WMA; SubRip and
mov_text; an edit list; a short first AC3 frame in AVI and MKV; and first packets with no times.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import av.error
import pytest
from conftest import CliResult, assert_one_line_error
from media import best_effort_seconds

from testkit.corpus import ffmpeg_frames
from testkit.healthy import Healthy, make_healthy

Cli = Callable[..., CliResult]

NAMES = (
    "h264-aac.mp4",
    "h264-aac-movtext.mp4",
    "prores-pcm.mov",
    "hevc-flac-srt.mkv",
    "h264-10bit-opus-ac3.mkv",
    "ffv1-pcm.mkv",
    "vp8-vorbis.webm",
    "vp9-opus.webm",
    "av1-opus.mp4",
    "mpeg4-mp3.avi",
    "mjpeg-pcm.avi",
    "h264-aac.ts",
    "mpeg2-ac3.ts",
    "h264-mp3.flv",
    "theora-vorbis.ogv",
    "theora-vorbis-vfr.ogv",
    "vp8-opus.ogv",
    "wmv2-wmav2.wmv",
    "mpeg2-mp2.mpg",
    "mpeg1-mp2.mpg",
    "h264-aac.3gp",
    "h264-aac-two-tracks.mkv",
    "h264-aac-editlist.mp4",
    "mpeg4-ac3-packed.avi",
    "h264-ac3-short-first.avi",
    "h264-aac-ac3-short-first.mkv",
    "h264-aac-no-first-times.ts",
)


def _need_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have the ffmpeg CLI (.ci/run installs Debian's ffmpeg package)")
        pytest.skip("the ffmpeg CLI is not installed (apt-get install ffmpeg): it makes the corpus")


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Healthy]:
    _need_ffmpeg()
    return {h.path.name: h for h in make_healthy(tmp_path_factory.mktemp("healthy"))}


def test_the_corpus_is_every_file_named_here(healthy: dict[str, Healthy]) -> None:
    assert sorted(healthy) == sorted(NAMES)
    assert len(healthy) >= 20


def _lavfi(dst: Path, source: str, *codec: str) -> Path:
    """A clip made by the ffmpeg CLI from a lavfi ``source`` (MPEG-4 with the corpus's B-frame settings)."""
    extra = ["-bf", "2", "-g", "12", "-q:v", "5"] if codec[-1] == "mpeg4" else []
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", source, *codec, *extra, str(dst)], check=True
    )
    return dst


def _streams(path: Path) -> list[tuple[int, str, str]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=index,codec_type,codec_name", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # by name: ffprobe writes the fields in its own order, not the order asked for
    return [(int(s["index"]), s["codec_type"], s.get("codec_name", "")) for s in json.loads(out)["streams"]]


def _md5(path: Path, index: int) -> str:
    """FFmpeg's own digest of one stream's packets as demuxed (``-c copy -f md5``)."""
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:{index}", "-c", "copy", "-f", "md5", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip()


def _copied(path: Path) -> list[tuple[str, str, str]]:
    """Per audio and subtitle stream, in order: kind, codec and the digest of its packets."""
    return [(kind, codec, _md5(path, i)) for i, kind, codec in _streams(path) if kind in ("audio", "subtitle")]


@pytest.mark.parametrize("name", NAMES)
def test_a_healthy_file_comes_back_whole_in_its_own_container(
    cli: Cli, healthy: dict[str, Healthy], name: str, tmp_path: Path
) -> None:
    h = healthy[name]
    dst = tmp_path / f"out.{h.container}"
    report = tmp_path / "r.json"
    r = cli("restore", h.path, "-o", dst, "--detector", "none", "--encode-preset", "ultrafast", "--report", report)
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    assert "damaged" not in r.err, r.err
    warnings = [line for line in r.err.splitlines() if "warning" in line.lower()]
    if name == "h264-aac-no-first-times.ts":  # said as it is: the times were missing, and were made
        assert len(warnings) == 1 and "missing and were repaired" in warnings[0], r.err
    else:
        assert not warnings, r.err
    done = json.loads(report.read_text())
    assert done["damage"] == [], done["damage"]
    # ffmpeg's frame count
    assert ffmpeg_frames(dst) == ffmpeg_frames(h.path)
    # ffprobe's best-effort time for each frame (AVI stores none: there the count says it)
    before, after = best_effort_seconds(h.path), best_effort_seconds(dst)
    assert len(after) == len(before)
    assert all(b is not None for b in after)  # every output frame has its time
    if not h.timed_by_count:
        known = [(k, a, b) for k, (a, b) in enumerate(zip(before, after)) if a is not None]
        assert len(known) >= len(before) - 2  # FFmpeg has no time for a frame whose packet had none
        for k, a, b in known:
            assert b is not None and abs(a - b) <= 0.002, (k, a, b)
    # every audio and subtitle stream, byte for byte, in order
    assert _copied(dst) == _copied(h.path)


def test_the_packed_avi_is_packed_and_decodes_to_the_pictures_of_the_unpacked_one(
    healthy: dict[str, Healthy], tmp_path: Path
) -> None:
    """The corpus file really is what DivX wrote: the 'p' marker, B-frames inside P chunks, and
    the small not-coded placeholders; FFmpeg decodes it to the pictures FFmpeg's own encoder made."""
    path = healthy["mpeg4-ac3-packed.avi"].path
    data = path.read_bytes()
    assert b"DivX503b1393p" in data
    with av.open(str(path)) as c:
        sizes = [p.size for p in c.demux(c.streams.video[0]) if p.size]
    assert len(sizes) == 30 and sum(1 for s in sizes if s < 10) >= 5  # the placeholders
    unpacked = _lavfi(tmp_path / "unpacked.avi", "testsrc2=size=128x96:rate=25:duration=1.2", "-c:v", "mpeg4")

    def pictures(p: Path) -> list[str]:
        with av.open(str(p)) as c:
            return [hashlib.sha1(f.to_ndarray().tobytes()).hexdigest() for f in c.decode(c.streams.video[0])]

    assert pictures(path) == pictures(unpacked)


@pytest.mark.parametrize("name", ["h264-ac3-short-first.avi", "h264-aac-ac3-short-first.mkv"])
def test_a_short_first_ac3_frame_is_copied_not_judged(
    cli: Cli, healthy: dict[str, Healthy], name: str, tmp_path: Path
) -> None:
    """The first AC3 packet does not decode (it is short), and it is copied all the same: whether it
    plays is its decoder's business. ffmpeg -c copy keeps it; so does vidrestore."""
    h = healthy[name]

    def first_ac3(p: Path) -> bytes:
        with av.open(str(p)) as c:
            a = next(s for s in c.streams.audio if s.codec_context.name == "ac3")
            return next(bytes(pk) for pk in c.demux(a) if pk.size)

    first = first_ac3(h.path)
    decoder = av.CodecContext.create("ac3", "r")
    with pytest.raises(av.error.FFmpegError):
        decoder.decode(av.Packet(first))
    dst = tmp_path / f"out.{h.container}"
    r = cli("restore", h.path, "-o", dst, "--detector", "none", "--encode-preset", "ultrafast")
    assert r.code == 0 and "damaged" not in r.err, r.err
    assert first_ac3(dst) == first


def test_a_gap_in_byte_positions_before_any_timed_packet_is_a_guess_not_a_crash() -> None:
    """Megamind.avi's crash: bytes skipped before the video's first timed packet. A byte gap is a
    guess: it is said as possible damage, and every packet still goes out."""
    from fractions import Fraction
    from types import SimpleNamespace

    from vidrestore.io.damage import DamageLog
    from vidrestore.io.demux import ResumingDemuxer

    def packet(index: int, pos: int, dts: int | None) -> SimpleNamespace:
        stream = SimpleNamespace(index=index)
        return SimpleNamespace(
            stream=stream, pos=pos, size=100, dts=dts, pts=dts, time_base=Fraction(1, 25), duration=1
        )

    packets = [packet(1, 0, None), packet(1, 100, 0), packet(0, 10_000, 0), packet(0, 10_100, 1), packet(1, 10_200, 1)]
    container = SimpleNamespace(format=SimpleNamespace(name="avi"), demux=lambda: iter(packets))
    damage = DamageLog(Path("x.avi"), {0: "video", 1: "audio"})
    demux = ResumingDemuxer(container, lambda: container, [0, 1], 0, damage, end_s=None)
    assert list(demux) == packets
    assert not damage.damaged and len(damage.possible) == 1
    assert "9800 bytes skipped" in damage.possible[0]["evidence"]
    assert "may be damaged" in damage.summary() and "nothing was dropped" in damage.summary()


@pytest.mark.parametrize("suffix", ["avi", "mkv", "mp4"])
def test_scale_2_on_odd_sides_gives_exactly_double(cli: Cli, weights: Any, suffix: str, tmp_path: Path) -> None:
    _need_ffmpeg()
    src = _lavfi(tmp_path / "odd.avi", "testsrc=size=161x121:rate=25:duration=0.12", "-c:v", "mpeg4")
    with av.open(str(src)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (161, 121)
    dst = tmp_path / f"out.{suffix}"
    r = cli("restore", src, "-o", dst, "--detector", "none", "--scale", "2", *weights.sets())
    assert r.code == 0, r.err
    with av.open(str(dst)) as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height) == (322, 242)


def test_a_rate_mpeg_video_cannot_hold_names_the_container_to_use(cli: Cli, tmp_path: Path) -> None:
    _need_ffmpeg()
    src = _lavfi(tmp_path / "odd-rate.mp4", "testsrc=size=64x48:rate=12:duration=0.5", "-c:v", "libx264")
    dst = tmp_path / "out.mpg"
    r = cli("restore", src, "-o", dst, "--detector", "none")
    assert r.code == 2, r.err
    assert_one_line_error(r.err)
    assert "12.000 frames/s" in r.err and ".mkv" in r.err
    assert not dst.exists()


def test_no_healthy_file_is_taken_for_interlaced(healthy: dict[str, Healthy]) -> None:
    """The phone, call and screen files of the corpus are all progressive: the field stage must
    leave every one of them alone (a false alarm would deinterlace, and soften, a clean picture)."""
    from fractions import Fraction

    from vidrestore.io.fields import analyse
    from vidrestore.io.probe import main_video_stream, open_input, video_rate

    seen = 0
    for name, h in healthy.items():
        with open_input(h.path) as container:
            stream = main_video_stream(container.streams.video)
            if stream is None:
                continue
            tb = stream.time_base or Fraction(1, 90000)
            duration = float(stream.duration * tb) if stream.duration else (container.duration or 0) / 1e6
            args = (stream.index, stream.frames or 0, duration, video_rate(stream))
        scan = analyse(h.path, *args)
        assert scan.kind == "progressive", (name, scan)
        seen += 1
    assert seen >= 20
