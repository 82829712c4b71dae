"""``--ray``: the queue of tasks (segments and whole files) on a Ray cluster's actors.

Each actor loads the models once, on the GPU share it reserves (``cluster.gpus_per_actor``,
fractional allowed; CPU actors where the cluster has no GPU), and runs one task at a time. Frames
never travel through Ray's object store: a task is a descriptor (paths and frame numbers), and
what comes back is its result's metadata (file name, checksum, counts). Every actor reads the
input and writes its segment file itself, so **the input and the output's folder must be on
storage every node reaches at the same path** (a shared file system). A segment file is written
under a temporary name and renamed when whole, so a task that is tried again never leaves half a
file. A lost actor is restarted and its task retried (``cluster.retries``); so is a task that
fails. The driver plans the segments, keeps the manifest, shows one progress bar and joins.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidrestore.config import Config, config_to_dict
from vidrestore.errors import ConfigError, PipelineError
from vidrestore.models.store import ModelStore
from vidrestore.run.tasks import Done, SegmentActor, Task

__all__ = ["RAY_INSTALL", "import_ray", "run_ray"]

log = logging.getLogger(__name__)

RAY_INSTALL = "pip install 'vidrestore[ray]'"


def import_ray() -> Any:
    """Ray, or ConfigError (exit 2) with the install command."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--ray needs the ray extra: {RAY_INSTALL}") from exc
    return ray


@dataclass
class _Actor:
    handle: Any
    busy: Any = None  # the object ref of the task it runs


def _gpus_per_actor(config: Config, resources: dict[str, float]) -> float:
    g = config.cluster.gpus_per_actor
    if g >= 0:
        return g
    return 1.0 if resources.get("GPU", 0) >= 1 else 0.0


def _actor_count(config: Config, resources: dict[str, float], gpus: float, tasks: int) -> int:
    c = config.cluster
    if c.actors > 0:
        n = c.actors
    elif gpus > 0:
        n = int(resources.get("GPU", 0) // gpus)
    else:
        n = int(resources.get("CPU", 1) // max(c.cpus_per_actor, 1e-9))
    return max(1, min(n, tasks))


def run_ray(
    tasks: list[Task], config: Config, store: ModelStore, done: Done, progress: Callable[[int], None] | None
) -> None:
    """Run ``tasks`` on a Ray cluster: ``cluster.address``, the one this process already joined
    (``ray.init`` before), or a local one started here."""
    if not tasks:
        return
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=config.cluster.address or None, logging_level=logging.WARNING, log_to_driver=False)
        started = True
    try:
        _run(ray, tasks, config, store, done, progress)
    finally:
        if started:
            ray.shutdown()


def _run(
    ray: Any, tasks: list[Task], config: Config, store: ModelStore, done: Done, progress: Callable[[int], None] | None
) -> None:
    resources = ray.cluster_resources()
    gpus = _gpus_per_actor(config, resources)
    n = _actor_count(config, resources, gpus, len(tasks))
    retries = config.cluster.retries
    remote = ray.remote(SegmentActor).options(
        num_gpus=gpus,
        num_cpus=config.cluster.cpus_per_actor,
        max_restarts=0,  # a lost actor is replaced and its task tried again here, where it is counted
        max_task_retries=0,
    )
    settings = (config_to_dict(config), str(store.root), not store.fetch_missing)
    log.info("ray: %d actor(s), %g GPU and %g CPU each", n, gpus, config.cluster.cpus_per_actor)
    actors = [_Actor(remote.remote(*settings)) for _ in range(n)]
    queue: deque[Task] = deque(tasks)
    attempts: dict[int, int] = {}
    running: dict[Any, tuple[_Actor, Task]] = {}
    try:
        while queue or running:
            for actor in actors:
                if actor.busy is None and queue:
                    task = queue.popleft()
                    attempts[id(task)] = attempts.get(id(task), 0) + 1
                    actor.busy = actor.handle.run.remote(task.spec().to_dict())
                    running[actor.busy] = (actor, task)
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                actor, task = running.pop(ref)
                actor.busy = None
                try:
                    result, stats = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    tries = attempts[id(task)]
                    if tries > retries:
                        raise PipelineError(
                            "ray", task.segment.first_frame if task.segment else None, _why(exc)
                        ) from exc
                    log.warning("%s failed (%s); trying again (%d of %d)", _name(task), _why(exc), tries, retries)
                    if isinstance(exc, ray.exceptions.RayActorError):  # lost: a fresh one takes its place
                        ray.kill(actor.handle, no_restart=True)
                        actor.handle = remote.remote(*settings)
                    queue.appendleft(task)
                    continue
                done(task, result, stats, attempts[id(task)])
                if progress is not None and result is not None:
                    progress(result.frames)
    finally:
        for actor in actors:
            ray.kill(actor.handle)


def _name(task: Task) -> str:
    seg = task.segment
    return f"{task.work.src}" + (f" segment {seg.index}" if seg is not None else "")


def _why(exc: BaseException) -> str:
    """The first line of a remote error, without Ray's traceback."""
    cause = getattr(exc, "cause", None)
    text = str(cause) if cause is not None else str(exc)
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
