"""A corpus of healthy files, made by the ffmpeg command-line tool: the files users bring.

Every heuristic that reads, demuxes, repairs times or copies streams must leave these whole: no
packet lost, no frame lost, no false alarm. They come from FFmpeg's own muxers (not PyAV's), across
containers and codecs, with the oddities ordinary files have:

* an MPEG-4 Part 2 AVI with packed B-frames (DivX style) and AC3 audio;
* an AVI, and an MKV made from it, whose first AC3 frame is short (as AVI muxers often write);
* an edit list cut with ``-c copy -ss`` (the first frames are decoded but not shown);
* an MPEG-TS file whose first packets carry no timestamps (as capture devices write mid-stream).

Each :class:`Healthy` says which streams are copied (audio, subtitles) and whether its frames are
timed by count (AVI) rather than by stored timestamps. Nothing here is used by a run.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import av

from testkit.corpus import run_ffmpeg

__all__ = ["Healthy", "make_healthy", "pack_b_frames", "shorten_first_audio_packet", "strip_first_times"]

SECONDS = 1.2  # 30 frames at 25 fps: enough for B-frames, keyframes and a few audio packets
SIZE = "128x96"
_VIDEO = ["-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate=25:duration={SECONDS}"]
_AUDIO = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}"]
_AUDIO2 = ["-f", "lavfi", "-i", f"sine=frequency=660:sample_rate=44100:duration={SECONDS}"]


@dataclass(frozen=True)
class Spec:
    """How one file is made: extra inputs and the encoding arguments after them."""

    name: str  # the file name, with the container's suffix
    args: tuple[str, ...]
    audio2: bool = False  # a second tone (its own stream)
    subtitles: str | None = None  # "srt": a SubRip file is an input too


_SRT = "1\n00:00:00,100 --> 00:00:00,600\nHello\n\n2\n00:00:00,700 --> 00:00:01,100\nagain\n"

# file name -> how it is made. Every container, video codec and audio codec the issue names.
SPECS: tuple[Spec, ...] = (
    Spec("h264-aac.mp4", ("-c:v", "libx264", "-bf", "2", "-c:a", "aac")),
    Spec("h264-aac-movtext.mp4", ("-c:v", "libx264", "-c:a", "aac", "-c:s", "mov_text"), subtitles="srt"),
    Spec("prores-pcm.mov", ("-c:v", "prores", "-c:a", "pcm_s16le")),
    Spec(
        "hevc-flac-srt.mkv",
        ("-c:v", "libx265", "-x265-params", "log-level=error", "-c:a", "flac", "-c:s", "srt"),
        subtitles="srt",
    ),
    Spec(
        "h264-10bit-opus-ac3.mkv",
        ("-c:v", "libx264", "-pix_fmt", "yuv420p10le", "-c:a:0", "libopus", "-c:a:1", "ac3"),
        audio2=True,
    ),
    Spec("ffv1-pcm.mkv", ("-c:v", "ffv1", "-c:a", "pcm_s16le")),
    Spec("vp8-vorbis.webm", ("-c:v", "libvpx", "-b:v", "300k", "-c:a", "libvorbis")),
    Spec("vp9-opus.webm", ("-c:v", "libvpx-vp9", "-b:v", "300k", "-c:a", "libopus")),
    Spec("av1-opus.mp4", ("-c:v", "libaom-av1", "-cpu-used", "8", "-crf", "40", "-c:a", "libopus")),
    Spec("mpeg4-mp3.avi", ("-c:v", "mpeg4", "-bf", "2", "-q:v", "5", "-c:a", "libmp3lame")),
    Spec("mjpeg-pcm.avi", ("-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p", "-c:a", "pcm_s16le")),
    Spec("h264-aac.ts", ("-c:v", "libx264", "-c:a", "aac")),
    Spec("mpeg2-ac3.ts", ("-c:v", "mpeg2video", "-bf", "2", "-q:v", "5", "-c:a", "ac3")),
    Spec("h264-mp3.flv", ("-c:v", "libx264", "-c:a", "libmp3lame", "-ar", "44100")),
    Spec("theora-vorbis.ogv", ("-c:v", "libtheora", "-q:v", "5", "-c:a", "libvorbis")),
    # a frame left out (variable frame rate): Ogg times each packet by where the one before it ends
    Spec(
        "theora-vorbis-vfr.ogv",
        ("-vf", "select='not(eq(n,7))'", "-vsync", "vfr", "-c:v", "libtheora", "-q:v", "5", "-c:a", "libvorbis"),
    ),
    Spec("vp8-opus.ogv", ("-c:v", "libvpx", "-b:v", "300k", "-c:a", "libopus")),
    Spec("wmv2-wmav2.wmv", ("-c:v", "wmv2", "-q:v", "5", "-c:a", "wmav2")),
    Spec("mpeg2-mp2.mpg", ("-c:v", "mpeg2video", "-bf", "2", "-q:v", "5", "-c:a", "mp2")),
    Spec("mpeg1-mp2.mpg", ("-c:v", "mpeg1video", "-q:v", "5", "-c:a", "mp2", "-f", "mpeg")),
    Spec("h264-aac.3gp", ("-c:v", "libx264", "-c:a", "aac", "-ar", "44100")),
    Spec("h264-aac-two-tracks.mkv", ("-c:v", "libx264", "-c:a:0", "aac", "-c:a:1", "aac"), audio2=True),
)


@dataclass(frozen=True)
class Healthy:
    """One healthy file and what checking it needs."""

    path: Path
    container: str  # the suffix, without its dot
    timed_by_count: bool  # AVI: frame times are frame counts, compared by count


def _run(args: list[str]) -> None:
    run_ffmpeg(args, timeout=300)


def _make(spec: Spec, folder: Path) -> Path:
    dst = folder / spec.name
    inputs = [*_VIDEO, *_AUDIO]
    maps = ["-map", "0:v", "-map", "1:a"]
    if spec.audio2:
        inputs += _AUDIO2
        maps += ["-map", "2:a"]
    if spec.subtitles:
        srt = folder / "cues.srt"
        srt.write_text(_SRT)
        maps += ["-map", f"{len(inputs) // 4}:s"]
        inputs += ["-i", str(srt)]
    _run([*inputs, *maps, "-g", "12", *spec.args, "-shortest", str(dst)])
    return dst


def shorten_first_audio_packet(src: Path, dst: Path, cut: int = 39) -> Path:
    """A copy of the AVI ``src`` whose first audio chunk (``01wb``) lacks its last ``cut`` bytes, as
    AVI muxers often wrote a first AC3 frame. The bytes freed become a ``JUNK`` chunk, so every other
    chunk stays where it was; the ``idx1`` entry of that chunk gets the new size."""
    data = bytearray(src.read_bytes())
    movi = data.find(b"movi")
    at = data.find(b"01wb", movi)
    size = struct.unpack("<I", data[at + 4 : at + 8])[0]
    old_end = at + 8 + size + (size & 1)
    new = size - cut
    new_end = at + 8 + new + (new & 1)
    if old_end - new_end < 8:
        raise ValueError("too little cut off for a JUNK chunk")
    data[at + 4 : at + 8] = struct.pack("<I", new)
    data[at + 8 + new : new_end] = bytes(new_end - at - 8 - new)
    data[new_end:old_end] = b"JUNK" + struct.pack("<I", old_end - new_end - 8) + bytes(old_end - new_end - 8)
    idx = data.rfind(b"idx1")
    for entry in range(idx + 8, len(data) - 15, 16):
        if data[entry : entry + 4] == b"01wb":
            data[entry + 12 : entry + 16] = struct.pack("<I", new)
            break
    dst.write_bytes(bytes(data))
    return dst


_VOP = b"\x00\x00\x01\xb6"


def _vop_type(data: bytes, at: int) -> int:
    """The coding type (0 I, 1 P, 2 B) of the VOP starting at ``at``."""
    return data[at + 4] >> 6


def pack_b_frames(src: Path, dst: Path) -> Path:
    """The video of the MPEG-4 Part 2 AVI ``src`` (B-frames, as FFmpeg writes them) rewritten with
    packed B-frames, as DivX and Xvid wrote them: each B-frame travels in the chunk of the P-frame
    before it, and a not-coded placeholder VOP takes the slot the P-frame left, so chunk n is frame
    n's time. The stream gets DivX's user data ending in ``p`` ("packed"), which is how decoders
    know. Only the video is written (the ffmpeg CLI muxes audio beside it)."""
    with av.open(str(src)) as inp:
        v = inp.streams.video[0]
        video = [p for p in inp.demux(v) if p.size]
        extradata = bytes(v.codec_context.extradata or b"")
        with av.open(str(dst), "w") as out:
            ov = out.add_stream_from_template(v)
            user = b"\x00\x00\x01\xb2DivX503b1393p"
            if extradata:
                ov.codec_context.extradata = extradata + user
            chunks = _packed_chunks([bytes(p) for p in video], b"" if extradata else user)
            for n, (data, key) in enumerate(chunks):
                pkt = av.Packet(data)
                pkt.dts = pkt.pts = n
                pkt.time_base, pkt.duration, pkt.is_keyframe = video[0].time_base, 1, key
                pkt.stream = ov
                out.mux(pkt)
    return dst


def _packed_chunks(frames: list[bytes], prefix: bytes) -> list[tuple[bytes, bool]]:
    """Decode-order VOPs (``I P B B P B B``...) as packed chunks (``I, P+B, B, N``...)."""
    out: list[tuple[bytes, bool]] = []
    held: bytes | None = None  # a P (or I) frame whose B-frames are still to come
    pending_placeholder = False
    for k, data in enumerate(frames):
        at = data.find(_VOP)
        kind = _vop_type(data, at) if at >= 0 else 1
        if k == 0:
            data = data[:at] + prefix + data[at:] if at >= 0 else data
        if kind == 2:  # a B-frame: packed with the reference frame held before it
            if held is not None:
                out.append((held + data, False))
                held = None
                pending_placeholder = True
            else:
                out.append((data, False))
            continue
        if held is not None:  # a reference frame with no B-frames after it: it goes alone
            out.append((held, held.find(_VOP) >= 0 and _vop_type(held, held.find(_VOP)) == 0))
            held = None
        if pending_placeholder:
            out.append((_not_coded(frames), False))
            pending_placeholder = False
        if k + 1 < len(frames) and _is_b(frames[k + 1]):
            held = data
        else:
            out.append((data, kind == 0))
    if held is not None:
        out.append((held, False))
    if pending_placeholder:
        out.append((_not_coded(frames), False))
    return out


def _is_b(data: bytes) -> bool:
    at = data.find(_VOP)
    return at >= 0 and _vop_type(data, at) == 2


def _not_coded(frames: list[bytes], resolution: int = 25) -> bytes:
    """A placeholder VOP: the header of a P-VOP with ``vop_coded`` 0 (a frame that repeats the last
    one), as DivX wrote in the slot a packed P-frame left. ``resolution``: the VOL's
    vop_time_increment_resolution (FFmpeg's encoder writes the frame rate's denominator, 25 here),
    which fixes how wide the time increment is."""
    width = max(1, (resolution - 1).bit_length())
    # coding type P, modulo_time_base 0, marker, time increment 0, marker, vop_coded 0
    head = "01" + "0" + "1" + "0" * width + "1" + "0"
    head += "0" + "1" * ((-len(head) - 1) % 8)  # stuffing: a 0, then 1s to the byte boundary
    return _VOP + int(head, 2).to_bytes(len(head) // 8, "big")


def make_healthy(folder: Path) -> list[Healthy]:
    """Every file of the corpus in ``folder`` (made once; an existing file is kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Healthy] = []
    made: dict[str, Path] = {}
    for spec in SPECS:
        made[spec.name] = _make(spec, folder)
    # the edit list: a stream copy that starts between keyframes keeps the frames before (decoded, not shown)
    cut = folder / "h264-aac-editlist.mp4"
    _run(["-ss", "0.3", "-i", str(made["h264-aac.mp4"]), "-c", "copy", str(cut)])
    made[cut.name] = cut
    # MPEG-4 Part 2 with packed B-frames and AC3, as DivX/Xvid AVIs were written
    plain, packed = folder / "mpeg4-unpacked.avi", folder / "mpeg4-packed.avi"
    _run([*_VIDEO, "-c:v", "mpeg4", "-bf", "2", "-g", "12", "-q:v", "5", str(plain)])
    pack_b_frames(plain, packed)
    dst = folder / "mpeg4-ac3-packed.avi"
    _run(
        ["-i", str(packed), *_AUDIO, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "ac3", "-shortest", str(dst)]
    )
    made[dst.name] = dst
    plain.unlink()
    packed.unlink()
    # a short first AC3 frame, in AVI and in Matroska beside an AAC track
    ac3 = folder / "h264-ac3.avi"
    _run(
        [
            *_VIDEO,
            *_AUDIO,
            "-c:v",
            "libx264",
            "-bf",
            "0",
            "-g",
            "12",
            "-c:a",
            "ac3",
            "-ac",
            "2",
            "-b:a",
            "192k",
            "-shortest",
            str(ac3),
        ]
    )
    made["h264-ac3-short-first.avi"] = shorten_first_audio_packet(ac3, folder / "h264-ac3-short-first.avi")
    ac3.unlink()
    mkv = folder / "h264-aac-ac3-short-first.mkv"
    _run(
        [
            "-i",
            str(made["h264-ac3-short-first.avi"]),
            *_AUDIO2,
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-map",
            "0:a",
            "-c:v",
            "copy",
            "-c:a:0",
            "aac",
            "-c:a:1",
            "copy",
            "-shortest",
            str(mkv),
        ]
    )
    made[mkv.name] = mkv
    # the first packets of each stream with no timestamps at all
    untimed = folder / "h264-aac-no-first-times.ts"
    made[untimed.name] = strip_first_times(made["h264-aac.ts"], untimed)
    (folder / "cues.srt").unlink(missing_ok=True)
    for name, path in made.items():
        suffix = Path(name).suffix.lstrip(".")
        out.append(Healthy(path, suffix, suffix == "avi"))
    return out


def strip_first_times(src: Path, dst: Path, count: int = 2) -> Path:
    """A copy of the MPEG-TS ``src`` whose first ``count`` PES packets of each stream carry no
    timestamps: their PTS/DTS flags cleared and the bytes turned into header stuffing (0xFF), which
    the standard allows, so no size changes. Capture devices that start mid-stream write such files."""
    data = bytearray(src.read_bytes())
    seen: dict[int, int] = {}
    for at in range(0, len(data) - 187, 188):
        if data[at] != 0x47 or not data[at + 1] & 0x40:  # a sync byte; payload_unit_start: a PES begins here
            continue
        pid = ((data[at + 1] & 0x1F) << 8) | data[at + 2]
        payload = at + 4
        if data[at + 3] & 0x20:  # an adaptation field first
            payload += 1 + data[at + 4]
        if data[payload : payload + 3] != b"\x00\x00\x01" or data[payload + 3] < 0xBD:
            continue  # a table (PAT, PMT), not a PES
        if seen.get(pid, 0) >= count:
            continue
        seen[pid] = seen.get(pid, 0) + 1
        flags = payload + 7
        kind = data[flags] >> 6
        if kind:
            length = 5 if kind == 2 else 10
            data[flags] &= 0x3F
            data[flags + 2 : flags + 2 + length] = b"\xff" * length
    dst.write_bytes(bytes(data))
    return dst
