"""Damaged files: how many frames vidrestore keeps against the ffmpeg command-line tool.

    python -m bench.damage              # the corpus of tests/test_damage.py with three seeds, and the healthy corpus
    python -m bench.damage --seeds 1    # one seed

The corpus is ``testkit.corpus``: seeded byte flips, zeroed, removed and duplicated ranges,
damaged indexes, a huge audio sample size and truncations, in MP4, MOV, MKV, AVI and WebM files
with two audio tracks (100 frames each). For each file, ``ffmpeg -i FILE -f null -`` (Debian's
ffmpeg) gives the yardstick; vidrestore runs its CLI on the file (no face stages: this measures
reading and writing) and the output's frames are counted by the same ffmpeg. Rows per kind of
damage and per container; totals. Damaged copies of the healthy corpus's packed-B AVI, MPG, WMV, OGV,
TS and FLV files are in the corpus too.

The false-alarm column: every file of the healthy corpus (``testkit.healthy``, made by the ffmpeg
CLI) goes through the same run; a healthy file called damaged (or possibly damaged), a frame fewer
than ffmpeg decodes from it, or a copied audio or subtitle packet fewer is a defect. Prints tables
and writes bench/results/damage.json.
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

import av

from bench.common import machine, table, write_result
from testkit.corpus import CONTAINERS, KINDS, Damaged, damage, ffmpeg_frames, make_corpus
from testkit.healthy import make_healthy
from vidrestore.cli import main as cli_main

# healthy files whose damaged copies join the corpus: containers and codecs its own clips lack
FROM_HEALTHY = (
    "mpeg4-ac3-packed.avi",
    "mpeg2-mp2.mpg",
    "wmv2-wmav2.wmv",
    "theora-vorbis.ogv",
    "h264-aac.ts",
    "h264-mp3.flv",
)


def _run_cli(src: Path, dst: Path, report: Path) -> tuple[int, float, str]:
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = cli_main(
            ["restore", str(src), "-o", str(dst), "--detector", "none", "--encode-preset", "ultrafast"]
            + ["--report", str(report), "-q", "-y"]
        )
    return code, time.perf_counter() - t0, err.getvalue()


def _copied_packets(path: Path) -> list[int]:
    """Per audio and subtitle stream, in order: how many packets with data it holds."""
    with av.open(str(path)) as c:
        wanted = [s.index for s in c.streams if s.type in ("audio", "subtitle")]
        counts = dict.fromkeys(wanted, 0)
        for packet in c.demux(*[c.streams[i] for i in wanted]):
            if packet.size:
                counts[packet.stream.index] += 1
    return [counts[i] for i in wanted]


def run_healthy(src: Path, out_dir: Path) -> dict[str, Any]:
    """One healthy file through the run: called damaged? frames and copied packets lost?"""
    dst = out_dir / f"healthy-{src.name}"
    report = out_dir / f"healthy-{src.name}.json"
    code, seconds, err = _run_cli(src, dst, report)
    said = json.loads(report.read_text())["damage"] if code == 0 else []
    before, after = _copied_packets(src), (_copied_packets(dst) if code == 0 else [])
    lost = sum(max(0, b - a) for b, a in zip(before, after)) + sum(before[len(after) :])
    return {
        "file": src.name,
        "exit": code,
        "traceback": "Traceback" in err,
        "called_damaged": bool(said) or "damaged" in err,
        "ffmpeg_frames": ffmpeg_frames(src),
        "vidrestore_frames": ffmpeg_frames(dst) if code == 0 else 0,
        "copied_packets": sum(before),
        "copied_packets_lost": lost,
        "seconds": round(seconds, 3),
    }


def run_one(d: Damaged, out_dir: Path) -> dict[str, Any]:
    dst = out_dir / f"out-{d.path.name}"
    report = out_dir / f"{d.path.name}.json"
    code, seconds, err_text = _run_cli(d.path, dst, report)
    reference = ffmpeg_frames(d.path)
    kept = ffmpeg_frames(dst) if code == 0 else 0
    damage = json.loads(report.read_text())["damage"] if code == 0 else []
    return {
        "file": d.path.name,
        "container": d.container,
        "kind": d.kind,
        "seed": d.seed,
        "exit": code,
        "traceback": "Traceback" in err_text,
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
    parser.add_argument("--no-healthy", action="store_true", help="leave out the healthy corpus and its damaged copies")
    args = parser.parse_args()
    healthy_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vidrestore-damage-") as tmp:
        folder = Path(tmp)
        corpus = make_corpus(folder / "corpus", seeds=range(args.seeds), containers=args.containers)
        (folder / "out").mkdir()
        if not args.no_healthy:
            healthy = make_healthy(folder / "healthy")
            healthy_rows = [run_healthy(h.path, folder / "out") for h in healthy]
            sources = {h.path.name: h.path for h in healthy}
            for name in FROM_HEALTHY:
                for kind in ("flip", "zero", "remove", "duplicate", "truncate"):
                    for seed in range(args.seeds):
                        dst = damage(sources[name], folder / "corpus" / f"{kind}-{seed}-{name}", kind, seed)
                        corpus.append(Damaged(dst, sources[name], sources[name].suffix.lstrip("."), kind, seed))
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
    false_alarms = {
        "files": len(healthy_rows),
        "called_damaged": sum(r["called_damaged"] for r in healthy_rows),
        "not_exit_0": sum(r["exit"] != 0 for r in healthy_rows),
        "frames_lost": sum(max(0, r["ffmpeg_frames"] - r["vidrestore_frames"]) for r in healthy_rows),
        "copied_packets": sum(r["copied_packets"] for r in healthy_rows),
        "copied_packets_lost": sum(r["copied_packets_lost"] for r in healthy_rows),
    }
    if healthy_rows:
        print()
        print(f"healthy files called damaged: {false_alarms['called_damaged']} of {false_alarms['files']}")
        print(table([false_alarms], list(false_alarms)))
    data = {
        "machine": machine(),
        "seeds": args.seeds,
        "totals": total,
        "by_kind": by_kind,
        "by_container": by_container,
        "files": rows,
        "tracebacks": sum(r["traceback"] for r in rows) + sum(r["traceback"] for r in healthy_rows),
        "false_alarms": false_alarms,
        "healthy": healthy_rows,
    }
    write_result("damage", data, args.out)


if __name__ == "__main__":
    main()
