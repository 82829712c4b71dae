"""Segments: the unit of work for long videos, so that a run can resume, and run in parallel.

A video longer than twice ``pipeline.segment_seconds`` is cut at video keyframes (found by
demuxing only, from the packets' keyframe flags) into segments of about that length. Each segment
is decoded from a keyframe far enough before its start that tracking, smoothing and temporal
fusion are warmed up (``warm`` frames go through the face stages and are dropped), and far enough
past its end for the smoother's look-ahead, gap filling and fades (``ahead`` frames); only its own
frames are encoded, into a segment file, with the same encoder settings for every segment. The
join copies the segments' video packets (no re-encode) and muxes the original's audio, subtitle,
data and attachment streams by stream copy, through the same writer a whole-file run uses, then
moves the file into place atomically.

The segment files and a manifest live in a work folder beside the output
(``.NAME.segments/``). The manifest holds the input's identity (size, mtime, a hash of its head),
the configuration's hash, the models' checksums and each segment's state and checksum. A rerun
picks up every finished segment whose checksum holds (``--resume`` insists on it; ``--no-resume``
starts afresh); the work folder goes when the output is in place.

An input the planner cannot trust for cutting (a demuxing error, packets flagged corrupt, packets
without a time, times that jump back) runs as one whole file, as before.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import queue
import shutil
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.error

from vidrestore.config import Config, config_to_dict
from vidrestore.control import END, RunControl, Stopped
from vidrestore.errors import ConfigError, InputError, OutputError, PipelineError
from vidrestore.io.atomic import AtomicTarget
from vidrestore.io.reader import VideoReader, main_video_stream, open_input
from vidrestore.io.writer import VideoWriter
from vidrestore.records import Frame
from vidrestore.stats import RunStats

__all__ = [
    "MANIFEST",
    "Manifest",
    "Plan",
    "Resume",
    "Segment",
    "SegmentResult",
    "join_segments",
    "plan_segments",
    "restore_segment",
    "work_folder",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
Resume = Literal["auto", "require", "never"]
"""auto: reuse a matching work folder, else start afresh; require (--resume): refuse a mismatch;
never (--no-resume): start afresh."""

_WHOLE_HINT = "run it whole with --set pipeline.segment_seconds=0"
_HEAD_BYTES = 4 << 20  # the input's identity hashes its first 4 MiB (with its size and mtime)


@dataclass(frozen=True)
class Segment:
    """Frames ``first_frame`` .. ``first_frame + frames - 1`` of a video: times ``start`` (a keyframe)
    up to ``end`` (the next segment's start; None: the end of the file), in the video's time base.
    Decoding starts at the keyframe ``seek`` (None: the file's start), ``warm`` frames before."""

    index: int
    start: int
    end: int | None
    first_frame: int
    frames: int
    seek: int | None


@dataclass
class Plan:
    """The segments of one input, or why it runs whole."""

    segments: list[Segment]
    time_base: Fraction
    times: list[int]  # every frame's time, in order (what a frame's index is looked up in)
    whole: str | None = None  # why the input runs as one piece (None: it is cut)

    @property
    def frames(self) -> int:
        return len(self.times)


def _warm_ahead(config: Config) -> tuple[int, int]:
    """Frames decoded and run before a segment (warm-up) and after it (look-ahead)."""
    s = config.smoothing
    warm = s.window + s.max_gap + 12  # tracks found and smoothed; fusion's history decays (0.6^12 < 0.3%)
    ahead = s.window // 2 + s.max_gap + s.fade_frames + 2  # the smoother's window, gap filling, fades
    return warm, ahead


def plan_segments(src: Path, seconds: float, warm: int) -> Plan:
    """Cut ``src`` at keyframes into segments of about ``seconds`` (demuxing only, no decoding)."""
    container = open_input(src)
    try:
        video = main_video_stream(container.streams.video)
        if video is None:
            raise InputError(f"{src}: has no video stream")
        tb = video.time_base or Fraction(1, 90000)
        times: list[int] = []
        keys: list[int] = []
        why = None
        latest: int | None = None
        try:
            for packet in container.demux(video):
                if not packet.size:
                    continue
                if packet.pts is None:
                    why = "video packets without a time"
                    break
                if packet.is_corrupt:
                    why = "damaged video packets"
                    break
                if latest is not None and packet.pts < latest - round(1 / tb):
                    why = "video times that jump back"
                    break
                latest = packet.pts if latest is None else max(latest, packet.pts)
                times.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except av.error.FFmpegError as exc:
            why = f"a demuxing error ({exc.strerror or exc})"
    finally:
        container.close()
    times.sort()
    if why is None and len(set(times)) != len(times):
        why = "video frames sharing a time"
    if why is not None or not times:
        return Plan([], tb, times, whole=why or "no video packets")
    cuts = [times[0]]
    step = round(seconds / tb) if seconds > 0 else 0
    end = times[-1]
    for key in sorted(set(keys)):
        if step and key >= cuts[-1] + step and end - key >= step // 2:
            cuts.append(key)
    if len(cuts) == 1:
        return Plan([], tb, times, whole=f"shorter than {2 * seconds:g} s" if step else "segment_seconds is 0")
    segments = []
    for k, start in enumerate(cuts):
        stop = cuts[k + 1] if k + 1 < len(cuts) else None
        first = bisect.bisect_left(times, start)
        last = bisect.bisect_left(times, stop) if stop is not None else len(times)
        seek = None
        if k > 0:
            warm_from = times[max(0, first - warm)]
            seek = max((key for key in keys if key <= warm_from), default=None)
        segments.append(Segment(k, start, stop, first, last - first, seek))
    return Plan(segments, tb, times)


# -- running one segment -------------------------------------------------------------


@dataclass
class SegmentResult:
    """What a finished segment sends back (never frames): its file, checksum, counts and timing."""

    index: int
    file: str
    sha256: str
    frames: int
    seconds: float
    worker: str
    stats: RunStats = field(default_factory=RunStats)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _window(frames: Iterator[Frame], seg: Segment, times: list[int], warm: int, ahead: int) -> Iterator[Frame]:
    """The frames the face stages see for ``seg``: the last ``warm`` before it, its own, ``ahead``
    after it; each numbered by its place in the whole file."""
    before: deque[Frame] = deque(maxlen=warm)
    after = 0
    for frame in frames:
        k = bisect.bisect_left(times, frame.pts)
        if k == len(times) or times[k] != frame.pts:
            raise PipelineError(
                "segment", None, f"a frame at time {frame.pts} is not in the segment plan; {_WHOLE_HINT}"
            )
        frame = replace(frame, index=k)
        if frame.pts < seg.start:
            before.append(frame)
            continue
        while before:
            yield before.popleft()
        if seg.end is not None and frame.pts >= seg.end:
            after += 1
            if after > ahead:
                return
        yield frame


def restore_segment(
    src: Path,
    seg: Segment,
    times: list[int],
    dst: Path,
    config: Config,
    stages: Callable[[Iterator[Frame]], Iterator[Frame]],
    stats: RunStats,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> SegmentResult:
    """Restore ``seg`` of ``src`` into the segment file ``dst`` (temp file, then rename: a file under
    that name is always whole). ``stages`` is called once, for this segment (as for one file)."""
    from vidrestore.pipeline import guarded, record_damage

    t0 = time.perf_counter()
    warm, ahead = _warm_ahead(config)
    stats.source = str(src)
    read_control, write_control = RunControl(), RunControl()
    reader = VideoReader(
        src,
        read_control,
        queue_size=config.pipeline.queue_size,
        threads=config.pipeline.decode_threads,
        copy_audio=False,
        copy_subtitles=False,
        copy_other=False,
        strict=config.input.strict,
        seek_pts=seg.seek,
    )
    done: queue.Queue[Any] = queue.Queue()
    done.put(END)
    part = dst.with_name(f".{dst.stem}.part-{socket.gethostname()}-{os.getpid()}{dst.suffix}")
    writer = VideoWriter(
        part,
        lambda: reader.info,
        [],
        done,
        config.output,
        write_control,
        queue_size=config.pipeline.queue_size,
        threads=config.pipeline.encode_threads,
    )
    writer.start()
    reader.start()
    restored = guarded(stages(_window(iter(reader), seg, times, warm, ahead)), "restore", stats)
    written = 0
    try:
        for frame in restored:
            if cancel is not None and cancel.is_set():
                raise Stopped  # another worker failed: this one stops too
            if frame.pts < seg.start or (seg.end is not None and frame.pts >= seg.end):
                continue  # warm-up and look-ahead: run for their context only
            write_control.put(writer.frames, frame)
            written += 1
            if progress is not None:
                progress(1)
        write_control.put(writer.frames, END)
    except BaseException as exc:
        write_control.fail(exc)
    finally:
        restored.close()
        writer.join()
        reader.close()
    for error in (write_control.error, read_control.error):
        if error is not None:
            part.unlink(missing_ok=True)
            raise error
    if written != seg.frames:
        part.unlink(missing_ok=True)
        raise PipelineError(
            "segment",
            seg.first_frame,
            f"segment {seg.index} gave {written} frames, the plan {seg.frames}; {_WHOLE_HINT}",
        )
    record_damage(reader, stats)
    os.replace(part, dst)
    stats.frames += written
    worker = f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
    return SegmentResult(seg.index, dst.name, file_sha256(dst), written, time.perf_counter() - t0, worker, stats)


# -- the join ------------------------------------------------------------------------


def join_segments(src: Path, files: list[Path], dst: Path, config: Config, stats: RunStats) -> int:
    """The segments' video packets (no re-encode) with ``src``'s other streams copied, into ``dst``
    (atomically); returns the video packets written."""
    from vidrestore.pipeline import open_reader, record_damage, writer_for

    control = RunControl()
    reader = open_reader(src, config, control, decode_video=False)
    opened = [av.open(str(f)) for f in files]
    target = AtomicTarget(dst, config.output.overwrite)
    try:
        with target as tmp:
            writer = writer_for(reader, tmp, config, control, template=opened[0].streams.video[0])
            writer.start()
            reader.start()
            dts = iter(_decode_times(files))
            try:
                for seg in opened:
                    for packet in seg.demux(seg.streams.video[0]):
                        if packet.size:
                            packet.dts = next(dts)
                            control.put(writer.frames, packet)
                control.put(writer.frames, END)
            except Stopped:
                pass
            except BaseException as exc:
                control.fail(exc)
            finally:
                writer.join()
                reader.close()
            if control.error is not None:
                raise control.error
            record_damage(reader, stats)
            target.commit()
    finally:
        for c in opened:
            c.close()
    return writer.frames_written


def _decode_times(files: list[Path]) -> list[int]:
    """A decode time for every video packet of the segments, in order. Each segment's encoder
    started afresh (and Matroska stores no decode times at all), so the times are set anew over
    the whole: the i-th packet decodes at the i-th frame time, less the largest reordering delay,
    which keeps them increasing across the seams and never after a packet's presentation time."""
    shown: list[int] = []
    for f in files:
        with av.open(str(f)) as seg:
            shown += [int(p.pts) for p in seg.demux(seg.streams.video[0]) if p.size and p.pts is not None]
    order = sorted(shown)
    delay = max([0, *(t - pts for t, pts in zip(order, shown, strict=True))])
    return [t - delay for t in order]


# -- the work folder and its manifest ------------------------------------------------


def work_folder(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.segments")


def input_identity(src: Path) -> dict[str, Any]:
    st = src.stat()
    h = hashlib.sha256()
    with src.open("rb") as fh:
        h.update(fh.read(_HEAD_BYTES))
    return {"path": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": h.hexdigest()}


def config_hash(config: Config) -> str:
    """What the segments' pixels depend on: the config, less how the run is spread and queued."""
    d = config_to_dict(config)
    d.pop("cluster", None)
    d["output"].pop("overwrite", None)
    for k in ("workers", "queue_size", "decode_threads", "encode_threads", "overlap"):
        d["pipeline"].pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


@dataclass
class Manifest:
    """The work folder's record; written atomically after every change."""

    folder: Path
    data: dict[str, Any]

    @property
    def segments(self) -> list[dict[str, Any]]:
        return self.data["segments"]  # type: ignore[no-any-return]

    def save(self) -> None:
        tmp = self.folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.folder / MANIFEST)

    def finished(self, index: int) -> Path | None:
        """The segment file of ``index`` if it is finished and its checksum holds."""
        entry = self.segments[index]
        path: Path = self.folder / str(entry.get("file", ""))
        if entry.get("state") != "done" or not path.is_file():
            return None
        if file_sha256(path) != entry.get("sha256"):
            log.warning("segment %d's file does not match its checksum: it is done again", index)
            return None
        return path

    def record(self, result: SegmentResult, attempts: int) -> None:
        entry = self.segments[result.index]
        entry.update(
            state="done",
            file=result.file,
            sha256=result.sha256,
            seconds=round(result.seconds, 3),
            worker=result.worker,
            attempts=attempts,
        )
        self.save()


def open_manifest(
    src: Path, dst: Path, plan: Plan, config: Config, models: dict[str, str | None], resume: Resume
) -> tuple[Manifest, list[int]]:
    """The work folder's manifest for this run, and the segments already finished in it."""
    folder = work_folder(dst)
    fresh = {
        "format": FORMAT,
        "input": input_identity(src),
        "config_sha256": config_hash(config),
        "models": models,
        "output": str(dst),
        "time_base": str(plan.time_base),
        "segments": [{**asdict(s), "state": "pending"} for s in plan.segments],
    }
    old = None
    if (folder / MANIFEST).is_file() and resume != "never":
        try:
            old = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable manifest (%s): starting afresh", folder, exc)
    if old is not None:
        changed = _changes(old, fresh)
        if not changed:
            manifest = Manifest(folder, old)
            done = [s["index"] for s in old["segments"] if manifest.finished(s["index"]) is not None]
            for s in old["segments"]:
                if s["index"] not in done:
                    s["state"] = "pending"
            return manifest, done
        if resume == "require":
            raise ConfigError(
                f"{folder}: cannot resume: the {' and the '.join(changed)} changed since it was made; "
                "rerun without --resume to start afresh (or with what it was made with)"
            )
        log.warning("%s was made with a different %s: starting afresh", folder, " and ".join(changed))
    elif resume == "require" and not (folder / MANIFEST).is_file():
        log.warning("nothing to resume for %s: starting", dst)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    manifest = Manifest(folder, fresh)
    manifest.save()
    return manifest, []


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    what = []
    if old.get("format") != new["format"]:
        what.append("work folder format")
    if old.get("input") != new["input"]:
        what.append("input")
    if old.get("config_sha256") != new["config_sha256"]:
        what.append("configuration")
    if old.get("models") != new["models"]:
        what.append("model files")
    if not what and [_cut(s) for s in old.get("segments", [])] != [_cut(s) for s in new["segments"]]:
        what.append("segment plan")
    return what


def _cut(entry: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(entry.get(k) for k in ("index", "start", "end", "first_frame", "frames", "seek"))


def remove_work(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        raise OutputError(f"{folder}: the output is in place, but its work folder cannot be removed ({exc})") from exc
