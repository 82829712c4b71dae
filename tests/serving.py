"""A real ``vidrestore serve`` process on a loopback port, and an HTTP client for it (tests only)."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from conftest import Weights
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    data: Path
    args: list[str]
    proc: subprocess.Popen[str]
    token: str | None = None

    def call(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        if self.token and "Authorization" not in h:
            h["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, method: str, path: str, payload: Any = None, **kw: Any) -> tuple[int, Any]:
        body = json.dumps(payload).encode() if payload is not None else None
        status, _, raw = self.call(method, path, body, {"Content-Type": "application/json", **kw})
        return status, json.loads(raw) if raw else None

    def upload(
        self, path: str, content: bytes, name: str = "x.bin", *, headers: dict[str, str] | None = None, **fields: str
    ) -> tuple[int, dict[str, str], bytes]:
        boundary = "vidrestore-test-boundary"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.call(
            "POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})}
        )

    def wait(self, job: str, states: tuple[str, ...] = ("succeeded", "failed", "canceled")) -> dict[str, Any]:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # bounded
            status, body = self.json("GET", f"/v1/jobs/{job}")
            assert status == 200, body
            if body["state"] in states:
                return body  # type: ignore[no-any-return]
            time.sleep(0.2)
        raise AssertionError(f"job {job} never reached {states}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)


def start_server(
    data: Path, weights: Weights, *extra: str, token: str | None = None, port: int | None = None
) -> Server:
    port = port or free_port()
    args = [
        sys.executable, "-m", "vidrestore", "serve", "--port", str(port), "--data", str(data),
        "--detector", "centerface", *weights.sets(), "--set", "upscaler.below=0", *extra,
    ]  # fmt: skip
    if token:
        args += ["--token", token]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = Server(f"http://127.0.0.1:{port}", data, args, proc, token)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # bounded: until the models are loaded
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else "server exited")
        try:
            status, body = server.json("GET", "/v1/health")
            if status == 200 and body["status"] in ("ready", "busy"):
                return server
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not start")


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()
