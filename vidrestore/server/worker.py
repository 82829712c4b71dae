"""The server's worker threads: the models loaded once (cached by what they are), image requests and
video jobs from one bounded queue, progress and cancellation."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidrestore.config import Config, config_to_dict
from vidrestore.device import resolve_placement
from vidrestore.errors import ModelError, VidrestoreError
from vidrestore.io.probe import frame_count, main_video_stream, open_input, video_rate
from vidrestore.models.store import ModelStore
from vidrestore.models.usage import models_for
from vidrestore.run.file import build_stages, restore_file
from vidrestore.server.errors import error_kind, error_text
from vidrestore.server.jobs import Job, JobStore, request_config
from vidrestore.stages.assemble import Loaded
from vidrestore.stats import RunStats

__all__ = ["Runner"]

log = logging.getLogger(__name__)


@dataclass
class _Cache:
    """One worker's: the last few sets of stages by configuration, and its loaded networks by what
    they are (which outlive the stages built around them)."""

    stages: OrderedDict[str, tuple[Any, RunStats]] = field(default_factory=OrderedDict)
    loaded: Loaded = field(default_factory=dict)


@dataclass
class _ImageTask:
    src: Path
    dst: Path
    config: Config
    done: Future[None] = field(default_factory=Future)


class Runner:
    """``workers`` device workers over one bounded queue of video jobs and image tasks. Each worker
    loads the models of the configuration it is asked for once (the server's default at start) and
    keeps the last few sets."""

    def __init__(
        self,
        store: JobStore,
        config: Config,
        models: ModelStore,
        *,
        workers: int = 1,
        queue_size: int = 8,
        build: Callable[[Config, ModelStore, RunStats], Any] | None = None,
        allow_downloads: bool = False,
    ) -> None:
        """``allow_downloads``: a request may name a model the server does not have, and it is
        fetched; without it, only the server's own models are ever downloaded (at start)."""

        self.jobs = store
        self.config = config
        self.models = models
        self.build = build or build_stages
        self._reuse = build is None  # our own builder takes the worker's loaded networks
        self.allow_downloads = allow_downloads
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.cancels: dict[str, threading.Event] = {}
        self.running: dict[str, RunStats] = {}
        self.ready = threading.Event()
        self.busy = 0
        self.device = "?"
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"vidrestore-serve-{k}", daemon=True) for k in range(workers)
        ]
        self.load_error: BaseException | None = None
        self._backlog: deque[str] = deque()  # jobs put back after a restart: beyond the queue, never waited on
        self._lock = threading.Lock()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, deadline: float = 20.0) -> None:
        """Stop: running work is told to stop (a job goes back to the queue for the next start), and
        the workers are waited for at most ``deadline`` seconds in all (they are daemon threads, so a
        stuck one cannot keep the process alive)."""
        self._stop.set()
        for event in list(self.cancels.values()):
            event.set()
        end = time.monotonic() + deadline
        for t in self._threads:
            t.join(timeout=max(0.0, end - time.monotonic()))

    @property
    def depth(self) -> int:
        return self.queue.qsize() + len(self._backlog)

    def requeue_unfinished(self) -> int:
        """After a restart: jobs that were queued or running go back, in order, ahead of new work
        (a running one starts over). Never waits: they wait beside the queue, not in it."""
        again = self.jobs.with_state("queued", "running")
        for job in again:
            self.jobs.update(job.id, state="queued", started=None, frames_done=0)
            self.cancels[job.id] = threading.Event()
            self._backlog.append(job.id)
        return len(again)

    def _refuse_if_failed(self) -> None:
        if self.load_error is not None:
            raise ModelError("the models could not be loaded, so this server cannot work; see its log")

    def submit_job(self, job: Job) -> None:
        """Queue a video job (raises queue.Full: the caller answers 429; ModelError when the models
        failed to load: 503 at once, instead of a job that would wait forever)."""
        self._refuse_if_failed()
        self.cancels[job.id] = threading.Event()
        self.jobs.add(job)
        try:
            self.queue.put_nowait(job.id)
        except queue.Full:
            self.jobs.delete(job.id)
            self.cancels.pop(job.id, None)
            raise

    def submit_image(self, src: Path, dst: Path, config: Config) -> Future[None]:
        self._refuse_if_failed()
        task = _ImageTask(src, dst, config)
        self.queue.put_nowait(task)  # queue.Full: 429
        return task.done

    def cancel(self, job_id: str) -> None:
        event = self.cancels.get(job_id)
        if event is not None:
            event.set()
        job = self.jobs.get(job_id)
        if job is not None and job.state == "queued":
            self.jobs.update(job_id, state="canceled", finished=time.time())

    # -- the workers ---------------------------------------------------------------

    def _stages(self, cache: _Cache, config: Config) -> tuple[Any, RunStats]:
        """The stages for ``config``: the last few built are kept whole, and their networks are kept by
        what they are, so a request that changes only a knob (``blend``, ``fidelity``) builds its
        stages again around the loaded networks instead of loading them again."""
        key = json.dumps(config_to_dict(config), sort_keys=True)
        kept = cache.stages
        if key not in kept:
            stats = RunStats()
            store = self._store_for(config)
            if self._reuse:
                built = build_stages(config, store, stats, cache.loaded)
            else:
                built = self.build(config, store, stats)
            kept[key] = (built, stats)
            while len(kept) > 3:
                kept.popitem(last=False)
        kept.move_to_end(key)
        return kept[key]

    def _store_for(self, config: Config) -> ModelStore:
        """The model store a request's configuration loads from: one that never downloads, when the
        request names a model the server's own configuration does not use (and downloads are not allowed)."""
        extra = set(models_for(config)) - set(models_for(self.config))
        if not extra or self.allow_downloads or not self.models.fetch_missing:
            return self.models
        return ModelStore(self.models.root, self.models.registry, fetch_missing=False)

    def _work(self) -> None:
        cache = _Cache()
        try:
            self._stages(cache, self.config)  # the default models, loaded before "ready"

            self.device = str(resolve_placement(self.config.device, self.config.precision).device)
        except BaseException as exc:
            self.load_error = exc
            log.error("the models cannot be loaded: %s", error_text(exc))
            self._fail_waiting()
            return
        finally:
            self.ready.set()
        while not self._stop.is_set():
            item = self._next()
            if item is None:
                continue
            self.busy += 1
            try:
                if isinstance(item, _ImageTask):
                    self._image(cache, item)
                else:
                    self._video(cache, item)
            finally:
                self.busy -= 1

    def _next(self) -> Any:
        """The next piece of work: jobs put back after a restart first, then the queue (None when
        there was none for a moment: the caller looks at the stop flag again)."""
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
        try:
            return self.queue.get(timeout=0.5)
        except queue.Empty:
            return None

    def _fail_waiting(self) -> None:
        """The models failed: whatever waits would wait forever, so it fails now, with the reason."""
        assert self.load_error is not None
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _ImageTask):
                item.done.set_exception(self.load_error)
        kind, text = error_kind(self.load_error), error_text(self.load_error)
        for job in self.jobs.with_state("queued"):  # the backlog's jobs are queued ones too
            self.jobs.update(job.id, state="failed", finished=time.time(), error_kind=kind, error_message=text)
        self._backlog.clear()

    def _image(self, cache: _Cache, task: _ImageTask) -> None:

        try:
            stages, stats = self._stages(cache, task.config)
            restore_file(task.src, task.dst, task.config, stages, stats)
            stats.take()
            task.done.set_result(None)
        except BaseException as exc:  # handed to the waiting request, which answers with it
            task.done.set_exception(exc)

    def _video(self, cache: _Cache, job_id: str) -> None:

        job = self.jobs.get(job_id)
        cancel = self.cancels.get(job_id)
        if job is None or cancel is None or job.state != "queued":
            return  # deleted or canceled while it waited
        if cancel.is_set():
            self.jobs.update(job_id, state="canceled", finished=time.time())
            return
        self.jobs.update(job_id, state="running", started=time.time(), frames_total=_frames_in(Path(job.input)))
        stats: RunStats | None = None
        try:
            config = request_config(self.config, job.params)
            stages, stats = self._stages(cache, config)
            self.running[job_id] = stats
            restore_file(Path(job.input), Path(job.output), config, stages, stats, cancel=cancel)
            self.jobs.update(job_id, state="succeeded", finished=time.time(), frames_done=stats.frames)
        except KeyboardInterrupt:
            state = "canceled" if cancel.is_set() and not self._stop.is_set() else "queued"
            self.jobs.update(job_id, state=state, finished=time.time() if state == "canceled" else None)
        except BaseException as exc:
            self.jobs.update(
                job_id, state="failed", finished=time.time(), error_kind=error_kind(exc), error_message=error_text(exc)
            )
        finally:
            self.running.pop(job_id, None)
            after = self.jobs.get(job_id)
            if after is None or after.state != "queued":
                self.cancels.pop(job_id, None)  # finished: nothing left to cancel (a put-back job keeps it)
            if stats is not None:
                stats.take()

    def progress(self, job: Job) -> Job:
        """``job`` with the frames done so far if it is running."""
        stats = self.running.get(job.id)
        if stats is not None and job.state == "running":
            job.frames_done = stats.frames
        return job


def _frames_in(path: Path) -> int:
    """The video's frame count as its header states it (or its duration times its rate)."""

    try:
        with open_input(path) as c:
            v = main_video_stream(c.streams.video)
            if v is None:
                return 0
            seconds = float(v.duration * v.time_base) if v.duration and v.time_base else (c.duration or 0) / 1e6
            return frame_count(v.frames, seconds, video_rate(v))
    except VidrestoreError:
        return 0
