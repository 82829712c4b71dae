"""One typed configuration for a run.

Convention: every key lives in a frozen dataclass below, with its default and a
``help`` line in the field's metadata; ``configs/default.yaml`` mirrors them (a test
keeps the two equal). Precedence, lowest first: the defaults, a ``--config`` file,
then ``--set KEY=VALUE`` overrides and CLI flags. Values from files and ``--set`` are
parsed with ``yaml.safe_load`` only. Any unknown key, wrong type or out-of-range
value raises :class:`ConfigError` naming the dotted key and where it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from vidrestore.errors import ConfigError

__all__ = [
    "ClusterConfig",
    "Config",
    "DetectorConfig",
    "InputConfig",
    "OutputConfig",
    "PipelineConfig",
    "RestorerConfig",
    "SmoothingConfig",
    "TemporalConfig",
    "UpscalerConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
]

DetectorName = Literal["retinaface_resnet50", "retinaface_mobile0.25", "centerface", "none"]
RestorerName = Literal["gfpgan-1.4", "gfpgan-1.3", "gfpgan-1.2", "restoreformer", "codeformer", "none"]
UpscalerName = Literal["realesr-general-x4v3", "realesrgan-x4plus", "realesrgan-x2plus", "none"]
WorkerKind = Literal["processes", "threads"]
Decoder = Literal["auto", "software", "nvdec"]
VideoCodec = Literal["auto", "libx264", "libx265", "libsvtav1", "libvpx-vp9", "h264_nvenc", "hevc_nvenc"]
EncoderPreset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
SmoothingMethod = Literal["centered", "none"]
TemporalMethod = Literal["none", "flow-blend"]
Overlap = Literal["auto", "on", "off"]
DetectorPrecision = Literal["auto", "fp32"]
EngineName = Literal["auto", "eager", "compile", "onnxruntime", "tensorrt"]


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


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


@dataclass(frozen=True)
class InputConfig:
    """How inputs are read."""

    strict: bool = _key(
        False, "stop with exit 4 at the first damage in an input (default: read on past it and report it)"
    )
    decoder: Decoder = _key("auto", "software, or nvdec (NVIDIA's decoder, else software); auto: nvdec on CUDA")


@dataclass(frozen=True)
class PipelineConfig:
    """Threads and queues."""

    queue_size: int = _key(16, "frames held in each queue between stages", 1, 1024)
    decode_threads: int = _key(0, "decoder threads; 0 lets FFmpeg choose", 0, 64)
    encode_threads: int = _key(0, "encoder threads; 0 lets FFmpeg choose", 0, 64)
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
    precision: Precision = _key("auto", "auto picks bf16/fp16 on CUDA where safe, fp32 elsewhere")
    weights_dir: str | None = _key(None, "model cache folder (default: VIDRESTORE_WEIGHTS or the user cache)")
    engine: EngineName = _key(
        "auto",
        "how the networks run: eager (torch), compile (torch.compile), onnxruntime, tensorrt; "
        "auto: onnxruntime on CPUs where installed, eager on GPUs",
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


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts (for YAML/JSON dumps and reports)."""
    return dataclasses.asdict(config)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(value, inner, key, source)
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            value = "on" if value else "off"  # YAML 1.1 reads on/off as booleans
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: {key} = {value!r} is not valid; choose {_type_name(tp)[7:]}{hint}")
        return value
    if tp is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")
    if tp is float and not math.isfinite(value):  # NaN passes every range check: refuse it here
        raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
    return float(value) if tp is float else value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _merge(base: Any, data: Mapping[str, Any], source: str, prefix: str = "") -> Any:
    """A copy of dataclass ``base`` with ``data`` applied, checked key by key."""
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"{source}: {where} must be a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(base)}
    hints = _hints(type(base))
    changes: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        current = getattr(base, name)
        if dataclasses.is_dataclass(current):
            changes[name] = _merge(current, value, source, key + ".")
            continue
        checked = _coerce(value, hints[name], key, source)
        meta = fields[name].metadata
        lo, hi = meta.get("lo"), meta.get("hi")
        if checked is not None and not isinstance(checked, (str, bool)):
            if (lo is not None and checked < lo) or (hi is not None and checked > hi):
                raise ConfigError(f"{source}: {key} = {checked!r} is out of range [{lo}, {hi}]")
        changes[name] = checked
    return dataclasses.replace(base, **changes)


def _check(config: Config, source: str) -> Config:
    """Rules that span keys or need more than a type and range."""
    if config.smoothing.window % 2 == 0:
        raise ConfigError(f"{source}: smoothing.window must be odd, got {config.smoothing.window}")
    if config.output.scale not in (1, 2, 4):
        raise ConfigError(f"{source}: output.scale must be 1, 2 or 4, got {config.output.scale}")
    if config.output.scale > 1 and config.upscaler.model == "none":
        raise ConfigError(f"{source}: output.scale > 1 needs an upscaler.model")
    dev = config.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"{source}: device = {dev!r} is not valid; use auto, cpu, cuda, cuda:N or mps")
    return config


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set: {dotted} goes through a value that is not a section")
    node[parts[-1]] = value


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict, values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set: cannot parse the value of {key}: {raw!r}") from exc
        _set_dotted(tree, key, value)
    return tree


def apply_overrides(config: Config, overrides: Mapping[str, Any], source: str) -> Config:
    """Apply a nested mapping of overrides, checked, to ``config``."""
    return _check(_merge(config, overrides, source), source)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (empty file -> empty mapping)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file must hold a mapping of keys")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
    preset: str | Path | None = None,
) -> Config:
    """Defaults < ``preset`` (YAML) < ``path`` (YAML) < ``overrides`` (``KEY=VALUE`` strings) < ``extra`` (flags)."""
    config = Config()
    if preset is not None:
        config = apply_overrides(config, read_config_file(preset), f"preset {Path(preset).stem}")
    if path is not None:
        config = apply_overrides(config, read_config_file(path), str(path))
    sets = parse_set(overrides)
    if sets:
        config = apply_overrides(config, sets, "--set")
    if extra:
        config = apply_overrides(config, extra, "command line")
    return _check(config, str(path) if path else "defaults")


def iter_keys(config: Any = None, prefix: str = "") -> Iterable[tuple[str, Any, str]]:
    """Every leaf key as ``(dotted_key, value, help)``."""
    config = Config() if config is None else config
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from iter_keys(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, f.metadata.get("help", "")
