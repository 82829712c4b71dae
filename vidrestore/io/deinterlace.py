"""The field stage: what is done with a file's pictures for its field structure (:mod:`.fields`),
in FFmpeg's own filter graph, in process.

* ``tff`` / ``bff``: deinterlaced (bwdif by default), one picture per field (``field_rate: double``:
  50i becomes 50p) or per frame (``single``), times exact in half the input's time base;
* ``telecine``: fields matched back into film frames, the repeats dropped (24000/1001 from
  30000/1001), combed leftovers deinterlaced; the film starts where the first decoded frame does;
* ``mixed``: every frame deinterlaced, and each frame whose fields were taken together (judged by
  :func:`.fields.field_timing`) passed on as decoded instead: only the combed frames change;
* ``output.square_pixels``: resampled to square pixels.

Each picture :class:`FieldFilter` hands on carries the time of the decoded frame it came from, so
segments can be cut by the decoder's times.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.filter
import numpy as np

from vidrestore.config import Config
from vidrestore.errors import InputError
from vidrestore.io.encoders import CONTAINERS
from vidrestore.io.fields import PROGRESSIVE, Scan, analyse, buffer_source, drain, field_timing, luma
from vidrestore.io.probe import VideoInfo, main_video_stream, open_input, sample_aspect, say_once, video_rate

__all__ = [
    "FieldFilter",
    "FieldPlan",
    "FieldSettings",
    "field_order",
    "field_stage",
    "plan_fields",
    "whole_file_reason",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldPlan:
    """What is done to a file's pictures, and the times they then carry."""

    scan: Scan
    deinterlacer: str  # bwdif, yadif, w3fdif, estdif; "off": woven frames pass through
    double: bool  # one picture per field (else per frame)
    time_base: Fraction  # of the pictures that come out
    rate: Fraction | None  # their nominal rate
    per_frame: Fraction  # pictures out per decoded frame (2, 1, or 4/5)
    square: bool = False  # resampled to square pixels
    sar: Fraction = Fraction(1)  # the input's sample aspect ratio

    @property
    def active(self) -> bool:
        """Whether pictures go through the filter at all."""
        return self.square or (self.scan.interlaced and self.deinterlacer != "off")

    @property
    def whole_file(self) -> bool:
        """Inverse telecine keeps the film cadence across the whole file: it cannot be cut into segments."""
        return self.active and self.scan.kind in ("telecine", "mixed")

    def to_dict(self) -> dict[str, Any]:
        sar = self.sar
        return {
            **self.scan.to_dict(),
            "done": self.describe(),
            "deinterlacer": self.deinterlacer if self.scan.interlaced else None,
            "pictures_per_frame": float(self.per_frame),
            "rate": float(self.rate) if self.rate else None,
            "sar": f"{sar.numerator}:{sar.denominator}",
            "square_pixels": self.square,
        }

    def line(self, name: str, width: int, height: int) -> str:
        """The closing line about one file: its class, what was done, the shape of its pixels."""
        sar = self.sar
        shape = ""
        if self.square:  # ``width`` is already in square pixels, rounded to whole ones
            dar = Fraction(width, height).limit_denominator(20)
            shape = f" ({width}x{height}, shown {dar.numerator}:{dar.denominator})"
        elif sar != 1:
            dar = Fraction(width, height) * sar
            shape = f"; pixels {sar.numerator}:{sar.denominator} (shown {dar.numerator}:{dar.denominator})"
            shape += ", kept and signalled"
        return f"fields: {name}: {self.scan.describe_short()}; {self.describe()}{shape}"

    def describe(self) -> str:
        """What is done, in a few words (for dry runs, reports and closing lines)."""
        kind = self.scan.kind
        if not self.scan.interlaced:
            done = "nothing to deinterlace"
        elif self.deinterlacer == "off":
            done = "woven frames kept (input.deinterlace: off)"
        elif kind == "telecine":
            done = f"film frames recovered (fieldmatch, decimate) at {_rate(self.rate)}"
        elif kind == "mixed":
            done = f"fields matched, combed frames deinterlaced ({self.deinterlacer}) at {_rate(self.rate)}"
        else:
            done = f"deinterlaced with {self.deinterlacer}, one picture per {'field' if self.double else 'frame'}"
            done += f" ({_rate(self.rate)})"
        if self.square:
            done += f"; resampled to square pixels from {self.sar.numerator}:{self.sar.denominator}"
        return done


def _rate(rate: Fraction | None) -> str:
    return f"{float(rate):.3f} frames/s".replace(".000 ", " ") if rate else "its own times"


def plan_fields(
    scan: Scan,
    deinterlace: str,
    field_rate: str,
    time_base: Fraction,
    rate: Fraction | None,
    sar: Fraction = Fraction(1),
    square: bool = False,
) -> FieldPlan:
    """What to do with a file of this scan, as ``input.deinterlace`` and ``input.field_rate`` ask."""
    deinterlacer = "bwdif" if deinterlace == "auto" else deinterlace
    square = square and sar != 1
    if not scan.interlaced or deinterlacer == "off":
        return FieldPlan(scan, deinterlacer, False, time_base, rate, Fraction(1), square, sar)
    if scan.kind == "telecine":
        film = rate * Fraction(4, 5) if rate else None
        step = Fraction(1) / film if film else time_base
        tb = Fraction(1, math.lcm(time_base.denominator, step.denominator))
        return FieldPlan(scan, deinterlacer, False, tb, film, Fraction(4, 5), square, sar)
    double = field_rate == "double" and scan.kind != "mixed"
    out_rate = (rate * 2 if double else rate) if rate else None
    return FieldPlan(scan, deinterlacer, double, time_base / 2, out_rate, Fraction(2 if double else 1), square, sar)


def _chain(plan: FieldPlan) -> list[tuple[str, str]]:
    """The filters for ``plan``, in order."""
    out: list[tuple[str, str]] = []
    kind, d = plan.scan.kind, plan.deinterlacer
    if plan.scan.interlaced and d != "off":
        parity = "bff" if kind == "bff" else "tff"
        if kind == "telecine":
            order = "bff" if plan.scan.flagged == "bff" else "tff"
            out.append(("fieldmatch", f"order={order}:combmatch=full"))
            out.append(_deinterlacer(d, parity, double=False, only_combed=True))
            out.append(("decimate", ""))
        elif kind == "mixed":  # every frame deinterlaced; FieldFilter keeps the original of each clean one
            out.append(_deinterlacer(d, _mixed_parity(plan.scan), double=False, only_combed=False))
        else:
            out.append(_deinterlacer(d, parity, plan.double, only_combed=False))
    if plan.square:
        out.append(("scale", "w='2*trunc(iw*sar/2+0.5)':h=ih:flags=lanczos+accurate_rnd+full_chroma_int"))
        out.append(("setsar", "1"))
    return out


def _mixed_parity(scan: Scan) -> str:
    tff = sum(w.tff for w in scan.windows)
    bff = sum(w.bff for w in scan.windows)
    return "bff" if bff > tff or (bff == tff and scan.flagged == "bff") else "tff"


def _deinterlacer(name: str, parity: str, double: bool, only_combed: bool) -> tuple[str, str]:
    deint = "interlaced" if only_combed else "all"
    if name in ("bwdif", "yadif"):
        mode = "send_field" if double else "send_frame"
    else:  # w3fdif, estdif
        mode = "field" if double else "frame"
    return name, f"mode={mode}:parity={parity}:deint={deint}"


class FieldFilter:
    """Decoded frames in (times settled, in ``time_base``), the pictures of :class:`FieldPlan` out.

    The graph is made at the first frame (its pixel format is the decoder's). :meth:`pull` gives each
    picture with the time of the decoded frame it came from (the latest one at or before it)."""

    def __init__(self, plan: FieldPlan, time_base: Fraction, rate: Fraction | None) -> None:
        self.plan = plan
        self.time_base = time_base
        self.rate = rate
        self._graph: Any = None
        self._sources: deque[int] = deque()  # times of the decoded frames in the graph, in order
        self._first: int | None = None  # the first decoded frame's time (telecine: the film starts there)
        self._film0: int | None = None  # decimate's time of its first picture
        self._film_tb: Fraction | None = None
        # mixed: each decoded frame (by time) with its luma, until its own and its neighbours' are in;
        # then whether its fields were taken apart (combed: its deinterlaced picture goes out)
        self._mixed = plan.scan.kind == "mixed" and plan.deinterlacer != "off"
        self._originals: dict[int, av.VideoFrame] = {}
        self._lumas: deque[tuple[int, np.ndarray]] = deque(maxlen=3)
        self._combed: dict[int, bool] = {}
        self._waiting: deque[av.VideoFrame] = deque()  # deinterlaced pictures whose frame is not judged yet
        self.pushed = 0
        self.pulled = 0
        self.kept = 0  # mixed: frames passed on as decoded (clean)

    def _build(self, frame: av.VideoFrame) -> None:
        graph = av.filter.Graph()
        last = buffer_source(graph, frame, self.time_base, self.plan.sar, self.rate)
        for name, args in _chain(self.plan):
            node = graph.add(name, args) if args else graph.add(name)
            last.link_to(node)
            last = node
        sink = graph.add("buffersink")
        last.link_to(sink)
        try:
            graph.configure()
        except (av.error.FFmpegError, ValueError) as exc:
            raise InputError(f"the field filter {_chain(self.plan)} cannot take {frame.format.name} ({exc})") from exc
        self._graph = graph

    def push(self, frame: av.VideoFrame | None) -> list[tuple[av.VideoFrame, int]]:
        """One decoded frame (None: the end) in; the pictures that are ready out, with their source times."""
        if frame is not None:
            if self._graph is None:
                self._build(frame)
            assert frame.pts is not None
            self._sources.append(frame.pts)
            self._first = frame.pts if self._first is None else self._first
            frame.time_base = self.time_base
            self.pushed += 1
            if self._mixed:
                self._judge(frame)
        elif self._graph is None:
            return []
        elif self._mixed and self._lumas:  # the last frame: judged as the one before it
            last = self._lumas[-1][0]
            self._combed[last] = self._combed.get(self._lumas[0][0], False) if len(self._lumas) > 1 else False
        self._graph.push(frame)
        out = [self._timed(o) for o in drain(self._graph)]
        return self._choose(out) if self._mixed else out

    def _judge(self, frame: av.VideoFrame) -> None:
        """Mixed content: keep the frame, and judge the one before it now that its neighbours are in."""
        assert frame.pts is not None
        self._originals[frame.pts] = frame
        self._lumas.append((frame.pts, luma(frame)))
        if len(self._lumas) == 3:
            (_, a), (mid, b), (_, c) = self._lumas
            self._combed[mid] = field_timing(a, b, c) in ("tff", "bff")
        elif len(self._lumas) == 2:
            self._combed[self._lumas[0][0]] = False  # the first frame: no frame before it to judge by

    def _choose(self, ready: list[tuple[av.VideoFrame, int]]) -> list[tuple[av.VideoFrame, int]]:
        """Each deinterlaced picture, or the decoded frame itself where that frame was clean."""
        self._waiting.extend(out for out, _ in ready)
        chosen = []
        while self._waiting:
            out = self._waiting[0]
            source = round((out.pts or 0) * self.plan.time_base / self.time_base)
            if source not in self._combed:
                break
            self._waiting.popleft()
            original = self._originals.pop(source, None)
            if not self._combed.pop(source) and original is not None:
                original.pts, original.time_base = out.pts, out.time_base
                original.duration = out.duration
                out = original
                self.kept += 1
            chosen.append((out, source))
        return chosen

    def _timed(self, out: av.VideoFrame) -> tuple[av.VideoFrame, int]:
        self.pulled += 1
        if self.plan.scan.kind == "telecine" and self.plan.active and self.plan.deinterlacer != "off":
            # decimate counts film frames in its own time base: moved so the film starts where the
            # first decoded frame does, in the plan's time base (exact for both)
            tb = out.time_base or Fraction(1)
            if self._film0 is None:
                self._film0, self._film_tb = out.pts or 0, tb
            assert self._first is not None
            seconds = self._first * self.time_base + ((out.pts or 0) - self._film0) * tb
            out.pts = round(seconds / self.plan.time_base)
            out.duration = round(tb / self.plan.time_base)
            out.time_base = self.plan.time_base
        elif out.time_base != self.plan.time_base and out.pts is not None:  # scale alone keeps the input's
            factor = (out.time_base or self.time_base) / self.plan.time_base
            out.pts = round(out.pts * factor)
            out.duration = round((out.duration or 0) * factor)
            out.time_base = self.plan.time_base
        at = (out.pts or 0) * self.plan.time_base
        while len(self._sources) > 1 and self._sources[1] * self.time_base <= at:
            self._sources.popleft()
        return out, self._sources[0] if self._sources else 0


@dataclass(frozen=True)
class FieldSettings:
    """What the configuration asks of the field stage (``input.deinterlace``, ``input.field_rate``,
    ``output.square_pixels``)."""

    deinterlace: str = "auto"
    field_rate: str = "double"
    square_pixels: bool = False

    @classmethod
    def of(cls, config: Config, output: Path | None = None) -> FieldSettings:
        """The settings of ``config``, for pictures written to ``output``: a container that holds only
        interlaced video's frame rate (DV) gets one picture per frame, said once."""
        rate = config.input.field_rate
        suffix = output.suffix.lower() if output is not None else ""
        box = CONTAINERS.get(suffix)
        if rate == "double" and box is not None and box.frame_rate_only:
            say_once(
                f"frame-rate:{suffix}",
                f"a {suffix} file holds interlaced video's frame rate only: deinterlaced one picture per frame "
                "(write .avi or .mkv to keep one per field)",
            )
            rate = "single"
        return cls(config.input.deinterlace, rate, config.output.square_pixels)


def field_stage(
    path: Path, stream: Any, info: VideoInfo, look: bool, settings: FieldSettings
) -> tuple[VideoInfo, FieldFilter | None]:
    """The field stage of ``path``'s video ``stream``, whose decoded frames ``info`` describes: its
    field structure found (``look``: a reader that decodes), the stage planned as ``settings`` ask,
    and ``info`` as the pictures it hands on are: their time base, rate, count, width and aspect."""
    sar = sample_aspect(stream)
    scan = analyse(path, stream.index, info.frames, info.duration_s, info.rate) if look else PROGRESSIVE
    s = settings
    plan = plan_fields(scan, s.deinterlace, s.field_rate, info.time_base, info.rate, sar, s.square_pixels)
    width = 2 * int(info.width * sar / 2 + Fraction(1, 2)) if plan.square else info.width
    out = replace(
        info,
        time_base=plan.time_base,
        rate=plan.rate,
        frames=int(info.frames * plan.per_frame),
        sar=Fraction(1) if plan.square else sar,
        width=width,
        fields=plan,
    )
    if scan.interlaced:
        log.info("%s: %s: %s", path, scan.describe(), plan.describe())
    return out, FieldFilter(plan, info.time_base, info.rate) if plan.active else None


def field_order(info: VideoInfo) -> int | None:
    """The field order to write (FFmpeg's AVFieldOrder): progressive where the field stage looked
    (deinterlaced, or found progressive), top or bottom field first where woven fields were kept on
    purpose; None where nothing was looked at (the codec's default)."""
    plan = info.fields
    if plan is None:
        return None
    if plan.scan.interlaced and not plan.active:
        return 3 if plan.scan.kind == "bff" else 2
    return 1


def whole_file_reason(path: Path, settings: FieldSettings) -> str | None:
    """Why ``path`` cannot be cut into segments for its field stage (inverse telecine keeps the
    film's cadence across the whole file), or None."""
    if settings.deinterlace == "off":
        return None
    with open_input(path) as container:
        stream = main_video_stream(container.streams.video)
        if stream is None:
            return None
        tb = stream.time_base or Fraction(1, 90000)
        rate = video_rate(stream)
        duration = float(stream.duration * tb) if stream.duration else (container.duration or 0) / 1e6
        index, frames = stream.index, stream.frames or 0
    scan = analyse(path, index, frames, duration, rate)
    if scan.kind in ("telecine", "mixed"):
        return f"{scan.describe_short()}, whose fields are matched across the whole file"
    return None
