"""A small W3C WebDriver client for Debian's chromium-driver (tests only; no extra packages)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class Browser:
    """Headless Chromium driven over the WebDriver protocol."""

    def __init__(self, chromium: str, driver: str, width: int = 1100, height: int = 1400) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded: until the driver answers
            try:
                self._call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        args = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}}
        self._session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        self._s("POST", "/timeouts", {"script": 60_000})

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self._base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"webdriver {method} {path}: {e.read()[:500]!r}") from e

    def _s(self, method: str, path: str, payload: Any = None) -> Any:
        return self._call(method, f"/session/{self._session}{path}", payload)

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    @property
    def title(self) -> str:
        return str(self._s("GET", "/title"))

    def run(self, script: str, *args: Any) -> Any:
        return self._s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def run_async(self, script: str, *args: Any) -> Any:
        return self._s("POST", "/execute/async", {"script": script, "args": list(args)})

    def find(self, css: str) -> Element:
        return Element(self, self._s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))

    def quit(self) -> None:
        try:
            self._s("DELETE", "")
        finally:
            self._proc.terminate()
            self._proc.wait(timeout=30)


class Element:
    def __init__(self, browser: Browser, eid: str) -> None:
        self._b, self._id = browser, eid

    def send_keys(self, text: str) -> None:
        self._b._s("POST", f"/element/{self._id}/value", {"text": text})

    def css(self, name: str) -> str:
        return str(self._b._s("GET", f"/element/{self._id}/css/{name}"))

    def attribute(self, name: str) -> str | None:
        value = self._b._s("GET", f"/element/{self._id}/attribute/{name}")
        return None if value is None else str(value)

    @property
    def displayed(self) -> bool:
        return bool(self._b._s("GET", f"/element/{self._id}/displayed"))
