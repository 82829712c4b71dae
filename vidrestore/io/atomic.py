"""Write to a hidden temp file beside the target; rename onto it only on success."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import TracebackType

from vidrestore.errors import OutputError

__all__ = ["AtomicTarget", "check_target"]


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


class AtomicTarget:
    """``with AtomicTarget(path) as tmp: write tmp; commit()`` — the target appears whole or not at all.

    The temp file keeps the target's extension (FFmpeg picks the container by it). If the
    block ends without :meth:`commit`, or with an exception (Ctrl-C included), the temp
    file is removed and the target is left exactly as it was.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp = target.with_name(f".{target.stem}.part-{uuid.uuid4().hex[:8]}{target.suffix}")
        self.committed = False

    def __enter__(self) -> Path:
        return self.tmp

    def commit(self) -> None:
        try:
            os.replace(self.tmp, self.target)
        except OSError as exc:
            raise OutputError(f"{self.target}: cannot move the finished output into place ({exc.strerror})") from exc
        self.committed = True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.committed:
            self.tmp.unlink(missing_ok=True)
