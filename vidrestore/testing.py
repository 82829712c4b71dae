"""Synthetic inputs for tests, benchmarks and the sample clip: nothing here downloads anything.

* Random-weight model files of the real architectures (full size, or narrower variants
  of the same architecture where speed matters), saved like the released files so they
  load through :func:`vidrestore.models.loading.load_model`.
* Clips with a real face (``skimage.data.astronaut()``, from the test extra) moved
  along a known trajectory and degraded (blur, noise, compression), with audio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidrestore.models.compat import import_research_module

__all__ = [
    "FaceClip",
    "astronaut",
    "make_face_clip",
    "reference_codeformer",
    "reference_gfpganer",
    "save_random_weights",
    "write_clip",
]

# The astronaut's 5 landmarks in skimage.data.astronaut() (512x512), measured once with CenterFace.
ASTRONAUT_LANDMARKS = np.array(
    [[203.2, 101.7], [247.0, 104.5], [223.3, 125.1], [203.4, 142.3], [241.3, 144.4]], dtype=np.float64
)


def _model(arch: str, small: bool) -> Any:
    if arch == "gfpgan_v1_clean":
        m = import_research_module("gfpgan.archs.gfpganv1_clean_arch")
        # v1.3/v1.4 as released, or the same architecture narrower and with fewer style layers
        width = (
            {"num_style_feat": 64, "channel_multiplier": 1, "num_mlp": 2, "narrow": 0.125}
            if small
            else {"num_style_feat": 512, "channel_multiplier": 2, "num_mlp": 8, "narrow": 1}
        )
        return m.GFPGANv1Clean(
            out_size=512,
            decoder_load_path=None,
            fix_decoder=False,
            input_is_latent=True,
            different_w=True,
            sft_half=True,
            **width,
        )
    if arch == "restoreformer":
        m = import_research_module("gfpgan.archs.restoreformer_arch")
        # as released, or narrower with a small codebook (the same six levels and 16x16 latent)
        width = (
            {"ch": 32, "num_res_blocks": 1, "n_embed": 64, "embed_dim": 32, "z_channels": 64}
            if small
            else {"ch": 64, "num_res_blocks": 2, "n_embed": 1024, "embed_dim": 256, "z_channels": 256}
        )
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints the latent's shape
            return m.RestoreFormer(**width)
    if arch == "codeformer":  # only as released: spandrel's class fixes the sizes
        from vidrestore.models.compat import import_codeformer

        return import_codeformer().CodeFormer()
    if arch == "srvgg_compact":
        m = import_research_module("realesrgan.archs.srvgg_arch")
        return m.SRVGGNetCompact(
            num_in_ch=3,
            num_out_ch=3,
            num_feat=16 if small else 64,
            num_conv=4 if small else 32,
            upscale=4,
            act_type="prelu",
        )
    if arch in ("rrdbnet", "rrdbnet_x2"):  # Real-ESRGAN x4plus, or x2plus
        m = import_research_module("basicsr.archs.rrdbnet_arch")
        return m.RRDBNet(
            num_in_ch=3,
            num_out_ch=3,
            scale=2 if arch == "rrdbnet_x2" else 4,
            num_feat=16 if small else 64,
            num_block=2 if small else 23,
            num_grow_ch=8 if small else 32,
        )
    if arch in ("retinaface", "retinaface_mobile"):
        m = import_research_module("facexlib.detection.retinaface")
        net = "mobile0.25" if arch == "retinaface_mobile" or small else "resnet50"
        return m.RetinaFace(network_name=net, half=False, phase="test", device="cpu")
    if arch == "parsenet":
        m = import_research_module("facexlib.parsing.parsenet")
        return m.ParseNet(in_size=512, out_size=512, parsing_ch=19)
    raise ValueError(f"unknown architecture {arch!r}")


def save_random_weights(
    arch: str, path: Path, *, small: bool = True, seed: int = 0, key: str | None = "params_ema", scale: float = 1.0
) -> Path:
    """Build ``arch`` with random weights and save its state dict like the release files do.

    ``key`` wraps the state dict (``params_ema`` for GFPGAN/x4plus/RestoreFormer/CodeFormer,
    ``params`` for general-x4v3, ``None`` for the facexlib models). ``scale`` multiplies every
    float tensor (a smaller scale keeps a random network's output tame).

    RestoreFormer and CodeFormer pick a codebook entry per latent cell (an argmin, an argmax).
    Trained codebooks are far apart; random ones are not, so a difference of one grey level in
    the aligned crop would flip codes and change the face: the random files make the choice
    clear (one code near the origin and the rest far off; CodeFormer's code logits made
    constant), so that two pipelines can be compared at all. Every layer still runs.
    """
    torch.manual_seed(seed)
    model = _model(arch, small)
    state = {k: (v * scale if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    if arch == "restoreformer":
        book = state["quantize.embedding.weight"]
        book.copy_(torch.nn.functional.normalize(book, dim=1) * 1e3)
        book[0] = 0
    if arch == "codeformer":
        state["idx_pred_layer.0.weight"].zero_()  # LayerNorm's gain: the logits are its bias's, fixed
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: state} if key else state, path)
    return path


def astronaut() -> np.ndarray:
    """``skimage.data.astronaut()``: 512x512 RGB uint8 with one real face."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@dataclass(frozen=True)
class FaceClip:
    """What :func:`make_face_clip` wrote: per-frame true landmarks and timing."""

    path: Path
    landmarks: np.ndarray  # (frames, 5, 2) true landmark positions
    pts: list[int]
    time_base: Fraction
    width: int
    height: int


def _place(canvas_hw: tuple[int, int], face_scale: float, dx: float, dy: float, angle: float) -> np.ndarray:
    """Affine (2x3) placing the astronaut image into a canvas: scale, rotate about its face, shift."""
    h, w = canvas_hw
    centre = ASTRONAUT_LANDMARKS.mean(axis=0)
    c, s = math.cos(angle) * face_scale, math.sin(angle) * face_scale
    rot = np.array([[c, -s], [s, c]])
    target = np.array([w / 2 + dx, h / 2 + dy])
    return np.hstack([rot, (target - rot @ centre)[:, None]])


def make_face_clip(
    path: Path,
    *,
    frames: int = 30,
    size: tuple[int, int] = (320, 240),
    face_scale: float = 0.6,
    trajectory: Callable[[int], tuple[float, float, float]] | None = None,
    rate: int = 25,
    codec: str = "libx264",
    crf: int = 23,
    blur: float = 0.0,
    noise: float = 0.0,
    audio: bool | str = True,
    audio_tracks: int = 1,
    gop: int | None = None,
    container_options: dict[str, str] | None = None,
    sample_rate: int | Sequence[int] = 48000,
    threads: int = 0,
    blank: Sequence[int] = (),
    seed: int = 0,
) -> FaceClip:
    """Write a clip of the astronaut's face moving along ``trajectory(i) -> (dx, dy, angle)``.

    Degradations: Gaussian ``blur`` (sigma, px), ``noise`` (std, 0-255 scale) and the
    encoder's compression (``crf``). Frames listed in ``blank`` show no face (background
    only). Returns the true landmark positions per frame.
    """
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    src = astronaut()
    traj = trajectory or (lambda i: (0.0, 0.0, 0.0))
    truths, images = [], []
    background = np.full((h, w, 3), (70, 90, 110), np.uint8)
    for i in range(frames):
        dx, dy, angle = traj(i)
        m = _place((h, w), face_scale, dx, dy, angle)
        img: np.ndarray
        if i in blank:
            img = background.copy()
        else:
            img = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(70, 90, 110))
        if blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), blur)
        if noise > 0:
            img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        images.append(img)
        truths.append(ASTRONAUT_LANDMARKS @ m[:, :2].T + m[:, 2])
    tb = Fraction(1, rate * 512)
    pts = [i * 512 for i in range(frames)]
    write_clip(
        path,
        images,
        pts=pts,
        time_base=tb,
        rate=rate,
        codec=codec,
        crf=crf,
        audio=audio,
        audio_tracks=audio_tracks,
        gop=gop,
        container_options=container_options,
        sample_rate=sample_rate,
        threads=threads,
    )
    return FaceClip(path, np.array(truths), pts, tb, w, h)


def write_clip(
    path: Path,
    images: Sequence[np.ndarray],
    *,
    pts: Sequence[int] | None = None,
    time_base: Fraction = Fraction(1, 25),
    rate: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    crf: int = 23,
    audio: bool | str = True,
    audio_tracks: int = 1,
    sample_rate: int | Sequence[int] = 48000,
    rotation: int = 0,
    metadata: dict[str, str] | None = None,
    bt709: bool = False,
    gop: int | None = None,
    container_options: dict[str, str] | None = None,
    threads: int = 0,
) -> None:
    """Encode ``images`` (RGB uint8) with PyAV, plus ``audio_tracks`` tone tracks (``sample_rate``:
    one rate for all, or one per track).

    ``audio`` True picks the container's usual codec (AAC, Opus for WebM); a string names one.
    """
    import av

    pts = list(pts) if pts is not None else list(range(len(images)))
    h, w = images[0].shape[:2]
    rates = [sample_rate] * audio_tracks if isinstance(sample_rate, int) else list(sample_rate)
    with av.open(str(path), "w", options=container_options or {}) as c:
        if metadata:
            c.metadata.update(metadata)
        v: Any = c.add_stream(codec, rate=rate)
        v.width, v.height, v.pix_fmt = w, h, pix_fmt
        v.time_base = time_base
        v.codec_context.time_base = time_base
        if codec in ("libx264", "libx265", "libvpx-vp9"):
            v.options = {"crf": str(crf)}
        if gop:
            v.codec_context.gop_size = gop
        if threads:  # one thread: the same bytes every time (x264 and libvpx are not, with several)
            v.codec_context.thread_count = threads
        if rotation:
            v.set_display_rotation(rotation)
        if bt709:  # tag the stream BT.709, limited range (as HD cameras do)
            cc = v.codec_context
            cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 1, 1, 1, 1
        streams: list[Any] = []
        if audio:
            name = audio if isinstance(audio, str) else ("libopus" if path.suffix == ".webm" else "aac")
            for k in range(audio_tracks):
                a: Any = c.add_stream(name, rate=rates[k], layout="stereo")
                a.metadata["language"] = ("eng", "fra", "deu")[k % 3]
                streams.append(a)
        end_s = float((pts[-1] + (pts[-1] - pts[-2] if len(pts) > 1 else 1)) * time_base)
        ends = [int(end_s * r) for r in rates]
        sent = [0] * len(streams)
        for img, p in zip(images, pts):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pix_fmt != "yuv420p" or bt709:
                frame = frame.reformat(format=pix_fmt, dst_colorspace=1 if bt709 else None)
            frame.pts = p
            frame.time_base = time_base
            c.mux(v.encode(frame))
            t_s = float(p * time_base)
            for k, a in enumerate(streams):
                due = min(ends[k], int((t_s + 0.1) * rates[k]))
                sent[k] = _write_tone(c, a, sent[k], due, rates[k], k)
        for k, a in enumerate(streams):
            sent[k] = _write_tone(c, a, sent[k], ends[k], rates[k], k)
        c.mux(v.encode(None))
        for a in streams:
            c.mux(a.encode(None))


def _write_tone(c: object, stream: object, start: int, stop: int, rate: int, k: int) -> int:
    import av

    chunk = 960
    while start < stop:
        n = min(chunk, stop - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        tone = (0.2 * np.sin(2 * np.pi * (440 + 110 * k) * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        c.mux(stream.encode(frame))  # type: ignore[attr-defined]
        start += n
    return start


# -- the gfpgan package's own loop, for comparisons ------------------------------------------


class _FixedNoise(torch.nn.Module):
    """GFPGANer calls the network with ``randomize_noise=True`` (its default); fix the noise as we do."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, **kwargs: Any) -> Any:
        kwargs.pop("weight", None)  # GFPGANv1Clean ignores it
        return self.net(x, randomize_noise=False, **kwargs)


class FacexlibDetector:
    """facexlib's ``detect_faces(bgr, threshold)`` interface over one of our detectors,
    so the reference loop sees exactly the landmarks vidrestore sees."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def detect_faces(self, bgr: np.ndarray, conf_threshold: float = 0.8) -> np.ndarray:
        (d,) = self.detector.detect([np.ascontiguousarray(bgr[:, :, ::-1])])
        return np.concatenate([d.boxes, d.scores[:, None], d.landmarks.reshape(-1, 10)], axis=1)


def _face_helper(parser: torch.nn.Module, detector: Any, upscale: int, device: torch.device) -> Any:
    """facexlib's ``FaceRestoreHelper`` as GFPGAN and CodeFormer build it (512 crops, parsing mask on),
    with our detector and the given parser instead of the models its constructor would download."""
    helper_mod = import_research_module("facexlib.utils.face_restoration_helper")
    saved = helper_mod.init_detection_model, helper_mod.init_parsing_model
    helper_mod.init_detection_model = lambda *a, **k: FacexlibDetector(detector)
    helper_mod.init_parsing_model = lambda *a, **k: parser
    try:
        return helper_mod.FaceRestoreHelper(
            upscale,
            face_size=512,
            crop_ratio=(1, 1),
            det_model="retinaface_resnet50",
            save_ext="png",
            use_parse=True,
            device=device,
        )
    finally:
        helper_mod.init_detection_model, helper_mod.init_parsing_model = saved


def reference_gfpganer(
    gfpgan: torch.nn.Module,
    parser: torch.nn.Module,
    detector: Any,
    device: torch.device | str = "cpu",
    upscale: int = 1,
) -> Any:
    """The gfpgan package's ``GFPGANer`` around the given networks, without its downloads.

    Its constructor would fetch RetinaFace and ParseNet from the internet; this builds the
    same object with the detector (any of ours, through :class:`FacexlibDetector`) and the
    networks handed in, and the GFPGAN noise fixed. ``enhance()`` is the package's own code.
    """
    gfpgan_utils = import_research_module("gfpgan.utils")
    ref = gfpgan_utils.GFPGANer.__new__(gfpgan_utils.GFPGANer)
    ref.upscale, ref.bg_upsampler, ref.device = upscale, None, torch.device(device)
    ref.face_helper = _face_helper(parser, detector, upscale, ref.device)
    ref.gfpgan = _FixedNoise(gfpgan).to(ref.device)
    return ref


def reference_codeformer(
    codeformer: torch.nn.Module, parser: torch.nn.Module, detector: Any, fidelity: float
) -> Callable[[np.ndarray], np.ndarray]:
    """CodeFormer's own inference script's per-image loop (``inference_codeformer.py``, whole-image
    mode, no background upsampler), on facexlib's helper, with the given networks and detector.

    The script calls ``net(face, w=fidelity, adain=True)[0]``; spandrel's class takes the same
    weight as ``weight`` (and always uses AdaIN), so it is called that way here. Detection runs at
    full size (the script shrinks the image to 640 px for its detector; this compares restorers).
    Returns ``enhance(bgr) -> bgr``.
    """
    misc = import_research_module("basicsr.utils")
    from torchvision.transforms.functional import normalize

    helper = _face_helper(parser, detector, 1, torch.device("cpu"))

    def enhance(bgr: np.ndarray) -> np.ndarray:
        helper.clean_all()
        helper.read_image(bgr)
        helper.get_face_landmarks_5(only_center_face=False, eye_dist_threshold=5)
        helper.align_warp_face()
        for cropped in helper.cropped_faces:
            t = misc.img2tensor(cropped / 255.0, bgr2rgb=True, float32=True)
            normalize(t, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), inplace=True)
            with torch.no_grad():
                out = codeformer(t.unsqueeze(0), weight=fidelity)[0]
            restored = misc.tensor2img(out, rgb2bgr=True, min_max=(-1, 1)).astype("uint8")
            helper.add_restored_face(restored)  # (CodeFormer's own facexlib fork also takes the crop)
        helper.get_inverse_affine(None)
        return helper.paste_faces_to_input_image(upsample_img=None)  # type: ignore[no-any-return]

    return enhance
