"""A corpus of tape, disc and camcorder files, made by the ffmpeg command-line tool the way DVD
authoring tools, DV camcorders, capture cards and HDV/AVCHD cameras write them: interlaced fields
(top and bottom first), hard telecine, film and video edited together, non-square pixels, and
flags that lie. Nothing here is used by a run.

The pictures are a real photograph (``skimage.data.astronaut()``, a face in it) panned smoothly at
the field rate, then woven into fields with FFmpeg's ``tinterlace`` (or telecined with
``telecine``): what a camera sees, so FFmpeg's ``idet`` judges it as it judges real footage (it
calls synthetic test patterns such as ``testsrc2`` combed even when they are progressive).

Each :class:`Tape` says what it is (``kind``: progressive, tff, bff, telecine, mixed), its display
aspect ratio, and how many frames it holds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from testkit.corpus import run_ffmpeg

__all__ = ["MIXED", "TAPES", "Shelf", "Tape", "make_tape", "make_tapes", "write_photo"]

SECONDS = 1.6


@dataclass(frozen=True)
class Spec:
    """How one file is made: its picture (size, field or frame rate, the weave) and its encoding."""

    name: str
    kind: str  # what it really is: progressive, tff, bff, telecine, mixed
    size: tuple[int, int]
    rate: Fraction  # the rate of the pictures before weaving (field rate for interlaced video)
    sar: Fraction
    weave: str  # the filters that make the stored frames from the panned pictures
    args: tuple[str, ...]  # video and audio encoding
    audio: str = "ac3"

    @property
    def dar(self) -> Fraction:
        return Fraction(self.size[0], self.size[1]) * self.sar


_TFF = "tinterlace=interleave_top,fieldorder=tff"
_BFF = "tinterlace=interleave_bottom,fieldorder=bff"
_MPEG2 = ("-c:v", "mpeg2video", "-b:v", "8M", "-flags", "+ilme+ildct")

TAPES: tuple[Spec, ...] = (
    Spec("dvd-ntsc-16x9.mpg", "tff", (720, 480), Fraction(60000, 1001), Fraction(32, 27), _TFF, (*_MPEG2, "-top", "1")),
    Spec("dvd-ntsc-4x3.vob", "tff", (720, 480), Fraction(60000, 1001), Fraction(8, 9), _TFF, (*_MPEG2, "-top", "1")),
    Spec("dvd-pal.mpg", "tff", (720, 576), Fraction(50), Fraction(16, 15), _TFF, (*_MPEG2, "-top", "1"), audio="mp2"),
    Spec(
        "dv-ntsc.avi",
        "bff",
        (720, 480),
        Fraction(60000, 1001),
        Fraction(8, 9),
        _BFF,
        ("-c:v", "dvvideo", "-pix_fmt", "yuv411p"),
        audio="pcm_s16le",
    ),
    Spec(
        "dv-pal.dv",
        "bff",
        (720, 576),
        Fraction(50),
        Fraction(16, 15),
        _BFF,
        ("-c:v", "dvvideo", "-pix_fmt", "yuv420p"),
        audio="pcm_s16le",
    ),
    Spec(
        "dv-pal-420.avi",
        "bff",
        (720, 576),
        Fraction(50),
        Fraction(16, 15),
        _BFF,
        ("-c:v", "dvvideo", "-pix_fmt", "yuv420p"),
        audio="pcm_s16le",
    ),
    Spec(
        "vhs-capture-pal.mkv",
        "tff",
        (720, 576),
        Fraction(50),
        Fraction(16, 15),
        _TFF,
        ("-c:v", "ffv1", "-field_order", "tt"),
        audio="pcm_s16le",
    ),
    Spec(
        "hdv.m2ts",
        "tff",
        (1440, 1080),
        Fraction(50),
        Fraction(4, 3),
        _TFF,
        ("-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-flags", "+ildct+ilme", "-x264opts", "tff=1"),
    ),
    Spec(
        "film-telecine.mpg",
        "telecine",
        (720, 480),
        Fraction(24000, 1001),
        Fraction(8, 9),
        "telecine=pattern=23",
        (*_MPEG2, "-top", "1"),
    ),
    Spec(
        "anamorphic.mp4",
        "progressive",
        (720, 480),
        Fraction(30000, 1001),
        Fraction(32, 27),
        "null",
        ("-c:v", "libx264", "-preset", "ultrafast", "-crf", "12"),
        audio="aac",
    ),
    Spec(
        "progressive-flagged-tff.mkv",
        "progressive",
        (640, 480),
        Fraction(25),
        Fraction(1),
        "null",
        ("-c:v", "ffv1", "-field_order", "tt"),
        audio="flac",
    ),
)
MIXED = Spec(
    "film-and-video.mkv",
    "mixed",
    (720, 480),
    Fraction(30000, 1001),
    Fraction(8, 9),
    "",
    ("-c:v", "ffv1", "-field_order", "tt"),
    audio="pcm_s16le",
)


@dataclass(frozen=True)
class Tape:
    """One file of the corpus and what it really is."""

    path: Path
    spec: Spec
    frames: int  # stored frames, as the ffmpeg CLI counts them

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def interlaced(self) -> bool:
        return self.kind in ("tff", "bff")


def _run(args: list[str]) -> None:
    run_ffmpeg(args, timeout=600)


def write_photo(path: Path) -> Path:
    """The astronaut photograph (512x512) as a PNG, the corpus's source picture."""
    from PIL import Image

    from testkit.clips import astronaut

    if not path.exists():
        Image.fromarray(astronaut()).save(path)
    return path


def _panned(photo: Path, size: tuple[int, int], rate: Fraction, seconds: float, sar: Fraction) -> tuple[list[str], str]:
    """ffmpeg input and filter arguments: the photo scaled up and panned smoothly (about 3 px per
    picture, with a slow drift down), stored at ``size`` with pixels ``sar`` wide (the picture is
    squeezed to them, as a camera's anamorphic frame is)."""
    w, h = size
    shown = round(w * sar)  # the width a viewer sees
    big = 2 * max(shown, h)
    fps = f"{rate.numerator}/{rate.denominator}"
    pan = (
        f"scale={big}:{big},fps={fps},crop={shown}:{h}:x='{big // 8}+190*t':y='{big // 8}+40*t',"
        f"scale={w}:{h},setsar={sar.numerator}/{sar.denominator}"
    )
    return ["-loop", "1", "-framerate", fps, "-t", f"{seconds}", "-i", str(photo)], pan


_AUDIO = ["-f", "lavfi", "-t", f"{SECONDS}", "-i", "sine=frequency=440:sample_rate=48000"]


def _audio(spec: Spec) -> list[str]:
    """Stereo at 48 kHz (what DV holds), cut to the video."""
    return ["-c:a", spec.audio, "-ac", "2", "-shortest"]


def make_tape(spec: Spec, folder: Path, photo: Path) -> Path:
    """One file of the corpus in ``folder``."""
    dst = folder / spec.name
    if spec.kind == "mixed":
        return _make_mixed(spec, folder, photo)
    inputs, pan = _panned(photo, spec.size, spec.rate, SECONDS, spec.sar)
    vf = f"{pan},{spec.weave},format={_pix(spec)}"
    _run([*inputs, *_AUDIO, "-vf", vf, "-map", "0:v", "-map", "1:a", *spec.args, *_audio(spec), str(dst)])
    return dst


def _pix(spec: Spec) -> str:
    for i, arg in enumerate(spec.args):
        if arg == "-pix_fmt":
            return spec.args[i + 1]
    return "yuv420p"


def _make_mixed(spec: Spec, folder: Path, photo: Path) -> Path:
    """Telecined film, then interlaced video, each ``SECONDS`` long, in one file (as a documentary
    edits them together)."""
    inputs, pan = _panned(photo, spec.size, Fraction(24000, 1001), SECONDS, spec.sar)
    film = folder / "part-film.mkv"
    _run([*inputs, "-vf", f"{pan},telecine=pattern=23,format=yuv420p", "-c:v", "ffv1", str(film)])
    inputs, pan = _panned(photo, spec.size, Fraction(60000, 1001), SECONDS, spec.sar)
    video = folder / "part-video.mkv"
    _run([*inputs, "-vf", f"{pan},{_TFF},format=yuv420p", "-c:v", "ffv1", str(video)])
    dst = folder / spec.name
    joined = "[0:v][1:v]concat=n=2:v=1:a=0,settb=1/1000,setsar=8/9[v]"
    _run(
        ["-i", str(film), "-i", str(video), *_AUDIO[:3], f"{2 * SECONDS}", *_AUDIO[4:]]
        + ["-filter_complex", joined, "-map", "[v]", "-map", "2:a"]
        + [*spec.args, *_audio(spec), str(dst)]
    )
    film.unlink()
    video.unlink()
    return dst


def frames_of(path: Path) -> int:
    """Video frames as the ffmpeg CLI's ffprobe counts them."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"]
        + ["-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.split()[0].split(",")[0])


def make_tapes(folder: Path) -> list[Tape]:
    """Every file of the corpus in ``folder``."""
    shelf = Shelf(folder)
    return [shelf[spec.name] for spec in (*TAPES, MIXED)]


class Shelf(Mapping[str, Tape]):
    """The corpus by name, each file made the first time it is asked for (a test run that needs
    three of them makes three)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.specs = {spec.name: spec for spec in (*TAPES, MIXED)}
        self._made: dict[str, Tape] = {}
        self._photo: Path | None = None

    def __getitem__(self, name: str) -> Tape:
        if name not in self._made:
            spec = self.specs[name]
            if self._photo is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._photo = write_photo(self.folder / "photo.png")
            path = make_tape(spec, self.folder, self._photo)
            self._made[name] = Tape(path, spec, frames_of(path))
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)
