"""OpenVINO's performance hints for a batch of faces, side by side in one run: the LATENCY hint with
the whole batch in one request (what the engine does), against the THROUGHPUT hint with one face
per request, as many requests in flight as OpenVINO asks for (``OPTIMAL_NUMBER_OF_INFER_REQUESTS``).

    python -m bench.openvino_hints                 # GFPGAN v1.4 and ParseNet at 256, 4 faces, bf16 and f32
    python -m bench.openvino_hints --faces 8 --repeats 2

The networks are the released architectures at full size with random weights, exported through
vidrestore's own export (the file the engine compiles). Repetitions alternate between the ways.
Writes bench/results/openvino_hints.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine, table, write_result
from testkit.weights import save_random_weights
from vidrestore.device import native_bf16, openvino_core
from vidrestore.models.loading import load_model
from vidrestore.models.onnx import exported_model
from vidrestore.models.store import sha256_file
from vidrestore.stages.networks import _FirstOutput, _GFPGANCall


def _exports(folder: Path) -> dict[str, tuple[Path, int]]:
    import torch

    gfpgan = save_random_weights("gfpgan_v1_clean", folder / "GFPGANv1.4.pth", small=False)
    parsenet = save_random_weights("parsenet", folder / "parsing_parsenet.pth", small=False, key=None)
    cpu = torch.device("cpu")
    nets = {
        "gfpgan-1.4 (restorer)": (_GFPGANCall(load_model("gfpgan_v1_clean", gfpgan, cpu)), gfpgan, 512),
        "parsenet at 256 (mask)": (_FirstOutput(load_model("parsenet", parsenet, cpu)), parsenet, 256),
    }
    out = {}
    for name, (module, weights, size) in nets.items():
        role = name.split("(")[1].rstrip(")")
        path = exported_model(module, role, (1, 3, size, size), {0: "batch"}, 1, folder, sha256_file(weights))
        out[name] = (path, size)
    return out


def _ways(path: Path, precision: str, threads: int) -> dict[str, Any]:
    import openvino as ov

    core = openvino_core()
    common = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}
    latency = core.compile_model(str(path), "CPU", {**common, "PERFORMANCE_HINT": "LATENCY"})
    throughput = core.compile_model(str(path), "CPU", {**common, "PERFORMANCE_HINT": "THROUGHPUT"})
    requests = int(throughput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(throughput, requests)

    def whole(batch: np.ndarray) -> None:
        latency({0: batch})

    def spread(batch: np.ndarray) -> None:
        for i in range(len(batch)):
            queue.start_async({0: batch[i : i + 1]})
        queue.wait_all()

    return {"latency, one request": (whole, 1), f"throughput, {requests} requests": (spread, requests)}


def measure(faces: int, repeats: int, threads: int, folder: Path) -> list[dict[str, Any]]:
    rows = []
    precisions = ["bf16", "f32"] if native_bf16() else ["f32"]
    rng = np.random.default_rng(0)
    for name, (path, size) in _exports(folder).items():
        batch = rng.uniform(0, 1, (faces, 3, size, size)).astype(np.float32)
        for precision in precisions:
            ways = _ways(path, precision, threads)
            for call, _ in ways.values():
                call(batch)  # warm-up
            times: dict[str, list[float]] = {w: [] for w in ways}
            for _ in range(repeats):
                for way, (call, _) in ways.items():
                    t0 = time.perf_counter()
                    call(batch)
                    times[way].append(time.perf_counter() - t0)
            base = statistics.median(times["latency, one request"])
            for way, (_, requests) in ways.items():
                per = statistics.median(times[way]) / faces
                row = {"network": name, "precision": precision, "way": way, "requests": requests, "faces": faces}
                row |= {"seconds_per_face": round(per, 4), "x_latency": round(base / faces / per, 2)}
                rows.append(row)
                print(table([row], list(row)), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="OpenVINO's threads (default: torch's)")
    ap.add_argument("--out", type=Path, help="write the JSON here instead of bench/results/")
    args = ap.parse_args()
    import torch

    threads = args.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="vidrestore-hints-") as tmp:
        rows = measure(args.faces, args.repeats, threads, Path(tmp))
    cols = ["network", "precision", "way", "requests", "faces", "seconds_per_face", "x_latency"]
    print(table(rows, cols))
    data = {"machine": machine(), "threads": threads, "faces": args.faces, "repeats": args.repeats, "rows": rows}
    write_result("openvino_hints", data, args.out)


if __name__ == "__main__":
    main()
