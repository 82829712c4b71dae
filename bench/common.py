"""Shared helpers: peak-RSS sampling of a child process, machine description, result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line for line in lines if line.startswith("model name")), None)
        if model:
            info["cpu"] = model.split(":", 1)[1].strip()
        flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
        info["cpu_features"] = [f for f in CPU_FEATURES if f in flags]
    except OSError:
        pass
    from vidrestore.device import native_bf16

    info["native_bf16"] = native_bf16()  # AMX or AVX-512 BF16, as OpenVINO reports it
    return info


# the instruction sets the engines' speed depends on, as /proc/cpuinfo names them
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def run_measured(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``python ARGS`` in a child; return (seconds, peak RSS bytes of it and its children, stdout)."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        p = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.02)

    t0 = time.perf_counter()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {err[-2000:]}")
    return seconds, peak, out


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_result(name: str, data: dict[str, Any], out: Path | None) -> None:
    """Write ``data`` to ``out``, or to bench/results/NAME.json (saying where) when ``out`` is None."""
    if out is not None:
        out.write_text(json.dumps(data, indent=2) + "\n")
    else:
        print(f"wrote {save(name, data)}")


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)
