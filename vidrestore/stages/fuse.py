"""Temporal fusion of restored faces: less texture flicker, no ghosting.

Face restorers invent skin, eye and hair detail anew in every frame, so a still face shimmers.
Each track's faces are aligned to one template, so consecutive aligned crops nearly line up; what
is left to follow is expression and pose. For each track, the restored crop of frame t is blended
with the previous *fused* crop, warped onto frame t by the optical flow between the two
**unrestored** aligned crops (measured on the input, so the invented texture cannot steer it).
Where the flow does not hold (a forward-backward check) or the input itself changed (a
photometric check: a mouth opening, a blink, a hand passing), the new frame goes through as it
is, so nothing ghosts. A track's history starts afresh at its first frame, after a gap (the
tracker ends tracks at scene cuts, so a cut is a new track) and at a filled-in frame.

The flow is OpenCV's DIS flow on small grey crops (no download, on the CPU); the warp and blend
run on the device. It streams: nothing is held beyond the previous fused crop per track. The flows
of a group are started on a small thread pool as soon as its faces are aligned (:meth:`prepare`),
so they are computed while the restorer runs; each is the same function of the same two crops as
the serial one, so the output is identical, bit for bit (a test holds it to that).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vidrestore.device import Arriving, Transfers

__all__ = ["Flicker", "PairFigures", "TemporalFusion"]

log = logging.getLogger(__name__)


def _later(t: torch.Tensor, io: Transfers | None) -> Arriving:
    """``t`` on its way to the host: through ``io`` without waiting, else copied now."""
    return io.read_later(t) if io is not None else Arriving(t.cpu().numpy(), None)


@dataclass
class _Track:
    frame_index: int
    grey: np.ndarray  # the unrestored aligned crop, small and grey (uint8)
    aligned: torch.Tensor  # (3, S, S) the unrestored aligned crop, on the device
    fused: torch.Tensor  # (3, S, S) the fused output, on the device
    restored: torch.Tensor  # (3, S, S) the restorer's own output, before fusion


@dataclass(frozen=True)
class PairFigures:
    """The flicker of one face between frame ``frame_index - 1`` and ``frame_index`` (grey levels,
    0-255): the warping error of the input crop, of the restorer's own output and of the output,
    with the flow measured on the input, over the pixels where the input holds still."""

    track_id: int
    frame_index: int
    input: float
    per_frame: float
    output: float


@dataclass
class Flicker:
    """Frame-to-frame change of restored faces where the input holds still (grey levels, 0-255):
    the warping error, with the flow measured on the input and occluded or moving pixels left out."""

    input: float = 0.0  # summed over face pairs: the unrestored input
    per_frame: float = 0.0  # the restorer's own output
    output: float = 0.0  # the output (fused, where fusion is on)
    pairs: int = 0

    def add(self, pair: PairFigures) -> None:
        self.input += pair.input
        self.per_frame += pair.per_frame
        self.output += pair.output
        self.pairs += 1


class TemporalFusion:
    """``fuse_group(faces)`` -> the fused restored crops (see the module docstring).

    ``strength`` in [0, 1): how much of the warped history a pixel keeps where the flow holds
    (0.6 cuts the frame-to-frame change of independent invented texture to about a third);
    ``occlusion``: the forward-backward flow error, in pixels of the 512 crop, above which a
    pixel is taken as occluded; ``change``: the input's own change (0-1) above which it is taken
    as moving (mouth, eyes).
    """

    def __init__(
        self,
        strength: float = 0.6,
        occlusion: float = 2.0,
        change: float = 0.06,
        flow_size: int = 128,
        measure_every: int = 8,
        threads: int = 2,
    ):
        """``strength`` 0 blends nothing and only measures (:attr:`flicker`), on one pair of
        consecutive frames in ``measure_every`` (the flow runs on the CPU: measuring every pair
        would slow a GPU run down). ``threads``: the flow's thread pool (0: the flows run in the
        caller's thread when the faces are fused)."""
        if not 0 <= strength < 1:
            raise ValueError("temporal.strength must be in [0, 1)")
        self.flicker = Flicker()
        self.measured: list[PairFigures] = []  # since the caller last took them (:meth:`take_figures`)
        self.strength = strength
        self.occlusion = occlusion
        self.change = change
        self.flow_size = flow_size
        self.measure_every = max(1, measure_every)
        self.fused = 0  # faces blended with their history
        self._tracks: dict[int, _Track] = {}
        n = flow_size
        self._xy = np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32))
        self._grids: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self._unread: list[tuple[list[tuple[int, int]], Arriving]] = []
        self._local = threading.local()  # a DIS object per thread: one is not safe to share
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None  # started by the first prepare, stopped by close
        # per face (track, frame) prepared ahead: its grey crop, the previous grey it was paired with, the flow
        self._ready: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None, Future[Any] | None]] = {}

    def close(self) -> None:
        """Stop the flow threads (after a run's last group; the next prepare starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def reset(self, track_id: int) -> None:
        self._tracks.pop(track_id, None)

    def clear(self) -> None:
        """Forget every track (a new file starts)."""
        self._tracks.clear()
        self._ready.clear()

    def forget_before(self, frame_index: int) -> None:
        """Drop the history of tracks not seen since before ``frame_index`` (ended tracks)."""
        for tid in [t for t, s in self._tracks.items() if s.frame_index < frame_index - 1]:
            del self._tracks[tid]
        for key in [k for k in self._ready if k[1] < frame_index]:
            del self._ready[key]

    def take_figures(self) -> list[PairFigures]:
        """The pairs measured since the last call (after the group's wait, their copies are in)."""
        self._take_unread()
        out, self.measured = self.measured, []
        return out

    def _small(self, aligned: list[torch.Tensor]) -> torch.Tensor:
        """The crops small and grey, in one batch, on their device."""
        n = self.flow_size
        small = F.interpolate(torch.stack(aligned).float(), size=(n, n), mode="area")
        luma = 0.299 * small[:, 0] + 0.587 * small[:, 1] + 0.114 * small[:, 2]
        return (luma.clamp(0, 1) * 255).round().to(torch.uint8)

    def _greys(self, aligned: list[torch.Tensor], io: Transfers | None) -> list[np.ndarray]:
        """The crops small and grey, in one copy to the host (one wait, counted by ``io``)."""
        small = self._small(aligned)
        return list(io.read(small) if io is not None else small.cpu().numpy())

    def _dis(self) -> Any:
        dis = getattr(self._local, "dis", None)
        if dis is None:
            dis = self._local.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # type: ignore[attr-defined]
        return dis

    def weights(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flow from ``cur`` to ``prev`` (where each pixel of the current crop was) and the blend
        weight per pixel (0 where the flow fails or the input changed), both at ``flow_size``."""
        dis = self._dis()
        to_prev = dis.calc(cur, prev, None)
        to_cur = dis.calc(prev, cur, None)
        n = self.flow_size
        gx, gy = self._xy
        mx, my = gx + to_prev[..., 0], gy + to_prev[..., 1]
        back = cv2.remap(to_cur, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fb = np.hypot(to_prev[..., 0] + back[..., 0], to_prev[..., 1] + back[..., 1]) * (512 / n)
        seen = cv2.remap(prev, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        changed = np.abs(cur.astype(np.float32) - seen.astype(np.float32)) / 255
        inside = (mx >= 0) & (mx <= n - 1) & (my >= 0) & (my <= n - 1)
        ok = ((fb < self.occlusion) & (changed < self.change) & inside).astype(np.float32)
        ok = cv2.erode(ok, np.ones((3, 3), np.uint8))  # a margin around what moved
        ok = cv2.GaussianBlur(ok, (0, 0), 1.0)
        return to_prev, ok * (self.strength if self.strength > 0 else 1.0)

    def _pixel_grid(self, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel rows and columns of a ``size`` crop on ``device``, made once."""
        key = (size, device)
        if key not in self._grids:
            axis = torch.arange(size, device=device, dtype=torch.float32)
            self._grids[key] = torch.meshgrid(axis, axis, indexing="ij")  # type: ignore[assignment]
        return self._grids[key]

    def _takes_part(self, frame_index: int) -> bool:
        """Always when fusing; when only measuring, the two frames of one pair in ``measure_every``."""
        every = self.measure_every
        return not (self.strength == 0 and every > 1 and frame_index % every not in (0, every - 1))

    def _wanted(self, track_id: int, frame_index: int) -> bool:
        if not self._takes_part(frame_index):
            self._tracks.pop(track_id, None)
            return False
        return True

    def prepare(self, faces: list[tuple[int, int, torch.Tensor]], io: Transfers | None = None) -> None:
        """``(track_id, frame_index, aligned)`` per face of a group, in frame order, as soon as they are
        aligned: their grey crops are made and the flows to each track's previous crop started on the
        pool. :meth:`fuse_group` then takes them; a face it fuses otherwise (a track reset between)
        has its flow worked out again, so what is prepared never changes the result. Through ``io``
        the grey crops come back without the caller waiting: the flow threads wait for them."""
        if self.threads <= 0:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vidrestore-flow")
        todo = [(tid, index, aligned) for tid, index, aligned in faces if self._takes_part(index)]
        if not todo:
            return
        small = self._small([a for _, _, a in todo])
        arriving = _later(small, io)
        greys = list(arriving.host)  # views: filled when the copy is done, which the flow threads wait for
        last = {tid: (s.frame_index, s.grey) for tid, s in self._tracks.items()}
        for (tid, index, _), grey in zip(todo, greys, strict=True):
            prev = last.get(tid)
            if prev is not None and prev[0] == index - 1:
                job = self._pool.submit(self._weights_arriving, arriving, prev[1], grey)
                self._ready[(tid, index)] = (grey, prev[1], job)
            else:
                self._ready[(tid, index)] = (grey, None, None)
            last[tid] = (index, grey)

    def unprepare(self, keys: list[tuple[int, int]]) -> None:
        """Forget what was prepared for these (track, frame) faces: their aligned crops were replaced."""
        for key in keys:
            self._ready.pop(key, None)

    def _weights_arriving(self, arriving: Arriving, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        arriving.get()
        return self.weights(prev, cur)

    def fuse(self, track_id: int, frame_index: int, aligned: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        """One face: :meth:`fuse_group` of one."""
        return self.fuse_group([(track_id, frame_index, aligned, restored)])[0]

    def fuse_group(
        self, faces: list[tuple[int, int, torch.Tensor, torch.Tensor]], io: Transfers | None = None
    ) -> list[torch.Tensor]:
        """``(track_id, frame_index, aligned, restored)`` per face, in frame order -> the fused crops.

        The crops are made small and grey in one batch; the flow runs on the host; the warps and
        blends stay on the device, and the flicker figures of the whole group are read back once."""
        out = [restored for _, _, _, restored in faces]
        todo = [k for k, (tid, index, _, _) in enumerate(faces) if self._wanted(tid, index)]
        if not todo:
            return out
        ready = [self._ready.pop((faces[k][0], faces[k][1]), None) for k in todo]
        missing = [k for k, r in zip(todo, ready, strict=True) if r is None]
        made = iter(self._greys([faces[k][2] for k in missing], io) if missing else [])
        pending: list[tuple[int, int, torch.Tensor]] = []
        for k, prepared in zip(todo, ready, strict=True):
            tid, index, aligned, restored = faces[k]
            grey = prepared[0] if prepared is not None else next(made)
            state = self._tracks.get(tid)
            if state is not None and state.frame_index == index - 1:
                flow = None  # the prepared flow, where it was made from this very pair
                if prepared is not None and prepared[1] is state.grey and prepared[2] is not None:
                    flow = prepared[2].result()
                out[k], sums = self._blend(state, grey, aligned, restored, flow)
                pending.append((tid, index, sums))
            self._tracks[tid] = _Track(index, grey, aligned, out[k], restored)
        if pending:
            sums = torch.stack([s for _, _, s in pending])
            # the group's flicker figures: with ``io`` copied back without waiting, read by take_figures
            arriving = _later(sums, io)
            self._unread.append(([(tid, index) for tid, index, _ in pending], arriving))
            if io is None:
                self._take_unread()
        return out

    def _take_unread(self) -> None:
        for keys, arriving in self._unread:
            for (tid, index), (n, inp, per_frame, output) in zip(keys, arriving.get().tolist(), strict=True):
                if n > 0:
                    pair = PairFigures(tid, index, inp / n * 255, per_frame / n * 255, output / n * 255)
                    self.flicker.add(pair)
                    self.measured.append(pair)
        self._unread.clear()

    def _blend(
        self,
        state: _Track,
        grey: np.ndarray,
        aligned: torch.Tensor,
        restored: torch.Tensor,
        prepared: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused crop, and (still pixels, then the summed warping errors of input, per-frame
        and output over them) as a device tensor."""
        flow, weight = prepared if prepared is not None else self.weights(state.grey, grey)
        size = restored.shape[-1]
        n = self.flow_size
        # where each current pixel was in the previous crop, as a grid_sample grid in [-1, 1]
        f = torch.from_numpy(flow).to(restored.device).permute(2, 0, 1)[None] * (size / n)
        f = F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False)[0]
        ys, xs = self._pixel_grid(size, restored.device)
        grid = torch.stack([(xs + f[0]) / (size - 1) * 2 - 1, (ys + f[1]) / (size - 1) * 2 - 1], dim=-1)[None]
        history = torch.stack([state.fused.float(), state.restored.float(), state.aligned.float()])
        warped = F.grid_sample(history, grid.expand(3, -1, -1, -1), padding_mode="border", align_corners=True)
        w = torch.from_numpy(weight).to(restored.device)[None, None]
        w = F.interpolate(w, size=(size, size), mode="bilinear", align_corners=False)[0]
        out = restored
        if self.strength > 0:
            out = (w * warped[0] + (1 - w) * restored.float()).to(restored.dtype)
            self.fused += 1
        # the flicker figures: over the pixels where the input holds still (weight > 0)
        still = (w > 0.5 * max(self.strength, 1e-6)).float()
        sums = torch.stack(
            [
                still.sum() * 3,
                ((aligned.float() - warped[2]).abs() * still).sum(),
                ((restored.float() - warped[1]).abs() * still).sum(),
                ((out.float() - warped[0]).abs() * still).sum(),
            ]
        )
        return out, sums
