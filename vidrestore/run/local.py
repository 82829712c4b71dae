"""The tasks on this machine: ``pipeline.workers`` workers, each with its own face stages."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from vidrestore.config import Config
from vidrestore.control import Stopped
from vidrestore.run.tasks import Done, Task, run_task
from vidrestore.stats import RunStats

__all__ = ["run_local"]


def run_local(
    tasks: list[Task],
    config: Config,
    make_stages: Callable[[RunStats], Callable[..., Any]],
    done: Done,
    progress: Callable[[int], None] | None,
    first_stages: tuple[Callable[..., Any], RunStats] | None = None,
    file_progress: bool = False,
) -> None:
    """Run the tasks on ``pipeline.workers`` workers (threads; each builds its own stages, except
    the first, which may be given). With one worker, everything runs on this thread."""
    workers = max(1, min(config.pipeline.workers, len(tasks)))
    pending: queue.Queue[Task] = queue.Queue()
    for task in tasks:
        pending.put(task)
    abort = threading.Event()
    errors: list[BaseException] = []

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
            errors.append(exc)
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
    first = next((e for e in errors if not isinstance(e, Stopped)), None)  # Stopped: a worker told to stop
    if first is not None:
        raise first
