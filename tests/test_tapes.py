"""Tapes, discs and camcorders: every file of a corpus made by the ffmpeg CLI (DVD NTSC 16:9 and 4:3
and PAL in .mpg/.vob, DV NTSC and PAL in AVI and raw .dv, an FFV1 VHS capture, HDV-style
1440x1080 H.264 in M2TS, hard telecine, telecined film edited with interlaced video, an anamorphic
progressive file and a progressive one whose flags say interlaced) comes back in its own container
in shape: its display aspect ratio, progressive pictures that FFmpeg's idet calls progressive (one
per field by default), film frames at 24000/1001, its duration, its audio as ``ffmpeg -c copy``
keeps it; and progressive files are never deinterlaced.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import pytest
from conftest import CliResult
from media import best_effort_seconds

from testkit.tape import MIXED, TAPES, Shelf

Cli = Callable[..., CliResult]
NAMES = [s.name for s in (*TAPES, MIXED)]
# the default run checks one of each kind; the slow run every file
QUICK = {"dvd-ntsc-16x9.mpg", "dv-ntsc.avi", "film-telecine.mpg", "film-and-video.mkv", "anamorphic.mp4"}


def _need_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("the ffmpeg CLI is not installed (apt-get install ffmpeg): it makes the corpus")


@pytest.fixture(scope="module")
def tapes(tmp_path_factory: pytest.TempPathFactory) -> Shelf:
    _need_ffmpeg()
    return Shelf(tmp_path_factory.mktemp("tapes"))  # each file made when a test first asks for it


def _video(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-of", "json", "-show_entries"]
        + ["stream=width,height,sample_aspect_ratio,nb_read_frames,r_frame_rate,codec_name,field_order", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stream: dict[str, str] = json.loads(out)["streams"][0]
    return stream


def _shown(video: dict[str, str]) -> Fraction:
    """The display aspect ratio: the stored size times the pixels' own shape."""
    sar = video.get("sample_aspect_ratio", "1:1")
    num, den = (int(x) for x in (sar if sar not in ("N/A", "0:1") else "1:1").split(":"))
    return Fraction(int(video["width"]), int(video["height"])) * Fraction(num, den)


def idet(path: Path) -> dict[str, int]:
    """FFmpeg's idet over every frame: its single-frame verdicts."""
    err = subprocess.run(
        ["ffmpeg", "-nostdin", "-i", str(path), "-vf", "idet", "-f", "null", "-"], capture_output=True, text=True
    ).stderr
    line = next(ln for ln in err.splitlines() if "Single frame detection" in ln)
    return {k.lower(): int(v) for k, v in re.findall(r"(TFF|BFF|Progressive|Undetermined):\s*(\d+)", line)}


def _progressive_share(counts: dict[str, int]) -> float:
    """The share of the frames idet decides about that it calls progressive (a still stretch is
    undetermined whatever its scan)."""
    decided = counts["tff"] + counts["bff"] + counts["progressive"]
    return counts["progressive"] / max(decided, 1)


def _md5(path: Path, stream: str) -> str:
    return subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", stream, "-c", "copy", "-f", "md5", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _duration(path: Path) -> float:
    times = [t for t in best_effort_seconds(path) if t is not None]
    return max(times) - min(times)


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in QUICK else [pytest.mark.slow]) for n in NAMES])
def test_a_tape_comes_back_in_shape_in_its_own_container(cli: Cli, tapes: Shelf, name: str, tmp_path: Path) -> None:
    tape = tapes[name]
    dst = tmp_path / f"out{tape.path.suffix}"
    report = tmp_path / "r.json"
    r = cli("restore", tape.path, "-o", dst, "--detector", "none", "--encode-preset", "ultrafast", "--report", report)
    assert r.code == 0, r.err
    assert "damaged" not in r.err and "Traceback" not in r.err, r.err
    done = json.loads(report.read_text())
    assert done["damage"] == []
    (fields,) = done["fields"]
    assert fields["kind"] == tape.kind, fields
    before, after = _video(tape.path), _video(dst)
    assert abs(float(_shown(after) / tape.spec.dar) - 1) < 0.01, (after, tape.spec.dar)  # the shape seen
    assert (after["width"], after["height"]) == (before["width"], before["height"])  # the stored grid kept
    frames_in, frames_out = int(before["nb_read_frames"]), int(after["nb_read_frames"])
    step = 1 / float(Fraction(after["r_frame_rate"]))
    if tape.interlaced:
        per = 1 if dst.suffix == ".dv" else 2  # DV holds its frame rate only: one picture per frame there
        assert frames_out == per * frames_in
    elif tape.kind == "telecine":
        assert Fraction(after["r_frame_rate"]) == Fraction(24000, 1001)
        assert abs(frames_out - frames_in * 4 / 5) <= 1  # four film frames of every five video frames
    else:
        assert frames_out == frames_in
    if tape.kind != "progressive":
        assert _progressive_share(idet(dst)) >= 0.9, idet(dst)
        assert _progressive_share(idet(tape.path)) < 0.5  # the input was combed, as idet sees it
    assert abs(_duration(dst) - _duration(tape.path)) <= 2 * step + 1e-3
    assert _md5(dst, "0:a") == _md5(tape.path, "0:a")  # the audio bytes as ffmpeg -c copy keeps them


@pytest.mark.parametrize("name", ["anamorphic.mp4", "progressive-flagged-tff.mkv"])
def test_progressive_tapes_are_never_deinterlaced(cli: Cli, tapes: Shelf, name: str, tmp_path: Path) -> None:
    """Lossless, the output decodes to the input, frame for frame and plane for plane, the one whose
    flags say TFF too (planes, not RGB: swscale takes the chroma of frames flagged interlaced by field)."""
    tape = tapes[name]
    dst = tmp_path / f"out{tape.path.suffix}"
    r = cli("restore", tape.path, "-o", dst, "--detector", "none", "--crf", "0", "--encode-preset", "ultrafast")
    assert r.code == 0, r.err
    assert "deinterlaced" not in r.err
    with av.open(str(tape.path)) as a, av.open(str(dst)) as b:
        ours = [[bytes(p) for p in f.planes] for f in b.decode(video=0)]
        theirs = [[bytes(p) for p in f.planes] for f in a.decode(video=0)]
    assert len(ours) == len(theirs)
    assert all(x == y for x, y in zip(ours, theirs, strict=True))


def test_single_field_rate_gives_one_picture_per_frame(cli: Cli, tapes: Shelf, tmp_path: Path) -> None:
    tape = tapes["dvd-ntsc-16x9.mpg"]
    dst = tmp_path / "out.mkv"
    r = cli("restore", tape.path, "-o", dst, "--detector", "none", "--set", "input.field_rate=single")
    assert r.code == 0, r.err
    assert int(_video(dst)["nb_read_frames"]) == tape.frames
    assert _progressive_share(idet(dst)) >= 0.9


def test_deinterlace_off_keeps_the_woven_frames_flagged(cli: Cli, tapes: Shelf, tmp_path: Path) -> None:
    tape = tapes["dv-ntsc.avi"]
    dst = tmp_path / "out.mkv"
    r = cli("restore", tape.path, "-o", dst, "--detector", "none", "--set", "input.deinterlace=off")
    assert r.code == 0, r.err
    assert "woven frames kept" in r.err
    out = _video(dst)
    assert int(out["nb_read_frames"]) == tape.frames
    assert out["field_order"].startswith("b")  # bottom field first, as a player must know to show it


def test_the_field_class_is_said_by_dry_run_inspect_and_the_closing_lines(
    cli: Cli, tapes: Shelf, tmp_path: Path
) -> None:
    tape = tapes["dvd-ntsc-16x9.mpg"]
    dry = cli("restore", tape.path, "--dry-run")
    assert dry.code == 0 and "interlaced, top field first" in dry.out and "shown 16:9" in dry.out, dry.out
    assert "29.970 fps" in dry.out and "(59.940 frames/s)" in dry.out  # the input's frames; the pictures made
    seen = cli("inspect", tape.path, "--detector", "centerface")
    assert seen.code == 0 and "interlaced, top field first" in seen.out, seen.out
    done = cli("restore", tape.path, "-o", tmp_path / "o.mpg", "--detector", "none")
    assert "fields: dvd-ntsc-16x9.mpg: interlaced, top field first; deinterlaced with bwdif" in done.err
    progressive = cli("restore", tapes["anamorphic.mp4"].path, "--dry-run")
    assert "fields: anamorphic.mp4: progressive; nothing to deinterlace; pixels 32:27 (shown 16:9)" in progressive.out


def test_a_dvd_program_stream_keeps_every_ac3_packet(cli: Cli, tmp_path: Path) -> None:
    """The issue's recipe: FFmpeg's MPEG-PS demuxer gives two AC3 packets one time; both are kept,
    as ``ffmpeg -c copy`` keeps all 94, and the file is not called damaged."""
    _need_ffmpeg()
    src = tmp_path / "dvd.mpg"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=720x480:rate=60000/1001"]
        + ["-f", "lavfi", "-i", "sine=f=440:sample_rate=48000", "-t", "3"]
        + ["-vf", "setsar=32/27,tinterlace=interleave_top,fieldorder=tff", "-flags", "+ilme+ildct", "-top", "1"]
        + ["-c:v", "mpeg2video", "-b:v", "6M", "-c:a", "ac3", str(src)],
        check=True,
    )
    with av.open(str(src)) as c:
        times = [p.pts for p in c.demux(audio=0) if p.size]
    assert len(times) == 94 and len(set(times)) == 93  # one time given twice: the case
    dst = tmp_path / "out.mpg"
    r = cli("restore", src, "-o", dst, "--detector", "none", "--encode-preset", "ultrafast")
    assert r.code == 0, r.err
    assert "damaged" not in r.err, r.err
    assert _md5(dst, "0:a") == _md5(src, "0:a")


def test_the_vhs_preset_deinterlaces_a_vhs_capture_at_its_field_rate(cli: Cli, tapes: Shelf, tmp_path: Path) -> None:
    tape = tapes["vhs-capture-pal.mkv"]
    dst, report = tmp_path / "out.mkv", tmp_path / "r.json"
    r = cli("restore", tape.path, "-o", dst, "--preset", "vhs", "--detector", "none", "--report", report)
    assert r.code == 0, r.err
    (fields,) = json.loads(report.read_text())["fields"]
    assert fields["kind"] == "tff" and fields["deinterlacer"] == "bwdif" and fields["pictures_per_frame"] == 2
    assert int(_video(dst)["nb_read_frames"]) == 2 * tape.frames
    assert _progressive_share(idet(dst)) >= 0.9


@pytest.mark.parametrize(
    ("name", "size", "said"),
    [
        ("anamorphic.mp4", (854, 480), "32:27 (854x480, shown 16:9)"),
        ("dvd-ntsc-4x3.vob", (640, 480), "8:9 (640x480, shown 4:3)"),
    ],
)
def test_square_pixels_resamples_the_output_to_its_display_shape(
    cli: Cli, tapes: Shelf, tmp_path: Path, name: str, size: tuple[int, int], said: str
) -> None:
    tape = tapes[name]
    dst = tmp_path / "out.mkv"
    r = cli("restore", tape.path, "-o", dst, "--detector", "none", "--set", "output.square_pixels=true")
    assert r.code == 0, r.err
    after = _video(dst)
    assert (int(after["width"]), int(after["height"])) == size
    assert after.get("sample_aspect_ratio", "1:1") in ("1:1", "N/A")
    assert abs(float(_shown(after) / tape.spec.dar) - 1) < 0.01
    assert f"resampled to square pixels from {said}" in r.err, r.err
