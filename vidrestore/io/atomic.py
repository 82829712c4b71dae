"""Write to a hidden temp file beside the target; rename onto it only on success."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import uuid
from pathlib import Path
from types import TracebackType

from vidrestore.errors import OutputError

__all__ = ["AtomicTarget", "check_target", "remove_stale_parts"]

log = logging.getLogger(__name__)


def check_target(target: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse to write over an input, or over an existing file without ``overwrite``."""
    for src in inputs:
        if target.exists() and src.exists() and os.path.samefile(target, src):
            raise OutputError(f"{target}: the output would replace the input; choose another output path")
        if target.resolve() == src.resolve():
            raise OutputError(f"{target}: the output would replace the input; choose another output path")
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give a file name, or several inputs for a folder output")
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: already exists; pass -y/--overwrite to replace it")
    if not target.parent.is_dir():
        raise OutputError(f"{target.parent}: the output folder does not exist")


def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_parts(target: Path) -> list[Path]:
    """Remove the temp files earlier runs left for ``target`` when they were killed, and only those:
    same target name, written on this machine, by a process that no longer exists."""
    pattern = re.compile(
        rf"^\.{re.escape(target.stem)}\.part-(?P<host>[0-9a-f]{{6}})-(?P<pid>\d+)-[0-9a-f]{{8}}{re.escape(target.suffix)}$"
    )
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        m = pattern.match(entry.name)
        if m and m["host"] == _host() and not _alive(int(m["pid"])) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
            log.info("removed %s, left by a run that was killed", entry)
    return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicTarget:
    """``with AtomicTarget(path) as tmp: write tmp; commit()`` — the target appears whole or not at all.

    The temp file keeps the target's extension (FFmpeg picks the container by it) and names this
    machine and process, so a later run can tell a killed run's leftovers (removed) from a live
    run's (kept). :meth:`commit` flushes the file to disk, then moves it into place: without
    ``overwrite`` it never replaces a file that appeared at the target meanwhile (a hard link
    fails if the name exists). If the block ends without :meth:`commit`, or with an exception
    (Ctrl-C included), the temp file is removed and the target is left exactly as it was.
    """

    def __init__(self, target: Path, overwrite: bool = False) -> None:
        self.target = target
        self.overwrite = overwrite
        remove_stale_parts(target)
        tag = f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp = target.with_name(f".{target.stem}.part-{tag}{target.suffix}")
        self.committed = False

    def __enter__(self) -> Path:
        return self.tmp

    def commit(self) -> None:
        try:
            with self.tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            if self.overwrite:
                os.replace(self.tmp, self.target)
            else:
                self._move_without_replacing()
            _fsync_dir(self.target.parent)
        except FileExistsError as exc:
            raise OutputError(
                f"{self.target}: appeared while this run was working; pass -y/--overwrite to replace it"
            ) from exc
        except OSError as exc:
            raise OutputError(f"{self.target}: cannot move the finished output into place ({exc.strerror})") from exc
        self.committed = True

    def _move_without_replacing(self) -> None:
        try:
            os.link(self.tmp, self.target)  # atomic, and refuses an existing name
        except FileExistsError:
            raise  # someone else's file: never replaced without overwrite
        except OSError:  # a file system without hard links: check, then rename (a tiny window remains)
            if self.target.exists():
                raise FileExistsError(self.target) from None
            os.replace(self.tmp, self.target)
            return
        self.tmp.unlink()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.committed:
            self.tmp.unlink(missing_ok=True)
