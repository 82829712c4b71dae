"""The configuration's keys: one frozen dataclass per section, each key with its default, a one-line
``help`` and, for numbers, a closed range (loading and checking them is :mod:`vidrestore.config`'s).
``configs/default.yaml`` mirrors them (a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DetectorName = Literal["retinaface_resnet50", "retinaface_mobile0.25", "centerface", "none"]
RestorerName = Literal["gfpgan-1.4", "gfpgan-1.3", "gfpgan-1.2", "restoreformer", "codeformer", "none"]
UpscalerName = Literal["realesr-general-x4v3", "realesrgan-x4plus", "realesrgan-x2plus", "none"]
WorkerKind = Literal["processes", "threads"]
Decoder = Literal["auto", "software", "nvdec"]
Deinterlace = Literal["auto", "off", "bwdif", "yadif", "w3fdif", "estdif"]
FieldRate = Literal["double", "single"]
VideoCodec = Literal["auto", "libx264", "libx265", "libsvtav1", "libvpx-vp9", "h264_nvenc", "hevc_nvenc"]
EncoderPreset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
SmoothingMethod = Literal["centered", "none"]
TemporalMethod = Literal["none", "flow-blend"]
Overlap = Literal["auto", "on", "off"]
DetectorPrecision = Literal["auto", "fp32"]
NetPrecision = Literal["auto", "fp32", "bf16"]
EngineName = Literal["auto", "eager", "compile", "onnxruntime", "openvino", "tensorrt"]


_DEINTERLACE = (
    "interlaced input is deinterlaced before any face stage (auto: bwdif), telecined film matched back to its "
    "frames; off: woven frames pass through (faces are then found and restored on combed pictures)"
)


def _key(default: Any, help: str, lo: float | None = None, hi: float | None = None) -> Any:
    """A config field: its default, a one-line help, and an optional closed range."""
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi})


@dataclass(frozen=True)
class DetectorConfig:
    """Face detection."""

    model: DetectorName = _key("retinaface_resnet50", "face detector; centerface needs no download")
    weights: str | None = _key(None, "local weights file used as-is instead of the registry's")
    size: int = _key(
        960, "detect at this longest side in pixels (upscaling never); larger finds smaller faces", 64, 8192
    )
    threshold: float = _key(0.6, "minimum detection score", 0.0, 1.0)
    min_face: int = _key(8, "ignore faces smaller than this, in source pixels", 1, 100000)
    batch_size: int = _key(8, "frames per detector call", 1, 256)
    engine: EngineName | None = _key(None, "how RetinaFace runs; null: the top-level engine")
    precision: DetectorPrecision = _key(
        "auto", "auto: RetinaFace runs in the restorer's precision (bf16 on CUDA); fp32: always full precision"
    )


@dataclass(frozen=True)
class RestorerConfig:
    """Face restoration on aligned crops."""

    model: RestorerName = _key(
        "gfpgan-1.4", "face restorer: gfpgan-1.4, gfpgan-1.3, gfpgan-1.2, restoreformer, codeformer (extra) or none"
    )
    weights: str | None = _key(None, "local weights file used as-is instead of the registry's")
    engine: EngineName | None = _key(None, "how the restorer and the parsing model run; null: the top-level engine")
    precision: NetPrecision | None = _key(
        None, "what the restorer and the parsing model compute in on a CPU (bf16: OpenVINO only); null: the top-level"
    )
    blend: float = _key(1.0, "0 keeps the original face, 1 the fully restored one", 0.0, 1.0)
    fidelity: float = _key(
        0.5, "codeformer only (its w): 0 more invented detail, 1 more faithful to the input and steadier", 0.0, 1.0
    )
    batch_size: int = _key(
        0, "faces per restorer call; 0: auto (8 on a GPU; 1 on the CPU, where batches run slower)", 0, 256
    )
    parsing_mask: bool = _key(True, "paste back through a face-parsing mask (hair, ears, edges); false: a soft square")
    parsing_size: int = _key(
        256, "resolution the parsing model runs at; its mask is blurred by 101 px anyway (512: as GFPGAN)", 128, 512
    )
    parsing_weights: str | None = _key(None, "local face-parsing weights used as-is")


@dataclass(frozen=True)
class UpscalerConfig:
    """Real-ESRGAN on the crop around small faces (and the whole frame when output.scale > 1)."""

    model: UpscalerName = _key("realesr-general-x4v3", "upscaler for small faces")
    weights: str | None = _key(None, "local weights file used as-is instead of the registry's")
    engine: EngineName | None = _key(None, "how the upscaler runs; null: the top-level engine")
    precision: NetPrecision | None = _key(
        None, "what the upscaler computes in on a CPU (bf16: OpenVINO only); null: the top-level precision"
    )
    below: int = _key(96, "faces smaller than this (pixels, longest side) are upscaled first", 0, 4096)
    margin: float = _key(0.5, "crop margin around a small face, as a fraction of its size", 0.0, 4.0)
    tile: int = _key(512, "tile size for whole-frame upscaling (output.scale > 1)", 64, 4096)


@dataclass(frozen=True)
class SmoothingConfig:
    """Temporal smoothing of each face track's landmarks."""

    method: SmoothingMethod = _key("centered", "centered: look-ahead window; none: raw landmarks")
    window: int = _key(7, "frames in the centred window (odd; look-ahead is window // 2)", 1, 61)
    max_gap: int = _key(5, "frames a face may be missed and still be filled in", 0, 120)
    motion_threshold: float = _key(
        0.15, "a landmark move larger than this fraction of the face size is followed, not smoothed", 0.0, 10.0
    )
    scene_cut: float = _key(0.35, "mean frame difference (0-1) that counts as a scene cut", 0.0, 1.0)
    fade_frames: int = _key(4, "frames over which a track that ends fades back to the original", 0, 120)


@dataclass(frozen=True)
class TemporalConfig:
    """Temporal fusion of each track's restored faces (less texture flicker)."""

    method: TemporalMethod = _key(
        "flow-blend",
        "flow-blend: blend each restored face with its flow-warped history where the input holds still; "
        "none: per frame (flicker is still measured)",
    )
    strength: float = _key(0.6, "how much history a still pixel keeps (0 none; below 1)", 0.0, 0.95)
    occlusion: float = _key(
        2.0, "forward-backward flow error (px of the 512 crop) that marks a pixel occluded", 0.1, 64
    )
    change: float = _key(0.06, "the input's own change (0-1) that marks a pixel as moving: it is not blended", 0.0, 1.0)
    flow_threads: int = _key(2, "threads for the flow while the restorer runs (0: in the restore thread)", 0, 32)


@dataclass(frozen=True)
class OutputConfig:
    """The written file."""

    codec: VideoCodec = _key("auto", "video encoder; auto: the output container's usual one (see the README)")
    crf: int = _key(18, "constant rate factor (lower is better quality; 0: lossless with x264/x265)", 0, 63)
    preset: EncoderPreset = _key("medium", "encoder speed preset (x264 names; mapped for the other encoders)")
    audio: bool = _key(True, "copy audio tracks; false drops them on purpose")
    subtitles: bool = _key(True, "copy subtitle tracks")
    overwrite: bool = _key(False, "replace an existing output file")
    scale: int = _key(1, "1 keeps the resolution; 2 or 4 upscale the whole frame first", 1, 4)
    image_quality: int = _key(95, "JPEG/WebP quality for image outputs", 1, 100)
    square_pixels: bool = _key(
        False, "resample non-square pixels (DVD, DV, HDV) to square; false: keep and signal them"
    )


@dataclass(frozen=True)
class InputConfig:
    """How inputs are read."""

    strict: bool = _key(
        False, "stop with exit 4 at the first damage in an input (default: read on past it and report it)"
    )
    decoder: Decoder = _key("auto", "software, or nvdec (NVIDIA's decoder, else software); auto: nvdec on CUDA")
    deinterlace: Deinterlace = _key("auto", _DEINTERLACE)
    field_rate: FieldRate = _key("double", "deinterlaced: a picture per field (50i -> 50p), or single: per frame")


@dataclass(frozen=True)
class PipelineConfig:
    """Threads and queues."""

    queue_size: int = _key(16, "frames held in each queue between stages", 1, 1024)
    decode_threads: int = _key(0, "decoder threads; 0 lets FFmpeg choose", 0, 64)
    encode_threads: int = _key(0, "encoder threads; 0 lets FFmpeg choose", 0, 64)
    model_threads: int = _key(
        0, "CPU threads for the networks (torch, ONNX Runtime and OpenVINO alike); 0: torch's count (the cores)", 0, 256
    )
    overlap: Overlap = _key(
        "auto", "detect the next frames on a thread of their own while faces are restored; auto: on a GPU"
    )
    segment_seconds: float = _key(
        60.0, "cut videos longer than twice this into keyframe-aligned segments (resumable); 0: whole files", 0, 1e6
    )
    workers: int = _key(1, "segment pipelines at once, each with its own models and codecs; 0: auto", 0, 64)
    worker_kind: WorkerKind = _key("processes", "several workers run as spawned processes, or as threads")
    planes: bool = _key(True, "keep YUV frames as decoded (untouched outside faces); false: RGB via swscale")


@dataclass(frozen=True)
class ClusterConfig:
    """Ray (--ray): the segments run on a cluster's actors; input and output on storage they all reach."""

    address: str | None = _key(None, "Ray address to join; null starts a local Ray (used with --ray)")
    actors: int = _key(0, "actors (each holds the models once); 0: as many as the cluster's GPUs, else CPUs", 0, 4096)
    gpus_per_actor: float = _key(
        -1.0, "GPUs each actor reserves (fractional shares a GPU); -1: 1 where the cluster has GPUs, else 0", -1, 64
    )
    cpus_per_actor: float = _key(1.0, "CPUs each actor reserves", 0, 1024)
    retries: int = _key(2, "times a failed segment is tried again (a lost worker included)", 0, 100)


@dataclass(frozen=True)
class Config:
    """Everything a run needs; each stage receives only its own section."""

    device: str = _key("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: Precision = _key(
        "auto",
        "auto: bf16 on CUDA where safe; on a CPU bf16 for the networks OpenVINO runs where the CPU does bf16 "
        "natively (AMX or AVX-512 BF16), fp32 elsewhere; bf16 on a CPU without it is refused, never emulated",
    )
    weights_dir: str | None = _key(None, "model cache folder (default: VIDRESTORE_WEIGHTS or the user cache)")
    engine: EngineName = _key(
        "auto",
        "how the networks run: eager (torch), compile (torch.compile), onnxruntime, openvino, tensorrt; "
        "auto: per network by measurement (OpenVINO bf16 on CPUs with native bf16, else onnxruntime for the "
        "restorer), eager on GPUs",
    )
    openvino_device: str = _key(
        "CPU", "where engine openvino compiles: CPU, or an Intel GPU or NPU (GPU, NPU) where its driver is present"
    )
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    restorer: RestorerConfig = field(default_factory=RestorerConfig)
    upscaler: UpscalerConfig = field(default_factory=UpscalerConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
