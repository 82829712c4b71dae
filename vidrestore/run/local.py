"""The tasks on this machine: ``pipeline.workers`` workers, each with its own face stages.

Several workers run as spawned processes by default (``pipeline.worker_kind``): each has its own
decoder, face stages and encoder, so decoding and encoding spread over the cores (one x264 encoder
at 1080p needs several), and the GPU, shared, sees the workers' batches interleaved. Only task
descriptors go to a worker and only results and counts come back, as with Ray's actors. Threads
remain for where processes cannot be used (``worker_kind: threads``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import torch

from vidrestore import errors
from vidrestore.config import Config, config_to_dict
from vidrestore.control import Stopped
from vidrestore.device import on_cuda
from vidrestore.errors import VidrestoreError
from vidrestore.models.store import ModelStore
from vidrestore.run.segments.render import SegmentResult
from vidrestore.run.tasks import Done, SegmentActor, Task, run_task
from vidrestore.stats import RunStats

__all__ = ["GPU_BYTES_PER_WORKER", "run_local", "run_processes", "worker_count"]

log = logging.getLogger(__name__)

GPU_BYTES_PER_WORKER = 6 << 30
"""What one worker's models and batches take on a GPU (GFPGAN v1.4 + RetinaFace-R50 + Real-ESRGAN,
batches of 8, bf16), with room to spare: ``workers: 0`` (auto) fits this many into the free memory."""


def worker_count(config: Config, tasks: int) -> tuple[int, str]:
    """How many workers to run (never more than tasks), and a closing line when chosen automatically."""
    n = config.pipeline.workers
    if n > 0:
        return max(1, min(n, tasks)), ""
    cores = os.cpu_count() or 1
    if on_cuda(config.device):
        free, _ = torch.cuda.mem_get_info()
        n = max(1, min(8, int(free // GPU_BYTES_PER_WORKER), cores // 2))
        why = f"{cores} cores, {free / 2**30:.0f} GiB free on the GPU, {GPU_BYTES_PER_WORKER >> 30} GiB each"
    else:
        n, why = 1, "on the CPU one pipeline's networks already use every core"
    n = max(1, min(n, tasks))
    return n, f"workers: {n} (auto: {why})"


def run_local(
    tasks: list[Task],
    config: Config,
    make_stages: Callable[[RunStats], Callable[..., Any]],
    done: Done,
    progress: Callable[[int], None] | None,
    first_stages: tuple[Callable[..., Any], RunStats] | None = None,
    file_progress: bool = False,
    workers: int = 1,
) -> None:
    """Run the tasks on ``workers`` threads (each builds its own stages, except the first, which
    may be given). With one worker, everything runs on this thread."""
    workers = max(1, min(workers, len(tasks)))
    pending: queue.Queue[Task] = queue.Queue()
    for task in tasks:
        pending.put(task)
    abort = threading.Event()
    failures: list[BaseException] = []

    def work(stages: Callable[..., Any] | None, stats: RunStats | None) -> None:
        try:
            if stages is None or stats is None:
                stats = RunStats()
                stages = make_stages(stats)
            while not abort.is_set():
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                plan = job.work.plan
                times = plan.times if plan is not None else None
                result = run_task(
                    job.spec(), config, stages, stats, progress, file_progress and workers == 1, abort, times
                )
                done(job, result, stats.take())
        except BaseException as exc:
            failures.append(exc)
            abort.set()

    given = first_stages if first_stages is not None else (None, None)
    if workers == 1:
        work(*given)
    else:
        threads = [
            threading.Thread(
                target=work, args=given if k == 0 else (None, None), name=f"vidrestore-worker-{k}", daemon=True
            )
            for k in range(workers)
        ]
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.2)
        except KeyboardInterrupt:
            abort.set()
            for thread in threads:
                thread.join()
            raise
    first = next((e for e in failures if not isinstance(e, Stopped)), None)  # Stopped: a worker told to stop
    if first is not None:
        raise first


# -- worker processes ------------------------------------------------------------------------

Failure = tuple[str, str]  # an error's class name (in vidrestore.errors) and its one line
_actor: SegmentActor | None = None
_failed: Failure | None = None


def _start(config: dict[str, Any], weights_dir: str, offline: bool, level: int) -> None:
    """A worker process starts: its log lines go to stderr as the CLI's do, its models load once."""
    global _actor, _failed
    logger = logging.getLogger("vidrestore")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("vidrestore: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    try:
        _actor = SegmentActor(config, weights_dir, offline)
    except Exception as exc:  # kept for the first task to report: a failing initializer is restarted forever
        _failed = _failure(exc)


def _failure(exc: BaseException) -> Failure:
    if isinstance(exc, VidrestoreError):
        return type(exc).__name__, str(exc)
    return "PipelineError", f"stage 'worker': {type(exc).__name__}: {exc}"


def _work(item: tuple[int, dict[str, Any]]) -> tuple[int, SegmentResult | None, RunStats | None, Failure | None]:
    """Task ``k`` in a worker process; an error comes back as data (its class and line), since not
    every error pickles."""
    k, task = item
    if _failed is not None:
        return k, None, None, _failed
    assert _actor is not None
    try:
        result, stats = _actor.run(task)
    except Exception as exc:
        return k, None, None, _failure(exc)
    return k, result, stats, None


def _raise(failure: Failure) -> None:
    name, line = failure
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, VidrestoreError)):
        cls = VidrestoreError
    exc = Exception.__new__(cls)
    Exception.__init__(exc, line)  # the one line as it was, whatever the class's own arguments are
    raise exc


def run_processes(
    tasks: list[Task],
    config: Config,
    store: ModelStore,
    done: Done,
    progress: Callable[[int], None] | None,
    workers: int,
) -> None:
    """Run the tasks on ``workers`` spawned processes; the first error (or Ctrl-C) ends them all."""
    level = logging.getLogger("vidrestore").getEffectiveLevel()
    settings = (config_to_dict(config), str(store.root), not store.fetch_missing, level)
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_start, initargs=settings)
    try:
        results = pool.imap_unordered(_work, [(k, t.spec().to_dict()) for k, t in enumerate(tasks)])
        for k, result, stats, failure in results:
            if failure is not None:
                _raise(failure)
            assert stats is not None
            done(tasks[k], result, stats)
            if progress is not None and result is not None:
                progress(result.frames)
    except BaseException:
        pool.terminate()  # the others stop now, not when their segments end
        pool.join()
        raise
    pool.close()
    pool.join()
