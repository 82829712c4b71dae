"""The work folder beside the output and its manifest: what a rerun may keep."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from vidrestore.config import Config, config_to_dict
from vidrestore.errors import ConfigError, OutputError
from vidrestore.models.store import sha256_file
from vidrestore.run.segments.plan import Plan
from vidrestore.run.segments.render import SegmentResult

__all__ = ["MANIFEST", "Manifest", "Resume", "open_manifest", "remove_work", "work_folder"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
Resume = Literal["auto", "require", "never"]
"""auto: reuse a matching work folder, else start afresh; require (--resume): refuse a mismatch;
never (--no-resume): start afresh."""

_HEAD_BYTES = 4 << 20  # the input's identity hashes its first 4 MiB (with its size and mtime)


def work_folder(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.segments")


def input_identity(src: Path) -> dict[str, Any]:
    st = src.stat()
    h = hashlib.sha256()
    with src.open("rb") as fh:
        h.update(fh.read(_HEAD_BYTES))
    return {"path": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": h.hexdigest()}


def config_hash(config: Config) -> str:
    """What the segments' pixels depend on: the config, less how the run is spread and queued."""
    d = config_to_dict(config)
    d.pop("cluster", None)
    d["output"].pop("overwrite", None)
    for k in ("workers", "worker_kind", "queue_size", "decode_threads", "encode_threads", "overlap"):
        d["pipeline"].pop(k, None)
    d["temporal"].pop("flow_threads", None)  # the same pixels with any number of flow threads
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


@dataclass
class Manifest:
    """The work folder's record; written atomically after every change."""

    folder: Path
    data: dict[str, Any]

    @property
    def segments(self) -> list[dict[str, Any]]:
        return self.data["segments"]  # type: ignore[no-any-return]

    def save(self) -> None:
        tmp = self.folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.folder / MANIFEST)

    def finished(self, index: int) -> Path | None:
        """The segment file of ``index`` if it is finished and its checksum holds."""
        entry = self.segments[index]
        path: Path = self.folder / str(entry.get("file", ""))
        if entry.get("state") != "done" or not path.is_file():
            return None
        if sha256_file(path) != entry.get("sha256"):
            log.warning("segment %d's file does not match its checksum: it is done again", index)
            return None
        return path

    def record(self, result: SegmentResult, attempts: int) -> None:
        entry = self.segments[result.index]
        entry.update(
            state="done",
            file=result.file,
            sha256=result.sha256,
            pictures=result.frames,  # what it holds: its frames, or more (a deinterlaced one's fields)
            seconds=round(result.seconds, 3),
            worker=result.worker,
            attempts=attempts,
        )
        self.save()


def open_manifest(
    src: Path, dst: Path, plan: Plan, config: Config, models: dict[str, str | None], resume: Resume
) -> tuple[Manifest, list[int]]:
    """The work folder's manifest for this run, and the segments already finished in it."""
    folder = work_folder(dst)
    fresh = {
        "format": FORMAT,
        "input": input_identity(src),
        "config_sha256": config_hash(config),
        "models": models,
        "output": str(dst),
        "time_base": str(plan.time_base),
        "segments": [{**asdict(s), "state": "pending"} for s in plan.segments],
    }
    old = None
    if (folder / MANIFEST).is_file() and resume != "never":
        try:
            old = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable manifest (%s): starting afresh", folder, exc)
    if old is not None:
        changed = _changes(old, fresh)
        if not changed:
            manifest = Manifest(folder, old)
            done = [s["index"] for s in old["segments"] if manifest.finished(s["index"]) is not None]
            for s in old["segments"]:
                if s["index"] not in done:
                    s["state"] = "pending"
            return manifest, done
        if resume == "require":
            raise ConfigError(
                f"{folder}: cannot resume: the {' and the '.join(changed)} changed since it was made; "
                "rerun without --resume to start afresh (or with what it was made with)"
            )
        log.warning("%s was made with a different %s: starting afresh", folder, " and ".join(changed))
    elif resume == "require" and not (folder / MANIFEST).is_file():
        log.warning("nothing to resume for %s: starting", dst)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    manifest = Manifest(folder, fresh)
    manifest.save()
    return manifest, []


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    what = []
    if old.get("format") != new["format"]:
        what.append("work folder format")
    if old.get("input") != new["input"]:
        what.append("input")
    if old.get("config_sha256") != new["config_sha256"]:
        what.append("configuration")
    if old.get("models") != new["models"]:
        what.append("model files")
    if not what and [_cut(s) for s in old.get("segments", [])] != [_cut(s) for s in new["segments"]]:
        what.append("segment plan")
    return what


def _cut(entry: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(entry.get(k) for k in ("index", "start", "end", "first_frame", "frames", "seek"))


def remove_work(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        raise OutputError(f"{folder}: the output is in place, but its work folder cannot be removed ({exc})") from exc
