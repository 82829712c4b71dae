"""Link faces across frames, fill short gaps, smooth landmarks with a centred window.

Frames pass through a short buffer (``delay`` frames). That look-ahead is what lets the
stage (a) fill a face missed for up to ``max_gap`` frames once it is seen again, (b)
smooth each landmark over a window centred on the frame (no lag on steady motion, unlike
a causal filter), and (c) fade a track out over its last ``fade_frames`` frames once it
is known to have ended. Scene cuts end every track at once, without fading.

The smoother averages each track's landmarks over a symmetric window (shrunk near the
track's ends, so it never extrapolates). Where the averaged point strays from the
frame's own point by more than ``motion_threshold`` x the face size (a sudden turn, not
detector jitter), it hands over to the frame's own point, so fast moves are followed.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from vidrestore.config import SmoothingConfig
from vidrestore.records import Face, Frame
from vidrestore.stages.detect import Detections, thumbnail

__all__ = ["TrackSmoother", "box_iou"]


@dataclass
class _Obs:
    box: np.ndarray
    score: float
    raw: np.ndarray | None  # None where filled in
    points: np.ndarray


@dataclass
class _Track:
    id: int
    last_index: int
    last: _Obs
    end_index: int | None = None  # last frame with a real detection, once the track has ended
    fades: bool = False


@dataclass
class _Slot:
    index: int
    frame: Frame | None
    obs: dict[int, _Obs] = field(default_factory=dict)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` (N, 4) against ``b`` (M, 4)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)  # type: ignore[no-any-return]


def _size(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1], 1.0))


class TrackSmoother:
    """``run(pairs)``: ``(Frame, Detections)`` in order in, frames with ``faces`` set out."""

    def __init__(self, config: SmoothingConfig, min_iou: float = 0.2) -> None:
        self.cfg = config
        self.half = config.window // 2 if config.method == "centered" else 0
        self.delay = max(self.half, config.max_gap + 1 + config.fade_frames)
        self.min_iou = min_iou
        self._ids = itertools.count()
        self.active: list[_Track] = []
        self.ended: dict[int, _Track] = {}
        self.pending: deque[_Slot] = deque()
        self.history: deque[_Slot] = deque(maxlen=max(self.half, 1))
        self._thumb: np.ndarray | None = None

    def run(self, pairs: Iterator[tuple[Frame, Detections]]) -> Iterator[Frame]:
        for frame, dets in pairs:
            self._add(frame, dets)
            while len(self.pending) > self.delay:
                yield self._emit()
        for track in self.active:  # the video ends: tracks stop with it, nothing to fade
            self._end(track, fades=False)
        self.active = []
        while self.pending:
            yield self._emit()

    # -- adding a frame -------------------------------------------------------------

    def _scene_cut(self, frame: Frame, dets: Detections) -> bool:
        thumb = dets.thumb if dets.thumb is not None else thumbnail(frame.image)
        cut = self._thumb is not None and float(np.abs(thumb - self._thumb).mean()) > self.cfg.scene_cut
        self._thumb = thumb
        return cut

    def _end(self, track: _Track, fades: bool) -> None:
        track.end_index, track.fades = track.last_index, fades
        self.ended[track.id] = track

    def _add(self, frame: Frame, dets: Detections) -> None:
        index = frame.index
        slot = _Slot(index, frame)
        self.pending.append(slot)
        if self._scene_cut(frame, dets):
            for track in self.active:
                self._end(track, fades=False)
            self.active = []
        still = []
        for track in self.active:
            if index - track.last_index > self.cfg.max_gap + 1:
                self._end(track, fades=True)
            else:
                still.append(track)
        self.active = still
        matched = self._match(dets)
        for det, found in enumerate(matched):
            obs = _Obs(
                dets.boxes[det].copy(), float(dets.scores[det]), dets.landmarks[det].copy(), dets.landmarks[det].copy()
            )
            if found is None:
                track = _Track(next(self._ids), index, obs)
                self.active.append(track)
            else:
                track = found
                self._fill_gap(track, index, obs)
                track.last_index, track.last = index, obs
            slot.obs[track.id] = obs

    def _match(self, dets: Detections) -> list[_Track | None]:
        """Each detection's track (greedy by IoU, then by landmark distance), or None."""
        out: list[_Track | None] = [None] * len(dets)
        if not self.active or not len(dets):
            return out
        tracks = self.active
        iou = box_iou(np.stack([t.last.box for t in tracks]), dets.boxes)
        # landmark distance relative to the face size, for small or fast faces whose boxes barely overlap
        dist = np.array(
            [
                [np.linalg.norm(t.last.points - lm, axis=1).mean() / _size(t.last.box) for lm in dets.landmarks]
                for t in tracks
            ]
        )
        score = np.where(iou >= self.min_iou, 1.0 + iou, np.where(dist < 0.5, 1.0 - dist, 0.0))
        used_t, used_d = set(), set()
        for flat in np.argsort(-score, axis=None):
            ti, di = divmod(int(flat), score.shape[1])
            if score[ti, di] <= 0:
                break
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            out[di] = tracks[ti]
        return out

    def _fill_gap(self, track: _Track, index: int, obs: _Obs) -> None:
        gap = index - track.last_index - 1
        if gap <= 0:
            return
        slots = {s.index: s for s in self.pending}
        for k in range(1, gap + 1):
            slot = slots.get(track.last_index + k)
            if slot is None:
                continue
            t = k / (gap + 1)
            slot.obs[track.id] = _Obs(
                box=(1 - t) * track.last.box + t * obs.box,
                score=min(track.last.score, obs.score),
                raw=None,
                points=(1 - t) * track.last.points + t * obs.points,
            )

    # -- emitting a frame -----------------------------------------------------------

    def _window(self, track_id: int, pos: int) -> list[np.ndarray]:
        """The track's points in a symmetric window around pending[pos] (pos 0 is being emitted)."""
        before = [s for s in self.history]
        after = list(self.pending)
        left: list[np.ndarray] = []
        for s in reversed(before):
            if track_id not in s.obs or len(left) >= self.half:
                break
            left.append(s.obs[track_id].points)
        right: list[np.ndarray] = []
        for s in after[pos + 1 :]:
            if track_id not in s.obs or len(right) >= self.half:
                break
            right.append(s.obs[track_id].points)
        k = min(len(left), len(right))
        return left[:k] + [after[pos].obs[track_id].points] + right[:k]

    def _smooth(self, track_id: int, obs: _Obs) -> np.ndarray:
        if self.half == 0:
            return obs.points
        window = self._window(track_id, 0)
        smooth: np.ndarray = np.mean(window, axis=0)
        # follow real, sudden motion: hand over to the frame's own points where they stray far
        stray = float(np.linalg.norm(smooth - obs.points, axis=1).max()) / _size(obs.box)
        thr = self.cfg.motion_threshold
        if thr > 0 and stray > thr:
            w = min(1.0, (stray - thr) / thr)
            smooth = (1 - w) * smooth + w * obs.points
        return smooth

    def _weight(self, track_id: int, index: int) -> float:
        track = self.ended.get(track_id)
        fade = self.cfg.fade_frames
        if track is None or not track.fades or track.end_index is None or fade == 0:
            return 1.0
        left = track.end_index - index  # frames still to come before the track's last detection
        return 1.0 if left >= fade else (left + 1) / (fade + 1)

    def _emit(self) -> Frame:
        slot = self.pending[0]
        faces = []
        for track_id, obs in sorted(slot.obs.items()):
            faces.append(
                Face(
                    track_id=track_id,
                    score=obs.score,
                    box=obs.box.astype(np.float32),
                    landmarks_raw=None if obs.raw is None else obs.raw.astype(np.float32),
                    landmarks=self._smooth(track_id, obs).astype(np.float32),
                    interpolated=obs.raw is None,
                    weight=self._weight(track_id, slot.index),
                )
            )
        self.pending.popleft()
        frame = slot.frame
        assert frame is not None
        slot.frame = None  # history keeps the points only
        self.history.append(slot)
        for track_id in [t for t, tr in self.ended.items() if tr.end_index is not None and tr.end_index < slot.index]:
            del self.ended[track_id]
        return replace(frame, faces=tuple(faces))
