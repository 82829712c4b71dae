"""The face stages, wired from a config: detect -> track + smooth -> (upscale) restore + paste.

:func:`build_face_stages` loads every model once and returns a :class:`FaceStages`, which turns an
iterator of decoded frames into an iterator of restored frames, in order, for one video at a
time (tracking state is fresh for each call).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from vidrestore.config import Config
from vidrestore.control import in_background
from vidrestore.device import Placement, Transfers, resolve_placement
from vidrestore.errors import ConfigError, ModelError
from vidrestore.models.compat import import_codeformer
from vidrestore.models.engine import (
    Engine,
    EngineMaker,
    NetShape,
    choose_engine,
    describe_engine,
    engine_precision,
    make_engine,
    net_precision,
)
from vidrestore.models.loading import load_model
from vidrestore.models.registry import Arch
from vidrestore.models.store import ModelStore, known_sha256
from vidrestore.records import Frame
from vidrestore.stages.detect import CenterFaceDetector, Detector, RetinaFaceDetector
from vidrestore.stages.framewise import detect_frames
from vidrestore.stages.fuse import TemporalFusion
from vidrestore.stages.networks import FaceParser, Upscaler, build_restorer
from vidrestore.stages.restore import RestoreStage
from vidrestore.stages.track import TrackSmoother
from vidrestore.stages.upscale import scale_face, upscale_image
from vidrestore.stats import RunStats

if TYPE_CHECKING:
    from vidrestore.stages.restore import RestoreStage

__all__ = ["FaceStages", "Loaded", "build_detector", "build_face_stages", "engine_maker"]

log = logging.getLogger(__name__)


Loaded = dict[tuple[str, ...], Any]
"""Networks already loaded, by what they are (architecture, file, its size and time, device, dtype):
stages built again for other knobs (a request's ``blend``) reuse them instead of loading again."""

_KEEP_LOADED = 12  # networks and engines a Loaded cache holds at most (the oldest go first)


def _kept(loaded: Loaded | None, key: tuple[str, ...], build: Callable[[], Any]) -> Any:
    """What ``loaded`` keeps under ``key``, built (and kept, the oldest going past
    ``_KEEP_LOADED``) when it is not there yet; built anew each time without ``loaded``."""
    if loaded is None:
        return build()
    if key not in loaded:
        loaded[key] = build()
        while len(loaded) > _KEEP_LOADED:
            loaded.pop(next(iter(loaded)))
    return loaded[key]


def _file_ident(path: Path) -> tuple[str, str, str]:
    """A file as a cache key: where it is, its size and its modification time."""
    st = path.stat()
    return str(path.resolve()), str(st.st_size), str(st.st_mtime_ns)


def _load_path(  # type: ignore[no-untyped-def]
    store: ModelStore, name: str, local: str | None, key: str, placement: Placement, loaded: Loaded | None
):
    """The loaded network ``name`` (or the user's file ``local``) and the file it came from."""
    path = store.resolve(name, local, key=key)
    arch = store.spec(name).arch

    def load() -> nn.Module:
        model = load_model(arch, path, placement.device)
        model._vidrestore_source = (arch, path)  # type: ignore[assignment]  # what _restore_weights reads
        return model

    ident = (arch, *_file_ident(path), str(placement.device), str(placement.dtype))
    return _kept(loaded, ident, load), path


def _sources(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if hasattr(m, "_vidrestore_source")]


def _release_weights(module: nn.Module) -> None:
    """Free the torch copy of the weights of the networks in ``module`` once an engine on the CPU
    holds its own (ONNX Runtime's session, OpenVINO's compiled model): nothing else reads them there
    (the fp32 retry that would is for half precision, on GPUs). Each parameter keeps its dtype with
    no elements; :func:`_restore_weights` reads them from the file again if an engine is ever built
    from the module anew."""
    for model in _sources(module):
        for p in model.parameters():
            p.data = torch.empty(0, dtype=p.dtype, device=p.device)
        model._vidrestore_released = True  # type: ignore[assignment]


def _restore_weights(module: nn.Module, device: torch.device) -> None:
    for model in _sources(module):
        if getattr(model, "_vidrestore_released", False):
            arch, path = cast("tuple[Arch, Path]", model._vidrestore_source)
            fresh = dict(load_model(arch, path, device).named_parameters())
            for name, p in model.named_parameters():
                p.data = fresh[name].data.to(p.dtype)
            model._vidrestore_released = False  # type: ignore[assignment]


def engines_folder(store: ModelStore) -> Path:
    """Where exported networks are kept: ``VIDRESTORE_ENGINES``, else the weights folder's
    ``engines/``. Each file there is keyed by its weights' sha256 and verified on load, so one
    folder serves any number of weights folders and processes."""
    named = os.environ.get("VIDRESTORE_ENGINES")
    return Path(named) if named else store.root / "engines"


def engine_maker(
    config: Config,
    chosen: str | None,
    path: Path,
    store: ModelStore,
    placement: Placement,
    stats: RunStats | None,
    loaded: Loaded | None = None,
) -> EngineMaker:
    """What builds the engines for the networks loaded from ``path``: the role's engine (``chosen``)
    or the top-level one, ``auto`` resolved for the device; each engine that runs is recorded. With
    ``loaded``, an exported network's engine (its session, its weights) is kept there too, so stages
    built again for another knob (a server request's ``blend``) reuse it."""
    asked = chosen or config.engine
    folder = engines_folder(store)

    def make(role: str, module: nn.Module, shape: NetShape) -> Engine:
        wanted = net_precision(config, role)
        kind = choose_engine(asked, placement.device, role, wanted)
        precision = engine_precision(wanted, kind, placement.device, role)

        def build() -> Engine:
            _restore_weights(module, placement.device)  # a module whose weights an earlier engine freed
            sha = known_sha256(path) if kind in ("onnxruntime", "tensorrt", "openvino") else ""
            try:
                return make_engine(
                    kind, role, module, shape, placement, folder, sha, config.pipeline.model_threads,
                    precision=precision, openvino_device=config.openvino_device,
                )  # fmt: skip
            except ModelError as exc:
                if asked != "auto":
                    raise  # the user asked for this engine: say why it cannot run
                log.warning("%s (engine auto: it runs eagerly instead)", str(exc).splitlines()[0])
                return make_engine("eager", role, module, shape, placement, folder, sha)

        if kind == "eager":  # a wrapper of the module itself: nothing worth keeping
            engine = build()
        else:
            ident = ("engine", kind, precision, role, *_file_ident(path), str(placement))
            engine = _kept(loaded, ident, build)
            if engine.name in ("onnxruntime", "openvino") and placement.device.type == "cpu":
                _release_weights(module)
        if stats is not None:
            stats.engines[role] = describe_engine(engine, placement)
        return engine

    return make


def _temporal(config: Config) -> TemporalFusion:
    """Fusion as configured; with method none it only measures the flicker (strength 0)."""
    t = config.temporal
    strength = t.strength if t.method == "flow-blend" else 0.0
    return TemporalFusion(strength=strength, occlusion=t.occlusion, change=t.change, threads=t.flow_threads)


def _licence_notice(store: ModelStore, name: str, licence: str) -> None:
    """Say a model's restrictive licence once, at its first use with this weights folder."""
    marker = store.root / f".{name}.licence-noted"
    if marker.exists():
        return
    log.warning("%s is under the %s; check that your use is allowed (said once)", name, licence)
    try:
        store.root.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError as exc:  # a read-only cache: say it again next time rather than fail
        log.debug("cannot record that the %s licence was shown: %s", name, exc)


def build_detector(
    config: Config,
    store: ModelStore,
    placement: Placement,
    loaded: Loaded | None = None,
    stats: RunStats | None = None,
) -> Detector:
    d = config.detector
    if d.model == "centerface":
        if stats is not None:
            stats.engines["detector"] = "opencv fp32"  # its ONNX file runs in OpenCV's DNN module, whatever the engine
        return CenterFaceDetector(size=d.size, threshold=d.threshold, min_face=d.min_face)
    model, path = _load_path(store, d.model, d.weights, "detector.weights", placement, loaded)
    dtype = placement.dtype if d.precision == "auto" else torch.float32
    make = engine_maker(config, d.engine, path, store, placement, stats, loaded)
    return RetinaFaceDetector(
        model, placement.device, size=d.size, threshold=d.threshold, min_face=d.min_face, dtype=dtype, make=make
    )


@dataclass
class FaceStages:
    """The loaded stages; call it on an iterator of frames (one video per call)."""

    config: Config
    detector: Detector | None
    restore: RestoreStage | None
    stats: RunStats | None = None
    frame_upscaler: Upscaler | None = None
    overlap: bool = False
    io: Transfers | None = None  # the frame upscaler's picture moves

    def counters(self) -> list[Transfers]:
        """Every stage's Transfers (each counts its own moves, bytes and waits)."""
        counters = [self.io, getattr(self.detector, "io", None), self.restore.io if self.restore else None]
        return [c for c in counters if isinstance(c, Transfers)]

    def transfers(self) -> tuple[int, int]:
        """Pictures moved so far, host to device and back, by every stage."""
        moved = self.counters()
        return sum(c.uploads for c in moved), sum(c.downloads for c in moved)

    def _time(self, stage: str, seconds: float) -> None:
        if self.stats is not None:
            self.stats.add_time(stage, seconds)

    def track(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """Detection and tracking only (what ``inspect`` shows)."""
        if self.detector is None:
            yield from frames
            return
        tracker = TrackSmoother(self.config.smoothing)
        pairs = detect_frames(self.detector, frames, self.config.detector.batch_size, self._time)
        yield from tracker.run(pairs)

    def __call__(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        tracked = self.track(frames)
        background = None
        if self.overlap and self.restore is not None:
            # detection and tracking of the next frames run while this group is restored
            tracked = background = in_background(tracked, self.config.pipeline.queue_size, "vidrestore-detect")
        try:
            if self.frame_upscaler is not None:
                tracked = self._upscale_frames(tracked)
            if self.restore is None:
                for frame in tracked:
                    yield frame if frame.on_device is None else replace(frame, on_device=None)
                return
            stage = self.restore
            for frame in stage.run(tracked):
                self._count(stage, frame)
                yield frame
        finally:
            if background is not None:
                background.close()  # now, not when garbage is collected: the detection thread stops with the run
            if self.restore is not None and self.restore.temporal is not None:
                self.restore.temporal.close()  # the flow threads stop with the run too

    def _upscale_frames(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """``output.scale`` 2 or 4: the whole frame through Real-ESRGAN (tiled), faces scaled with it."""
        assert self.frame_upscaler is not None and self.io is not None
        o, tile = self.config.output, self.config.upscaler.tile
        for frame in frames:
            t0 = time.perf_counter()
            image, factor = upscale_image(self.frame_upscaler, self.io, frame.rgb(), o.scale, tile, frame.color_trc)
            faces = tuple(scale_face(f, factor) for f in frame.faces)
            self._time("upscale frame", time.perf_counter() - t0)
            yield replace(frame, image=image, faces=faces, on_device=None)  # the uploaded picture is the old one

    def _count(self, stage: RestoreStage, frame: Frame) -> None:
        if not frame.faces:
            stage.stats.frames_passed_through += 1


def build_face_stages(
    config: Config, store: ModelStore, stats: RunStats | None = None, loaded: Loaded | None = None
) -> FaceStages:
    """Load the models ``config`` names and wire the face stages (``loaded``: networks loaded before,
    reused by what they are)."""

    r = config.restorer
    spec = store.spec(r.model) if r.model != "none" else None
    if spec is not None and spec.arch == "codeformer":
        import_codeformer()  # exit 2 with the install command before anything is loaded or fetched
    placement = resolve_placement(config.device, config.precision)
    log.info("running the models on %s", placement)
    if config.pipeline.model_threads and placement.device.type == "cpu":
        torch.set_num_threads(config.pipeline.model_threads)  # torch's share; the engines are given it too
    detector = build_detector(config, store, placement, loaded, stats) if config.detector.model != "none" else None
    restore = None
    u = config.upscaler
    shared: Upscaler | None = None
    if u.model != "none" and (config.output.scale > 1 or (u.below > 0 and r.model != "none" and detector)):
        net, path = _load_path(store, u.model, u.weights, "upscaler.weights", placement, loaded)
        shared = Upscaler(net, placement, engine_maker(config, u.engine, path, store, placement, stats, loaded))
    # On a CPU a batch of faces runs slower per face than one at a time (measured: 8.9 s against
    # 6.4 s per 512x512 face for GFPGAN v1.4 at batch 4 and 1 on 2 cores): batches pay on GPUs only.
    batch = r.batch_size or (8 if placement.device.type != "cpu" else 1)
    if r.model != "none" and detector is not None:
        assert spec is not None
        model, path = _load_path(store, r.model, r.weights, "restorer.weights", placement, loaded)
        make = engine_maker(config, r.engine, path, store, placement, stats, loaded)
        restorer = build_restorer(spec.arch, model, placement, fidelity=r.fidelity, make=make)
        if spec.extra is not None:
            _licence_notice(store, spec.name, spec.licence)
        upscaler = shared if u.below > 0 else None
        parser = None
        if r.parsing_mask:
            net, path = _load_path(store, "parsenet", r.parsing_weights, "restorer.parsing_weights", placement, loaded)
            make = engine_maker(config, r.engine, path, store, placement, stats, loaded)
            parser = FaceParser(net, placement, size=r.parsing_size, make=make)
        restore = RestoreStage(
            restorer,
            placement.device,
            upscaler=upscaler,
            upscale_below=u.below,
            margin=u.margin,
            parser=parser,
            blend=r.blend,
            batch_size=batch,
            max_frames=max(2 * batch, 4),
            stats=stats,
            temporal=_temporal(config),
        )
    frame_upscaler = shared if config.output.scale > 1 else None
    if frame_upscaler is not None and frame_upscaler.scale < config.output.scale:
        raise ConfigError(
            f"output.scale = {config.output.scale} needs a x{config.output.scale} upscaler; "
            f"{u.model} is x{frame_upscaler.scale}"
        )
    overlap = config.pipeline.overlap == "on" or (config.pipeline.overlap == "auto" and placement.device.type == "cuda")
    io = Transfers(placement.device) if frame_upscaler is not None else None
    return FaceStages(config, detector, restore, stats, frame_upscaler=frame_upscaler, overlap=overlap, io=io)
