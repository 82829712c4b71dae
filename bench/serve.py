"""``vidrestore serve`` under load: requests/s and latency for small images, the same with 500 slow
connections held open, and memory over 500 requests.

    python -m bench.serve                 # 1, 4 and 16 concurrent clients, 4 beside 500 slow ones, then 500 requests
    python -m bench.serve --requests 60   # quicker

One server process on 127.0.0.1 with one device worker (CenterFace and the small random-weight
GFPGAN, parsing mask off: every request detects and restores a face). Clients send 128x128 face
images to ``POST /v1/restore`` and wait for the answer. The server's resident memory is sampled
after a warm-up and after every 100 of the 500 requests. The slow connections each send part of a
request head and then a byte a second (slowloris); one the server closes is opened again at once, so
the server holds about 500 of them for the whole row. Writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

from bench.common import machine, table, write_result
from testkit.clips import astronaut
from testkit.weights import save_random_weights

BOUNDARY = "bench-boundary"


def body(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="f.png"\r\n\r\n'.encode()
        + buf.getvalue()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def one(url: str, payload: bytes) -> float | None:
    """One request's seconds, or None when it was not answered 200."""
    t0 = time.perf_counter()
    req = urllib.request.Request(
        url + "/v1/restore", payload, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            r.read()
            if r.status != 200:
                return None
    except OSError:  # refused, reset, or an HTTP error status
        return None
    return time.perf_counter() - t0


def load(url: str, payload: bytes, clients: int, requests: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda _: one(url, payload), range(requests)))
    wall = time.perf_counter() - t0
    latencies = sorted(a for a in answers if a is not None)
    return {
        "clients": clients,
        "requests": requests,
        "failed": requests - len(latencies),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * statistics.median(latencies)) if latencies else None,
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]) if latencies else None,
    }


class SlowClients:
    """``count`` connections that send part of a request head, then a byte a second; each one the
    server closes is opened again. ``held`` samples how many were open."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.stop = threading.Event()
        self.socks: list[socket.socket | None] = [None] * count
        self.held: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            s.sendall(b"POST /v1/restore HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            s.setblocking(False)
            return s
        except OSError:
            return None

    def _run(self) -> None:
        while not self.stop.is_set():  # bounded by stop(): the row's load ends it
            open_now = 0
            for i, s in enumerate(self.socks):
                if s is not None:
                    try:
                        s.send(b"a")
                        if s.recv(1) == b"":  # closed by the server
                            raise ConnectionError
                    except BlockingIOError:
                        pass  # nothing to read: still open
                    except OSError:
                        s.close()
                        s = None
                if s is None:
                    s = self._open()
                self.socks[i] = s
                open_now += s is not None
            self.held.append(open_now)
            self.stop.wait(1.0)

    def __enter__(self) -> SlowClients:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.held and time.monotonic() < deadline:  # bounded: the first round opened them all
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        for s in self.socks:
            if s is not None:
                s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=120, help="requests per concurrency level")
    ap.add_argument("--memory-requests", type=int, default=500)
    ap.add_argument("--slow", type=int, default=500, help="slow connections held during the slowloris row")
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--out", type=Path, help="result file (default: bench/results/serve.json)")
    args = ap.parse_args()
    face = np.asarray(Image.fromarray(astronaut()).resize((128, 128)))
    payload = body(face)
    url = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory(prefix="vidrestore-serve-") as tmp:
        d = Path(tmp)
        gfpgan = save_random_weights("gfpgan_v1_clean", d / "gfpgan.pth", small=True, scale=0.1)
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidrestore", "serve", "--port", str(args.port), "--data", str(d / "data"),
             "--detector", "centerface", "--set", f"restorer.weights={gfpgan}", "--set", "restorer.parsing_mask=false",
             "--set", "upscaler.below=0", "--queue", "64", "--offline", "--weights-dir", str(d / "cache")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # bounded: until the models are loaded
                try:
                    with urllib.request.urlopen(url + "/v1/health", timeout=2) as r:
                        if b'"ready"' in r.read():
                            break
                except OSError:
                    time.sleep(0.3)
            for _ in range(10):
                one(url, payload)  # warm-up
            rows = [load(url, payload, clients, args.requests) for clients in (1, 4, 16)]
            with SlowClients(args.port, args.slow) as slow:
                row = load(url, payload, 4, args.requests)
            rows.append({**row, "slow_connections": round(statistics.median(slow.held))})
            cols = ["clients", "slow_connections", "requests", "failed", "requests_per_s", "p50_ms", "p99_ms"]
            print(table(rows, cols), flush=True)
            server = psutil.Process(proc.pid)
            memory = [round(server.memory_info().rss / 2**20, 1)]
            done = 0
            while done < args.memory_requests:
                step = min(100, args.memory_requests - done)
                load(url, payload, 4, step)
                done += step
                memory.append(round(server.memory_info().rss / 2**20, 1))
            print(f"server RSS (MB) after warm-up and every 100 requests: {memory}")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    write_result(
        "serve",
        {"machine": machine(), "image": "128x128 PNG, one face", "rows": rows, "rss_mb_every_100": memory},
        args.out,
    )


if __name__ == "__main__":
    main()
