"""Damaged inputs: every frame the ffmpeg command-line tool recovers is kept, and the damage is reported.

The corpus is made here, seeded (``testkit.corpus``): byte flips, zeroed, removed and
duplicated ranges, damaged indexes, a huge audio sample size and truncations, in MP4, MOV, MKV,
AVI and WebM files with two audio tracks. Each file is compared with what Debian's ``ffmpeg``
decodes from it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import CliResult, assert_one_line_error
from media import probe

from testkit.clips import make_face_clip
from testkit.corpus import CONTAINERS, KINDS, Damaged, _handler, _mp4_tracks, damage, ffmpeg_frames, make_corpus

SEEDS = (0, 1)
Cli = Callable[..., CliResult]


def _need_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have the ffmpeg CLI (.ci/run installs Debian's ffmpeg package)")
        pytest.skip("the ffmpeg CLI is not installed (apt-get install ffmpeg): no yardstick here")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Damaged]:
    return make_corpus(tmp_path_factory.mktemp("damaged"), seeds=SEEDS)


def test_the_corpus_covers_every_kind_of_damage_in_every_container(corpus: list[Damaged], tmp_path: Path) -> None:
    made = {(d.container, d.kind) for d in corpus}
    for container in CONTAINERS:
        for kind in KINDS:
            if kind != "sample-size" or container in ("mp4", "mov"):
                assert (container, kind) in made
    assert len(corpus) == 64
    # each damaged copy differs from its source, and the corpus is the same every time it is made
    for d in corpus:
        assert d.path.read_bytes() != d.source.read_bytes()
    again = make_corpus(tmp_path, seeds=(1,), containers=("mp4", "webm"), kinds=("flip", "sample-size"))
    made_before = {(d.container, d.kind, d.seed): d.path.read_bytes() for d in corpus}
    for d in again:
        assert d.path.read_bytes() == made_before[(d.container, d.kind, d.seed)], d.path.name
    for d in corpus:
        src = probe(d.source)
        assert len(src.audio) == 2, d.source  # two audio tracks in every container


@pytest.mark.parametrize(
    "container", [pytest.param(c, marks=pytest.mark.slow) if c == "webm" else c for c in CONTAINERS]
)  # WebM (VP9) is the slowest to encode; it reads as MKV does
def test_every_damaged_file_keeps_at_least_ffmpegs_frames(
    cli: Cli, corpus: list[Damaged], container: str, tmp_path: Path
) -> None:
    _need_ffmpeg()
    for d in (d for d in corpus if d.container == container):
        dst = tmp_path / f"out-{d.path.name}"
        report = tmp_path / f"{d.path.name}.json"
        r = cli("restore", d.path, "-o", dst, "--detector", "none", "--report", report, "--encode-preset", "ultrafast")
        assert "Traceback" not in r.err, (d.path.name, r.err)
        reference = ffmpeg_frames(d.path)
        if r.code == 4:  # only when nothing at all is decodable
            assert_one_line_error(r.err)
            assert reference == 0, (d.path.name, r.err)
            assert not dst.exists()
            continue
        assert r.code == 0, (d.path.name, r.err)
        kept = ffmpeg_frames(dst)
        assert kept >= reference - 1, (d.path.name, kept, reference)
        damage = json.loads(report.read_text())["damage"]
        warnings = [ln for ln in r.err.splitlines() if "damaged" in ln]
        assert len(warnings) == len(damage) <= 1, r.err
        if kept < ffmpeg_frames(d.source):  # frames were lost: the damage was seen and said
            assert damage and damage[0]["file"] == str(d.path), (d.path.name, r.err)


def test_the_undamaged_sources_report_no_damage(cli: Cli, corpus: list[Damaged], tmp_path: Path) -> None:
    for src in sorted({d.source for d in corpus}):
        report = tmp_path / "r.json"
        r = cli("restore", src, "-o", tmp_path / src.name, "--detector", "none", "--report", report, "-y")
        assert r.code == 0, r.err
        assert "warning" not in r.err, r.err
        assert json.loads(report.read_text())["damage"] == []


@pytest.mark.parametrize("ext", ["ts", "mp4", "mkv", "flv", "mov", "avi"])
def test_healthy_files_with_large_frames_report_no_damage(cli: Cli, tmp_path: Path, ext: str) -> None:
    """Noise compresses badly: frames of tens of kB, which MPEG-TS cuts into 188-byte pieces (a
    byte-position check there took every large frame for a loss)."""
    from testkit.clips import write_clip

    rng = np.random.default_rng(0)
    src = tmp_path / f"noise.{ext}"
    write_clip(
        src,
        [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(30)],
        codec="mpeg4" if ext == "avi" else "libx264",
        audio="libmp3lame" if ext == "avi" else True,
        audio_tracks=2,
    )
    report = tmp_path / "r.json"
    r = cli("restore", src, "-o", tmp_path / f"out.{ext}", "--detector", "none", "--report", report)
    assert r.code == 0, r.err
    assert "warning" not in r.err, r.err
    assert json.loads(report.read_text())["damage"] == []


def _huge_audio_sample(tmp_path: Path) -> tuple[Path, Path]:
    """The issue's file: one audio track, one sample-size entry huge, 271 frames."""
    src = tmp_path / "clip.mp4"
    make_face_clip(src, frames=271, size=(192, 144), face_scale=0.3, audio="aac", gop=25)
    data = bytearray(src.read_bytes())
    (track,) = [t for t in _mp4_tracks(bytes(data)) if _handler(bytes(data), t[b"hdlr"]) == b"soun"]
    stsz, _ = track[b"stsz"]
    entry = stsz + 20 + 4 * 170  # a sample that opens a chunk of two, 3.6 s in
    data[entry + 1] ^= 0x7F  # its size: megabytes, past the end of the file
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    return src, bad


def test_a_damaged_sample_size_costs_that_sample_not_the_rest_of_the_file(cli: Cli, tmp_path: Path) -> None:
    src, bad = _huge_audio_sample(tmp_path)
    with av.open(str(bad)) as c:  # the symptom: FFmpeg's demuxer takes the damage for the end of the file
        demuxed = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    assert demuxed < 150
    dst, report = tmp_path / "out.mp4", tmp_path / "r.json"
    r = cli("restore", bad, "-o", dst, "--detector", "none", "--report", report)
    assert r.code == 0, r.err
    out, ref = probe(dst), probe(src)
    assert out.frames == 271  # every frame after the damage is kept
    assert out.pts == ref.pts
    assert "truncated" not in r.err and "ends early" not in r.err
    (entry,) = json.loads(report.read_text())["damage"]
    assert entry["ended_early"] is False and entry["resumed"] >= 1
    (audio,) = [s for s in entry["streams"] if s["kind"] == "audio"]
    assert audio["packets_skipped"] >= 1
    ((start, end),) = audio["ranges"]
    assert 3.0 < start < 3.7 and end < 5.0  # the damaged stretch, and no more
    # the audio around the damage is the input's, at the input's times (the undamaged copy has them all)
    with av.open(str(src)) as c:
        original = {p.pts: bytes(p) for p in c.demux(c.streams.audio[0]) if p.size}
    with av.open(str(dst)) as c:
        copied = {p.pts: bytes(p) for p in c.demux(c.streams.audio[0]) if p.size}
    assert len(copied) > 0.85 * len(original)
    assert all(original.get(pts) == data for pts, data in copied.items())
    assert max(copied) > 10.0 * 48000  # the audio after the damage is there too


def test_strict_turns_damage_into_exit_4_with_nothing_written(cli: Cli, tmp_path: Path) -> None:
    _, bad = _huge_audio_sample(tmp_path)
    dst = tmp_path / "out.mp4"
    r = cli("restore", bad, "-o", dst, "--detector", "none", "--strict")
    assert r.code == 4
    assert_one_line_error(r.err)
    assert "damaged" in r.err and "--strict" in r.err
    assert not dst.exists() and not list(tmp_path.glob("*.part"))


def test_strict_passes_an_undamaged_file(cli: Cli, tmp_path: Path) -> None:
    src, _ = _huge_audio_sample(tmp_path)
    r = cli("restore", src, "-o", tmp_path / "out.mp4", "--detector", "none", "--strict")
    assert r.code == 0, r.err


def test_a_truncated_file_is_said_to_end_early_once_even_when_quiet(cli: Cli, tmp_path: Path) -> None:
    src, _ = _huge_audio_sample(tmp_path)
    cut = tmp_path / "cut.mp4"
    # the index goes first (as web uploads have it), so that the first half can still be read
    with av.open(str(src)) as i, av.open(str(tmp_path / "fast.mp4"), "w", options={"movflags": "+faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.size:
                p.stream = streams[p.stream.index]
                o.mux(p)
    data = (tmp_path / "fast.mp4").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    report = tmp_path / "r.json"
    r = cli("restore", cut, "-o", tmp_path / "out.mp4", "--detector", "none", "-q", "--report", report)
    assert r.code == 0, r.err
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "really ends early" in lines[0], r.err
    (entry,) = json.loads(report.read_text())["damage"]
    assert entry["ended_early"] is True and 3.0 < entry["ended_at"] < 8.0
    assert entry["expected_end"] == pytest.approx(10.84, abs=0.1)


def _audio_packets(path: Path) -> dict[int, dict[int, bytes]]:
    """Per audio track (by order), its packets' bytes by pts, in one pass (as far as PyAV reads)."""
    out: dict[int, dict[int, bytes]] = {}
    with av.open(str(path)) as c:
        order = {s.index: k for k, s in enumerate(c.streams.audio)}
        for k in order.values():
            out[k] = {}
        try:
            for p in c.demux(*c.streams.audio):
                if p.size and p.pts is not None:
                    out[order[p.stream.index]][p.pts] = bytes(p)
        except av.error.FFmpegError:
            pass
    return out


def _packet_counts(path: Path) -> list[int]:
    """Packets per stream as ffprobe reads them."""
    _need_ffmpeg()
    import subprocess

    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"]
        + [str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(x) for x in out.split()]


def test_copied_audio_keeps_its_times_around_damage_in_every_container(
    cli: Cli, corpus: list[Damaged], tmp_path: Path
) -> None:
    """Packets that survive the damage are copied byte for byte at the input's times."""
    for d in (d for d in corpus if d.kind in ("flip", "zero", "remove", "sample-size") and d.seed == 0):
        dst = tmp_path / f"out-{d.path.name}"
        r = cli("restore", d.path, "-o", dst, "--detector", "none", "--encode-preset", "ultrafast")
        if r.code == 4:
            continue  # nothing decodable (an MOV that lost bytes before its index at the end)
        assert r.code == 0, (d.path.name, r.err)
        if d.container == "avi":  # times are packet counts: every packet read is kept, damaged or not
            kept, there = _packet_counts(dst)[1:], _packet_counts(d.path)[1:]
            assert all(k >= t for k, t in zip(kept, there)), (d.path.name, kept, there)
            continue
        source, damaged, copied = _audio_packets(d.source), _audio_packets(d.path), _audio_packets(dst)
        assert len(copied) == 2, d.path.name
        for k, after in copied.items():
            assert len(after) > len(source[k]) // 2, d.path.name
            for pts, data in after.items():
                assert pts in source[k], (d.path.name, k, pts)  # at a time the audio really had
                # as it is in the file (flipped bytes stay flipped; nothing is made up or moved)
                assert data in (damaged[k].get(pts), source[k][pts]), (d.path.name, k, pts)


def test_the_corpus_index_damage_hits_the_index(corpus: list[Damaged]) -> None:
    for d in (d for d in corpus if d.kind == "index" and d.container == "mp4"):
        a, b = d.source.read_bytes(), d.path.read_bytes()
        changed = [i for i in range(len(a)) if a[i] != b[i]]
        (moov,) = [(pos, size) for kind, pos, size in _box_walk(a) if kind == b"moov"]
        assert changed and all(moov[0] <= i < moov[0] + moov[1] for i in changed)


def _box_walk(data: bytes) -> list[tuple[bytes, int, int]]:
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((kind, pos, size))
        pos += size
    return out


class _P:
    """A stand-in packet: what InOrder reads."""

    def __init__(self, ts: int, duration: int = 0) -> None:
        self.dts = self.pts = ts
        self.duration = duration
        self.time_base = Fraction(1, 1000)


def test_in_order_drops_a_damaged_time_and_keeps_a_reset() -> None:
    from vidrestore.io.demux import InOrder

    order, kept, dropped = InOrder(equal_ok=False), [], []
    # 20 ms audio packets; one time flipped back (to 0), one flipped ahead (to 90 s), then a reset
    # to 0 that the packets after it keep to (joined recordings): only the two flips are damage
    times = [5000, 5020, 5040, 0, 5080, 5100, 90000, 5140, 5160, 5180, 0, 20, 40]
    for t in times:
        k, d = order.push(_P(t))
        kept += [p.dts for p in k]
        dropped += [p.dts for p in d]
    k, d = order.flush()
    kept += [p.dts for p in k]
    assert dropped == [0, 90000]
    assert kept == [5000, 5020, 5040, 5080, 5100, 5140, 5160, 5180, 0, 20, 40]


def test_in_order_keeps_two_packets_that_share_a_time() -> None:
    """MPEG-PS demuxers give one PES time to both audio frames it carries: nothing is dropped. The
    earlier moves back to where the packet before it ends (its real time); a time shared with the
    packet before moves one tick on, as ffmpeg -c copy does."""
    from vidrestore.io.demux import InOrder

    order, kept, dropped = InOrder(equal_ok=False), [], []
    for t in [0, 32, 96, 96, 128, 128, 160]:  # 32 ms AC3 frames; 64 is missing, 96 given twice
        k, d = order.push(_P(t, 32))
        kept += [p.dts for p in k]
        dropped += d
    kept += [p.dts for p in order.flush()[0]]
    assert dropped == []
    assert kept == [0, 32, 64, 96, 128, 129, 160]
    assert order.shifted == 2


def test_error_locator_names_the_packet_whose_frame_never_came() -> None:
    from vidrestore.io.damage import ErrorLocator

    where = ErrorLocator(window=8, settle=4)
    spans = [(i, i * 0.04, (i + 1) * 0.04) for i in range(30)]
    for i, span in enumerate(spans):
        where.sent(span)
        if i == 12:
            where.error()  # reported two packets late, as frame threads do: packet 10 was the bad one
        if i >= 3 and i - 3 != 10:
            where.seen(i - 3)  # frames come out three packets behind
        if i == 13:
            assert where.settled() == []  # too early to say
    (lost,) = where.settled()
    assert lost == [spans[10]]
    where.error()  # a concealed error: every frame came out, so the packet being sent is named
    for i in range(27, 30):
        where.seen(i)
    assert where.settled(final=True) == [[spans[29]]]


def test_avi_index_and_header_counts_are_read_from_the_file(corpus: list[Damaged]) -> None:
    from vidrestore.io.avi import avi_header_seconds, avi_index_counts

    source = next(d.source for d in corpus if d.container == "avi")
    counts = avi_index_counts(source)
    assert counts is not None and counts[0][0] == 100 and counts[1][0] > 150 and counts[2][0] > 150
    assert all(size > 0 for _, size in counts.values())  # and their bytes
    assert avi_header_seconds(source) == pytest.approx(4.0, abs=0.1)
    truncated = next(d.path for d in corpus if d.container == "avi" and d.kind == "truncate")
    assert avi_index_counts(truncated) is None  # the index was at the end that is gone
    removed = next(d.path for d in corpus if d.container == "avi" and d.kind == "remove")
    assert avi_index_counts(removed) == counts  # found from the end, though the chunk sizes before it lie
    mkv = next(d.source for d in corpus if d.container == "mkv")
    assert avi_index_counts(mkv) is None and avi_header_seconds(mkv) is None


HEALTHY_SOURCES = (
    "mpeg4-ac3-packed.avi",
    "h264-ac3-short-first.avi",
    "mpeg2-mp2.mpg",
    "wmv2-wmav2.wmv",
    "theora-vorbis.ogv",
    "vp8-opus.ogv",
    "h264-aac.ts",
    "mpeg2-ac3.ts",
    "h264-mp3.flv",
)
BYTE_KINDS = ("flip", "zero", "remove", "duplicate", "truncate")


@pytest.fixture(scope="module")
def damaged_healthy(tmp_path_factory: pytest.TempPathFactory) -> list[Damaged]:
    """The damage corpus made from the healthy corpus too: containers and codecs the clips above
    lack (packed B-frames, MPEG program and transport streams, ASF, Ogg, FLV)."""
    _need_ffmpeg()
    from testkit.healthy import make_healthy

    folder = tmp_path_factory.mktemp("damaged-healthy")
    sources = {h.path.name: h.path for h in make_healthy(folder / "healthy")}
    out = []
    for name in HEALTHY_SOURCES:
        src = sources[name]
        for kind in BYTE_KINDS:
            for seed in SEEDS:
                dst = damage(src, folder / f"{kind}-{seed}-{name}", kind, seed)
                out.append(Damaged(dst, src, src.suffix.lstrip("."), kind, seed))
    return out


@pytest.mark.parametrize("name", HEALTHY_SOURCES)
def test_damaged_copies_of_healthy_files_keep_at_least_ffmpegs_frames(
    cli: Cli, damaged_healthy: list[Damaged], name: str, tmp_path: Path
) -> None:
    for d in (d for d in damaged_healthy if d.source.name == name):
        dst = tmp_path / f"out-{d.path.name}"
        report = tmp_path / f"{d.path.name}.json"
        r = cli("restore", d.path, "-o", dst, "--detector", "none", "--report", report, "--encode-preset", "ultrafast")
        assert "Traceback" not in r.err, (d.path.name, r.err)
        reference = ffmpeg_frames(d.path)
        if r.code == 4:
            assert_one_line_error(r.err)
            assert reference == 0, (d.path.name, r.err)
            continue
        assert r.code == 0, (d.path.name, r.err)
        kept = ffmpeg_frames(dst)
        assert kept >= reference - 1, (d.path.name, kept, reference)


CASES = Path(__file__).parent / "data" / "cases"


def _case(name: str, sha256: str, tmp_path: Path) -> Path:
    """A file an issue names, kept in parts of under 1 MB each (the cap on committed files), joined
    and checked here."""
    import hashlib

    parts = sorted(CASES.glob(f"{name}.part*"))
    data = b"".join(p.read_bytes() for p in parts)
    assert hashlib.sha256(data).hexdigest() == sha256, f"{name}: its parts do not join to the file named"
    out = tmp_path / name
    out.write_bytes(data)
    return out


def test_a_damaged_mkv_keeps_its_tail_past_a_damaged_block(cli: Cli, tmp_path: Path) -> None:
    """Issue 31's file (H.264 + AAC + AC3, scattered byte flips). FFmpeg 8's Matroska demuxer gives up
    on the rest of the last cluster at a block whose lacing flags were flipped (and ended the file at
    11.05 s of 11.30 s); the blocks after it are whole, and are read by walking the file's own
    structure. Every frame the ffmpeg CLI decodes is kept (more: the stretch FFmpeg 5.1 steps over at
    3.9 s is read too), and nothing is called truncated."""
    _need_ffmpeg()
    from media import best_effort_seconds

    src = _case("damaged-2audio.mkv", "57adb84ec4447fca8b021bcebe4c622c8de3ec1685c747090b42946ab16a9efa", tmp_path)
    dst, report = tmp_path / "out.mkv", tmp_path / "r.json"
    r = cli("restore", src, "-o", dst, "--detector", "none", "--encode-preset", "ultrafast", "--report", report)
    assert r.code == 0, r.err
    assert "ends early" not in r.err and "truncated" not in r.err, r.err
    theirs = [t for t in best_effort_seconds(src) if t is not None]  # every frame FFmpeg decodes, with its time
    assert len(theirs) == 265  # what the issue measured with the ffmpeg CLI
    kept = [t for t in best_effort_seconds(dst) if t is not None]
    assert len(kept) >= len(theirs) - 1
    ours = {round(t, 2) for t in kept}
    missing = [t for t in theirs if round(t, 2) not in ours]
    assert missing == [], missing  # 10.93 s and 10.97 s among them, and the tail through 11.26 s
    (entry,) = json.loads(report.read_text())["damage"]
    assert entry["ended_early"] is False and entry["damaged"] is True
    damaged = {s["index"]: s for s in entry["streams"]}
    assert damaged[1]["packets_skipped"] >= 1  # the AAC block whose header was hit
    # the audio after the damaged block came through too: the AAC track reaches the end
    assert probe(dst).audio_span_s[1][1] > 11.2


@pytest.mark.parametrize("ext", ["mkv", "webm"])
def test_the_matroska_block_reader_reads_what_ffmpeg_demuxes(tmp_path: Path, ext: str) -> None:
    """Over a whole healthy file, the blocks read by walking its structure are FFmpeg's packets: the
    same stream, time (codec delays taken off as FFmpeg takes them), position and bytes; none damaged."""
    from testkit.corpus import make_source
    from vidrestore.io.mkv import salvage

    src = make_source(tmp_path / f"clip.{ext}")
    with av.open(str(src)) as c:
        demuxed = [(p.stream.index, p.pts, p.pos, bytes(p)) for p in c.demux() if p.size]
    found = salvage(src, 0, None)
    assert found.damaged == []
    assert [(b.stream, b.pts, b.pos, b.data) for b in found.blocks] == demuxed
