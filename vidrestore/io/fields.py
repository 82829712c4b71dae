"""Fields: how a video's pictures were scanned, known from evidence.

Tape, disc, camcorder and broadcast video is often interlaced: each frame weaves two fields taken
1/50 or 1/59.94 s apart, and film on an NTSC disc is telecined (3:2 pulldown: four film frames
spread over five video frames). Flags lie both ways (progressive content flagged interlaced,
interlaced content with no flag), so :func:`analyse` asks FFmpeg's ``idet`` about frames spread
through the file, beside the codec's field order, and classifies the file:

* ``progressive``: nothing is done (soft telecine, MPEG-2 repeat-field flags, decodes to
  progressive frames with their own times, and is this);
* ``tff`` / ``bff``: interlaced, top or bottom field first: deinterlaced, one picture per field
  (``field_rate: double``: 50i becomes 50p) or per frame (``single``);
* ``telecine``: hard 3:2 pulldown: fields matched back into film frames, the repeats dropped
  (24000/1001 from 30000/1001), combed leftovers deinterlaced;
* ``mixed``: combed and clean stretches (film and video edited together, or progressive and
  interlaced video): only the combed frames deinterlaced, one picture per frame.

What is then done with them is :mod:`.deinterlace`'s.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.error
import av.filter
import numpy as np

__all__ = [
    "DEINTERLACERS",
    "PROGRESSIVE",
    "Scan",
    "Window",
    "analyse",
    "buffer_source",
    "classify",
    "drain",
    "field_timing",
    "luma",
]

log = logging.getLogger(__name__)

ScanKind = Literal["progressive", "tff", "bff", "telecine", "mixed"]
DEINTERLACERS = ("bwdif", "yadif", "w3fdif", "estdif")

# FFmpeg's AVFieldOrder: how the codec says its frames are stored and shown
_FIELD_ORDER = {1: "progressive", 2: "tff", 3: "bff", 4: "bff", 5: "tff"}  # TT, BB, TB (bottom shown first), BT

WINDOWS = 4  # stretches of the file looked at
WINDOW_FRAMES = 30  # frames in each (six 3:2 cycles)
SHORT_WINDOW = 20  # frames in each stretch of a short file, looked at one after another (four cycles)
COMBED = 0.3  # a stretch with this share of combed frames is interlaced (when one parity dominates)
CLEAN = 0.1  # one with at most this share is progressive
PARITY = 0.8  # the share of its combed frames one parity must have
REPEATS = 0.25  # the share of frames with a repeated field that marks a 3:2 cadence
SURE = 0.5  # a stretch is progressive when this share of its frames shows it (interlaced frames can look
# progressive where nothing moved between their fields; progressive ones never look interlaced)


@dataclass(frozen=True)
class Window:
    """What one stretch of frames showed.

    ``tff``, ``bff`` and ``progressive`` count frames by when their bottom field was taken (see
    :func:`field_timing`); ``idet_tff`` and ``idet_bff`` are the frames FFmpeg's ``idet`` called
    combed, and ``repeated_*`` the frames in which it found a field repeated from the frame before
    (two in five is the 3:2 cadence)."""

    frames: int
    tff: int = 0
    bff: int = 0
    progressive: int = 0
    repeated_top: int = 0
    repeated_bottom: int = 0
    idet_tff: int = 0
    idet_bff: int = 0
    cadence: bool = False  # the repeated fields keep to a five-frame cycle (3:2 pulldown)

    @property
    def combed(self) -> int:
        return self.tff + self.bff

    def verdict(self) -> str:
        """``telecine``, ``tff``, ``bff``, ``progressive``, or ``unknown`` (too little motion to tell)."""
        n = max(self.frames, 1)
        if self.cadence and self.repeated_top + self.repeated_bottom >= REPEATS * n and self.combed >= CLEAN * n:
            return "telecine"
        if self.combed >= COMBED * n and max(self.tff, self.bff) >= PARITY * self.combed:
            return "tff" if self.tff >= self.bff else "bff"
        if self.combed <= CLEAN * n and self.progressive >= SURE * n:
            return "progressive"
        return "unknown"


@dataclass(frozen=True)
class Scan:
    """A file's field structure and the evidence for it."""

    kind: ScanKind
    flagged: str  # what the codec says: progressive, tff, bff or unknown
    windows: tuple[Window, ...] = ()

    @property
    def interlaced(self) -> bool:
        return self.kind != "progressive"

    def describe_short(self) -> str:
        return _NAMES[self.kind]

    def describe(self) -> str:
        """One line: the class, and what idet and the flags said."""
        names = _NAMES
        looked = sum(w.frames for w in self.windows)
        timed = {k: sum(getattr(w, k) for w in self.windows) for k in ("progressive", "tff", "bff")}
        idet = sum(w.idet_tff + w.idet_bff for w in self.windows)
        repeats = sum(w.repeated_top + w.repeated_bottom for w in self.windows)
        evidence = (
            f"field timing of {looked} frames: {timed['progressive']} progressive, {timed['tff']} TFF, "
            f"{timed['bff']} BFF; idet: {idet} combed, {repeats} repeated fields"
        )
        return f"{names[self.kind]} ({evidence}; flagged {self.flagged})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "flagged": self.flagged,
            "frames_looked_at": sum(w.frames for w in self.windows),
            "field_timing": {k: sum(getattr(w, k) for w in self.windows) for k in ("progressive", "tff", "bff")},
            "idet_combed": {"tff": sum(w.idet_tff for w in self.windows), "bff": sum(w.idet_bff for w in self.windows)},
            "repeated_fields": sum(w.repeated_top + w.repeated_bottom for w in self.windows),
        }


PROGRESSIVE = Scan("progressive", "progressive")
_NAMES = {
    "progressive": "progressive",
    "tff": "interlaced, top field first",
    "bff": "interlaced, bottom field first",
    "telecine": "telecined film (3:2 pulldown)",
    "mixed": "mixed (combed and clean stretches)",
}


def classify(windows: list[Window], flagged: str) -> ScanKind:
    """The file's class from its stretches' verdicts; the flags only settle what idet cannot."""
    verdicts = [w.verdict() for w in windows]
    known = {v for v in verdicts if v != "unknown"}
    fields = known & {"tff", "bff"}
    if "telecine" in known:
        return "telecine" if not fields else "mixed"
    if len(fields) > 1 or (fields and "progressive" in known):
        return "mixed"
    if fields:
        return fields.pop()  # type: ignore[return-value]
    if "progressive" in known:
        return "progressive"  # the flags may say interlaced: the pictures say otherwise
    # nothing moved enough to tell: interlaced by the flags only where idet saw their parity's combing
    combed = {"tff": sum(w.tff for w in windows), "bff": sum(w.bff for w in windows)}
    if flagged in combed and combed[flagged] >= CLEAN * sum(w.frames for w in windows):
        return flagged  # type: ignore[return-value]
    return "progressive"


def _flagged(stream: Any) -> str:
    cc = stream.codec_context
    return _FIELD_ORDER.get(int(cc.field_order), "unknown") if cc is not None else "unknown"


MOVING = 6.0  # grey levels a sample must change by between the frames around it to count as moving
MARGIN = 0.9  # the best hypothesis must beat the next by this factor


def _bottom_lines(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frame's bottom field, and its top field interpolated to the bottom field's lines."""
    top = luma[0::2]
    return luma[1::2][: top.shape[0] - 1], (top[:-1] + top[1:]) / 2


def field_timing(before: np.ndarray, now: np.ndarray, after: np.ndarray) -> str:
    """When the bottom field of ``now`` was taken, from three frames' luma (floats): with its own top
    field (``progressive``), half a frame after it (``tff``), or half a frame before (``bff``);
    ``unknown`` where too little moves to tell.

    Each hypothesis predicts the bottom field from the top fields taken around that time (its own;
    its own and the next frame's; the previous frame's and its own) and the one that predicts it
    best wins. Fine detail and sharp edges cost every hypothesis the same (the same interpolation
    between lines), so a progressive picture full of one-pixel lines, which fools a per-frame
    combing measure, is still progressive; only motion between the fields tells them apart."""
    bottom, own = _bottom_lines(now)
    prev = _bottom_lines(before)[1]
    nxt = _bottom_lines(after)[1]
    moving = np.abs(nxt - prev) > MOVING
    if moving.mean() < 0.002:
        return "unknown"
    b = bottom[moving]
    errors = {
        "progressive": float(np.abs(b - own[moving]).mean()),
        "tff": float(np.abs(b - (own[moving] + nxt[moving]) / 2).mean()),
        "bff": float(np.abs(b - (prev[moving] + own[moving]) / 2).mean()),
    }
    best, second = sorted(errors, key=errors.__getitem__)[:2]
    return best if errors[best] < MARGIN * errors[second] else "unknown"


def luma(frame: av.VideoFrame) -> np.ndarray:
    """Grey samples of a frame, every other column (fields differ between lines, not columns), as floats."""
    grey = frame.reformat(format="gray").to_ndarray()
    h = grey.shape[0] // 2 * 2
    out: np.ndarray = grey[:h, ::2].astype(np.float32)
    return out


def _look(stream: Any, frames: Iterator[av.VideoFrame], count: int) -> Window:
    """The next ``count`` decoded frames: each one's field timing, and ``idet`` over them all."""
    graph: Any = None
    tally = {"tff": 0, "bff": 0, "progressive": 0, "top": 0, "bottom": 0}
    timing = {"tff": 0, "bff": 0, "progressive": 0, "unknown": 0}
    lumas: deque[np.ndarray] = deque(maxlen=3)
    repeats: list[tuple[int, str]] = []  # (frame, field) of each repeated field idet found
    seen = 0

    def take(frame: av.VideoFrame) -> None:
        for key in ("lavfi.idet.single.current_frame", "lavfi.idet.repeated.current_frame"):
            verdict = frame.metadata.get(key, "")
            if verdict in tally:
                tally[verdict] += 1
            if verdict in ("top", "bottom"):
                repeats.append((frame.pts or 0, verdict))

    for frame in frames:
        if frame.height < 8:
            break
        lumas.append(luma(frame))
        if len(lumas) == 3:
            timing[field_timing(*lumas)] += 1
        if graph is None:
            graph = av.filter.Graph()
            src = buffer_source(graph, frame, stream.time_base or Fraction(1, 90000), Fraction(1), None)
            idet = graph.add("idet")
            sink = graph.add("buffersink")
            src.link_to(idet)
            idet.link_to(sink)
            graph.configure()
        frame.pts = seen  # idet needs only an order
        graph.push(frame)
        for out in drain(graph):
            take(out)
        seen += 1
        if seen >= count:
            break
    if graph is not None:
        graph.push(None)
        for out in drain(graph):
            take(out)
    return Window(
        max(seen - 2, 0),  # the first and last have no frame on one side: not timed
        timing["tff"],
        timing["bff"],
        timing["progressive"],
        tally["top"],
        tally["bottom"],
        tally["tff"],
        tally["bff"],
        _cadence(repeats),
    )


def _cadence(repeats: list[tuple[int, str]], cycle: int = 5) -> bool:
    """Whether repeated fields keep to a five-frame cycle, as 3:2 pulldown repeats one top and one
    bottom field in every five frames: each field's repeats fall on one place in the cycle."""
    for kind in ("top", "bottom"):
        places = [at % cycle for at, k in repeats if k == kind]
        if len(places) < 2 or max(places.count(p) for p in set(places)) < 0.8 * len(places):
            return False
    return True


def _decoded(container: Any, stream: Any) -> Iterator[av.VideoFrame]:
    try:
        for packet in container.demux(stream):
            try:
                yield from stream.decode(packet)
            except av.error.FFmpegError:
                continue
    except av.error.FFmpegError:
        return


def analyse(
    path: Path, stream_index: int, frames_total: int, duration_s: float | None, rate: Fraction | None = None
) -> Scan:
    """The field structure of ``path``'s video ``stream_index``: ``idet`` over ``WINDOWS`` stretches
    of ``WINDOW_FRAMES`` frames spread through the file (all of it when it is shorter), beside the
    codec's field order. A file that cannot be read for it is taken as progressive (the reader then
    says what is wrong with it).

    The answer is kept per file (its size and modification time) for this process: a segmented run
    asks once when it plans the segments and again in each segment's reader."""
    try:
        st = path.stat()
    except OSError:
        return _analyse(path, stream_index, frames_total, duration_s, rate)
    return _kept_scan(str(path), st.st_size, st.st_mtime_ns, stream_index, frames_total, duration_s, rate)


@functools.lru_cache(maxsize=64)
def _kept_scan(
    path: str, size: int, mtime_ns: int, stream_index: int, frames: int, duration: float | None, rate: Fraction | None
) -> Scan:
    return _analyse(Path(path), stream_index, frames, duration, rate)


def _analyse(path: Path, stream_index: int, frames_total: int, duration_s: float | None, rate: Fraction | None) -> Scan:
    windows: list[Window] = []
    try:
        container = av.open(str(path), metadata_errors="replace")
    except (av.error.FFmpegError, OSError, ValueError):
        return PROGRESSIVE
    with container:
        stream = container.streams[stream_index]
        flagged = _flagged(stream)
        if stream.codec_context is None:
            return Scan("progressive", flagged)
        stream.codec_context.thread_type = "AUTO"
        frames_total = frames_total or round((duration_s or 0) * float(rate or 0))
        short = frames_total <= WINDOWS * WINDOW_FRAMES * 2
        if short or not duration_s:  # the first frames, stretch by stretch (a short file is looked at whole)
            decoded = _decoded(container, stream)
            for _ in range(2 * WINDOWS):
                windows.append(_look(stream, decoded, SHORT_WINDOW))
            # a stretch cut short by the end is too short to see a cadence in, unless it is all there is
            whole = [w for w in windows if w.frames >= SHORT_WINDOW - 2]
            windows = whole or windows
        else:
            tb = stream.time_base or Fraction(1, 90000)
            start = float((stream.start_time or 0) * tb)
            for k in range(WINDOWS):
                at = start + duration_s * (k + 0.5) / WINDOWS
                try:
                    container.seek(int(at / tb), stream=stream, backward=True)
                except (av.error.FFmpegError, OverflowError, ValueError):
                    continue
                windows.append(_look(stream, _decoded(container, stream), WINDOW_FRAMES))
    windows = [w for w in windows if w.frames]
    if not windows:
        return Scan("progressive", flagged)
    return Scan(classify(windows, flagged), flagged, tuple(windows))


def buffer_source(graph: Any, frame: av.VideoFrame, tb: Fraction, sar: Fraction, rate: Fraction | None) -> Any:
    args = {
        "video_size": f"{frame.width}x{frame.height}",
        "pix_fmt": frame.format.name,
        "time_base": str(tb),
        "pixel_aspect": f"{sar.numerator}/{sar.denominator}",
    }
    if rate:
        args["frame_rate"] = f"{rate.numerator}/{rate.denominator}"
    return graph.add("buffer", **args)


def drain(graph: Any) -> list[av.VideoFrame]:
    out = []
    while True:
        try:
            out.append(graph.pull())
        except (av.error.BlockingIOError, av.error.EOFError):
            return out
