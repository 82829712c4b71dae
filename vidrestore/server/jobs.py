"""The server's work: a bounded queue run by device workers, and video jobs kept in SQLite.

Images are restored while their request waits (they are quick); videos are jobs. Every job row
lives in ``jobs.sqlite3`` in the data folder with its state, progress and error; its input and
result are files named by the job's id, never by a client's file name. On a restart, finished jobs
are kept, and jobs that were queued or running are **put back in the queue** (a running one starts
over: its partial output was never in place). Results expire after ``expire_seconds``: the job
row, its input and its result go together; so does everything when a job is deleted.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidrestore.config import Config, apply_overrides, config_to_dict
from vidrestore.errors import ConfigError, VidrestoreError
from vidrestore.models.store import ModelStore
from vidrestore.stats import RunStats

__all__ = ["ERROR_KINDS", "Job", "JobStore", "Runner", "error_kind", "request_config"]

log = logging.getLogger(__name__)

STATES = ("queued", "running", "succeeded", "failed", "canceled")
DONE = ("succeeded", "failed", "canceled")
ERROR_KINDS = {
    "ConfigError": "config",
    "ModelError": "model",
    "InputError": "input",
    "FetchRefused": "input",
    "OutputError": "output",
    "PipelineError": "pipeline",
}
"""The CLI's error classes (and exit codes) as the kinds a client sees."""


def error_kind(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if cls.__name__ in ERROR_KINDS:
            return ERROR_KINDS[cls.__name__]
    return "internal"


def error_text(exc: BaseException) -> str:
    """What the CLI would say (one line), never a traceback."""
    if isinstance(exc, VidrestoreError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"unexpected error: {type(exc).__name__}"


PARAMS = {  # request parameter -> config key (the CLI's keys)
    "blend": "restorer.blend",
    "upscale_below": "upscaler.below",
    "restorer": "restorer.model",
    "fidelity": "restorer.fidelity",
    "scale": "output.scale",
}


def request_config(base: Config, params: dict[str, Any]) -> Config:
    """``base`` with a request's parameters (unknown ones refused, values checked as the CLI does)."""
    tree: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        key = PARAMS.get(name)
        if key is None:
            raise ConfigError(f"unknown parameter {name!r}; use {', '.join(sorted(PARAMS))}")
        section, leaf = key.split(".")
        tree.setdefault(section, {})[leaf] = value
    return apply_overrides(base, tree, "request")


@dataclass
class Job:
    id: str
    state: str
    created: float
    input: str
    output: str
    params: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    frames_done: int = 0
    frames_total: int = 0
    error_kind: str | None = None
    error_message: str | None = None

    def public(self) -> dict[str, Any]:
        """What ``GET /v1/jobs/{id}`` answers."""
        elapsed = (self.finished or time.time()) - self.started if self.started else 0.0
        fps = self.frames_done / elapsed if elapsed > 0 else 0.0
        left = max(self.frames_total - self.frames_done, 0)
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "frames_done": self.frames_done,
            "frames_total": self.frames_total,
            "fps": round(fps, 2),
            "eta_seconds": round(left / fps, 1) if fps > 0 and self.state == "running" else None,
            "created": self.created,
            "params": self.params,
        }
        if self.error_message is not None:
            out["error"] = {"kind": self.error_kind, "message": self.error_message}
        if self.state == "succeeded":
            out["result_url"] = f"/v1/jobs/{self.id}/result"
        return out


class JobStore:
    """Jobs in one SQLite file; safe from several threads."""

    COLUMNS = (
        "id", "state", "created", "input", "output", "params", "started", "finished",
        "frames_done", "frames_total", "error_kind", "error_message",
    )  # fmt: skip

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, state TEXT, created REAL, input TEXT,"
            " output TEXT, params TEXT, started REAL, finished REAL, frames_done INTEGER, frames_total INTEGER,"
            " error_kind TEXT, error_message TEXT)"
        )

    def add(self, job: Job) -> None:
        values = [getattr(job, c) if c != "params" else json.dumps(job.params) for c in self.COLUMNS]
        with self._lock:
            self._db.execute(f"INSERT INTO jobs VALUES ({','.join('?' * len(values))})", values)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def _job(self, row: tuple[Any, ...]) -> Job:
        d = dict(zip(self.COLUMNS, row, strict=True))
        d["params"] = json.loads(d["params"] or "{}")
        return Job(**d)

    def update(self, job_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields if k in self.COLUMNS)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*fields.values(), job_id])

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def with_state(self, *states: str) -> list[Job]:
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created", states).fetchall()
        return [self._job(r) for r in rows]

    def finished_before(self, when: float) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE finished IS NOT NULL AND finished < ?", (when,)
            ).fetchall()
        return [self._job(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


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
    ) -> None:
        from vidrestore.pipeline import build_stages

        self.jobs = store
        self.config = config
        self.models = models
        self.build = build or build_stages
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.cancels: dict[str, threading.Event] = {}
        self.running: dict[str, RunStats] = {}
        self.ready = threading.Event()
        self.busy = 0
        self.device = "?"
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"vidrestore-serve-{k}") for k in range(workers)]
        self.load_error: BaseException | None = None

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for event in self.cancels.values():
            event.set()
        for _ in self._threads:
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout=30)

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def requeue_unfinished(self) -> int:
        """After a restart: jobs that were queued or running go back in the queue (in order)."""
        again = self.jobs.with_state("queued", "running")
        for job in again:
            self.jobs.update(job.id, state="queued", started=None, frames_done=0)
            self.cancels[job.id] = threading.Event()
            self.queue.put(job.id)  # may wait: the queue is as large as it was when they were accepted
        return len(again)

    def submit_job(self, job: Job) -> None:
        """Queue a video job (raises queue.Full: the caller answers 429)."""
        self.cancels[job.id] = threading.Event()
        self.jobs.add(job)
        try:
            self.queue.put_nowait(job.id)
        except queue.Full:
            self.jobs.delete(job.id)
            self.cancels.pop(job.id, None)
            raise

    def submit_image(self, src: Path, dst: Path, config: Config) -> Future[None]:
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

    def _stages(self, cache: OrderedDict[str, Any], config: Config) -> tuple[Any, RunStats]:
        key = json.dumps(config_to_dict(config), sort_keys=True)
        if key not in cache:
            stats = RunStats()
            cache[key] = (self.build(config, self.models, stats), stats)
            while len(cache) > 3:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return cache[key]  # type: ignore[no-any-return]

    def _work(self) -> None:
        cache: OrderedDict[str, Any] = OrderedDict()
        try:
            self._stages(cache, self.config)  # the default models, loaded before "ready"
            from vidrestore.device import resolve_placement

            self.device = str(resolve_placement(self.config.device, self.config.precision).device)
        except BaseException as exc:
            self.load_error = exc
            log.error("the models cannot be loaded: %s", error_text(exc))
            return
        finally:
            self.ready.set()
        while not self._stop.is_set():
            item = self.queue.get()
            if item is None:
                return
            self.busy += 1
            try:
                if isinstance(item, _ImageTask):
                    self._image(cache, item)
                else:
                    self._video(cache, item)
            finally:
                self.busy -= 1

    def _image(self, cache: OrderedDict[str, Any], task: _ImageTask) -> None:
        from vidrestore.pipeline import restore_file

        try:
            stages, stats = self._stages(cache, task.config)
            restore_file(task.src, task.dst, task.config, stages, stats)
            stats.take()
            task.done.set_result(None)
        except BaseException as exc:  # handed to the waiting request, which answers with it
            task.done.set_exception(exc)

    def _video(self, cache: OrderedDict[str, Any], job_id: str) -> None:
        from vidrestore.pipeline import restore_file

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
    from vidrestore.io.reader import main_video_stream, open_input

    try:
        with open_input(path) as c:
            v = main_video_stream(c.streams.video)
            if v is None:
                return 0
            if v.frames:
                return int(v.frames)
            rate = v.average_rate or v.guessed_rate
            seconds = float(v.duration * v.time_base) if v.duration and v.time_base else (c.duration or 0) / 1e6
            return round(seconds * float(rate)) if rate else 0
    except VidrestoreError:
        return 0


def new_id() -> str:
    return uuid.uuid4().hex
