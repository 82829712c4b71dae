"""Video jobs kept in SQLite, and a request's parameters as a configuration.

Every job row
lives in ``jobs.sqlite3`` in the data folder with its state, progress and error; its input and
result are files named by the job's id, never by a client's file name. On a restart, finished jobs
are kept, and jobs that were queued or running are **put back in the queue** (a running one starts
over: its partial output was never in place). Results expire after ``expire_seconds``: the job
row, its input and its result go together; so does everything when a job is deleted.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidrestore.config import Config, apply_overrides
from vidrestore.errors import ConfigError

__all__ = ["DONE", "STATES", "Job", "JobStore", "new_id", "request_config"]

log = logging.getLogger(__name__)

STATES = ("queued", "running", "succeeded", "failed", "canceled")
DONE = ("succeeded", "failed", "canceled")
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


def new_id() -> str:
    return uuid.uuid4().hex
