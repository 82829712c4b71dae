"""The output file: flushed to disk, never replacing a file that appeared meanwhile, no stale parts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidrestore.errors import OutputError
from vidrestore.io.atomic import AtomicTarget, _host, remove_stale_parts


def test_commit_flushes_the_file_and_the_folder_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = AtomicTarget(tmp_path / "out.mp4")
    with target as tmp:
        tmp.write_bytes(b"video")
        target.commit()
    assert (tmp_path / "out.mp4").read_bytes() == b"video"
    assert synced == [str(target.tmp), str(tmp_path)]  # the data, then the rename
    assert list(tmp_path.iterdir()) == [tmp_path / "out.mp4"]


def test_a_file_that_appears_meanwhile_is_never_replaced_without_overwrite(tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    target = AtomicTarget(dst)
    with pytest.raises(OutputError, match="appeared while this run was working"), target as tmp:
        tmp.write_bytes(b"ours")
        dst.write_bytes(b"someone else's")  # after the up-front check, before the commit
        target.commit()
    assert dst.read_bytes() == b"someone else's"
    assert list(tmp_path.iterdir()) == [dst]  # and our temp file is gone
    again = AtomicTarget(dst, overwrite=True)
    with again as tmp:
        tmp.write_bytes(b"ours")
        again.commit()
    assert dst.read_bytes() == b"ours"


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_later_run_removes_the_parts_killed_runs_left_and_only_those(tmp_path: Path) -> None:
    dst = tmp_path / "call.mp4"
    dead, live = _dead_pid(), os.getppid()
    stale = tmp_path / f".call.part-{_host()}-{dead}-0123abcd.mp4"
    running = tmp_path / f".call.part-{_host()}-{live}-4567abcd.mp4"  # a run still going: keep
    elsewhere = tmp_path / f".call.part-ffffff-{dead}-89abcdef.mp4"  # another machine's (shared folder): keep
    other_target = tmp_path / f".other.part-{_host()}-{dead}-0123abcd.mp4"  # not this target's: keep
    users_file = tmp_path / ".call.part-notes.mp4"  # not ours at all: keep
    for p in (stale, running, elsewhere, other_target, users_file):
        p.write_bytes(b"x")
    assert remove_stale_parts(dst) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (running, elsewhere, other_target, users_file)
    )
    AtomicTarget(dst)  # a run removes them on its own when it starts
