"""What a new user waits for: the install (time and size) and the README's main command on the
sample clip, on this machine.

    python -m bench.first_run              # the main command only (a few minutes on 2 CPU cores)
    python -m bench.first_run --install    # also a fresh virtual environment with `pip install -e .`

The main command is the README's ``vidrestore restore clips/sample.mp4 -o ...`` with the default
settings, run as a user runs it (a new process, stderr not a terminal). Its models are the
full-size architectures with random weights, given as the user's own files (``*.weights`` keys),
since the released files cannot be downloaded here: they cost what the released ones cost. The
detector is the exception: a RetinaFace with random weights finds random "faces" by the dozen, so
the run uses CenterFace, which finds the one real face, and adds RetinaFace-R50's measured cost per
frame (``bench/results/engines.json``, eager) for the default's time. The
install measures wall time and the size of the environment it made (torch's CUDA build included:
that is what ``pip install`` brings by default). Writes bench/results/first_run.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, write_result
from testkit.weights import save_random_weights

ROOT = Path(__file__).resolve().parent.parent


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def install(tmp: Path) -> dict[str, Any]:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    t0 = time.perf_counter()
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", str(ROOT)], check=True)
    seconds = time.perf_counter() - t0
    return {"install_seconds": round(seconds), "install_gb": round(_size(venv) / 1e9, 2)}


def main_command(tmp: Path) -> dict[str, Any]:
    weights = {
        "restorer.weights": save_random_weights("gfpgan_v1_clean", tmp / "gfpgan.pth", small=False),
        "restorer.parsing_weights": save_random_weights("parsenet", tmp / "parse.pth", small=False, key=None),
        "upscaler.weights": save_random_weights("srvgg_compact", tmp / "x4v3.pth", small=False, key="params"),
    }
    sets = [a for k, v in weights.items() for a in ("--set", f"{k}={v}")]
    out = tmp / "sample.restored.mp4"
    args = [sys.executable, "-m", "vidrestore", "restore", str(ROOT / "clips" / "sample.mp4"), "-o", str(out), *sets]
    args += ["--detector", "centerface"]
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "VIDRESTORE_WEIGHTS": str(tmp / "c")})
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    done = next(ln for ln in r.stderr.splitlines() if ln.startswith("done:"))
    rows = json.loads((ROOT / "bench" / "results" / "engines.json").read_text())["rows"]
    retina = next(
        r["seconds_per_unit"] for r in rows if r["network"].startswith("retinaface") and r["engine"] == "eager"
    )
    frames = int(done.split(",")[1].split()[0])
    return {
        "main_command_seconds_centerface": round(seconds),
        "main_command_says": done,
        "retinaface_r50_seconds_per_frame": retina,
        "main_command_seconds_estimated_default": round(seconds + frames * retina),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--install", action="store_true", help="also time a fresh install (several GB of downloads)")
    ap.add_argument("--out", type=Path, help="result file (default: bench/results/first_run.json)")
    args = ap.parse_args()
    result: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="vidrestore-first-run-") as tmp:
        result.update(main_command(Path(tmp)))
        print(f"main command: {result['main_command_seconds_centerface']} s with CenterFace "
              f"({result['main_command_says']}); with RetinaFace-R50 about "
              f"{result['main_command_seconds_estimated_default']} s", flush=True)  # fmt: skip
        if args.install:
            result.update(install(Path(tmp)))
            print(f"install: {result['install_seconds']} s, {result['install_gb']} GB", flush=True)
    write_result("first_run", result, args.out)


if __name__ == "__main__":
    main()
