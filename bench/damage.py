"""Damaged files: how many frames vidrestore keeps against the ffmpeg command-line tool.

    python -m bench.damage              # the corpus of tests/test_damage.py with three seeds (96 files)
    python -m bench.damage --seeds 1    # one seed (32 files)

The corpus is ``vidrestore.corpus``: seeded byte flips, zeroed, removed and duplicated ranges,
damaged indexes, a huge audio sample size and truncations, in MP4, MOV, MKV, AVI and WebM files
with two audio tracks (100 frames each). For each file, ``ffmpeg -i FILE -f null -`` (Debian's
ffmpeg) gives the yardstick; vidrestore runs its CLI on the file (no face stages: this measures
reading and writing) and the output's frames are counted by the same ffmpeg. Rows per kind of
damage and per container; totals. Prints tables and writes bench/results/damage.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import machine, table, write_result
from vidrestore.cli import main as cli_main
from vidrestore.corpus import CONTAINERS, KINDS, Damaged, ffmpeg_frames, make_corpus


def run_one(d: Damaged, out_dir: Path) -> dict[str, Any]:
    dst = out_dir / f"out-{d.path.name}"
    report = out_dir / f"{d.path.name}.json"
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = cli_main(
            ["restore", str(d.path), "-o", str(dst), "--detector", "none", "--encode-preset", "ultrafast"]
            + ["--report", str(report), "-q", "-y"]
        )
    seconds = time.perf_counter() - t0
    reference = ffmpeg_frames(d.path)
    kept = ffmpeg_frames(dst) if code == 0 else 0
    damage = json.loads(report.read_text())["damage"] if code == 0 else []
    return {
        "file": d.path.name,
        "container": d.container,
        "kind": d.kind,
        "seed": d.seed,
        "exit": code,
        "traceback": "Traceback" in err.getvalue(),
        "ffmpeg_frames": reference,
        "vidrestore_frames": kept,
        "source_frames": ffmpeg_frames(d.source),
        "damage_reported": bool(damage),
        "seconds": round(seconds, 3),
    }


def summarise(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r[key]].append(r)
    out = []
    for name, rs in groups.items():
        ff = sum(r["ffmpeg_frames"] for r in rs)
        us = sum(r["vidrestore_frames"] for r in rs)
        # files that lost frames and still exited 0 (exit 4 says so itself): did the report say?
        lost = [r for r in rs if r["exit"] == 0 and r["vidrestore_frames"] < r["source_frames"]]
        out.append(
            {
                key: name,
                "files": len(rs),
                "ffmpeg": ff,
                "vidrestore": us,
                "of": sum(r["source_frames"] for r in rs),
                "vs_ffmpeg": f"{us - ff:+d}",
                "fewer_than_ffmpeg": sum(r["vidrestore_frames"] < r["ffmpeg_frames"] - 1 for r in rs),
                "exit_4": sum(r["exit"] == 4 for r in rs),
                "lost_and_reported": f"{sum(r['damage_reported'] for r in lost)}/{len(lost)}",
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="damaged copies per kind and container")
    parser.add_argument("--containers", nargs="*", default=list(CONTAINERS))
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/damage.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidrestore-damage-") as tmp:
        folder = Path(tmp)
        corpus = make_corpus(folder / "corpus", seeds=range(args.seeds), containers=args.containers)
        (folder / "out").mkdir()
        rows = [run_one(d, folder / "out") for d in corpus]
    by_kind = summarise(rows, "kind")
    by_kind.sort(key=lambda r: KINDS.index(r["kind"]))
    by_container = summarise(rows, "container")
    total = summarise([{**r, "all": "all"} for r in rows], "all")[0]
    columns = ["files", "ffmpeg", "vidrestore", "of", "vs_ffmpeg", "fewer_than_ffmpeg", "exit_4", "lost_and_reported"]
    print(table(by_kind, ["kind", *columns]))
    print()
    print(table(by_container, ["container", *columns]))
    print()
    print(table([total], ["all", *columns]))
    data = {
        "machine": machine(),
        "seeds": args.seeds,
        "totals": total,
        "by_kind": by_kind,
        "by_container": by_container,
        "files": rows,
        "tracebacks": sum(r["traceback"] for r in rows),
    }
    write_result("damage", data, args.out)


if __name__ == "__main__":
    main()
