"""Local means local: a server on a loopback address answers only requests that name a loopback
host and come from no foreign web page; no response is sniffed into another type; a malformed
``Range`` header is ignored (as the HTTP spec says) and an unsatisfiable one answered in JSON.

A web page the user visits can make the browser send requests to ``http://127.0.0.1:8000``
(a cross-origin form POST needs no permission), and DNS rebinding can make a foreign name
resolve to it. So on loopback the ``Host`` header must be a loopback name or address (or one given
with ``--allow-host``), and a request whose ``Origin`` is a foreign page (not this server's own
page, not one given with ``--allow-origin``) is refused before any work, as is ``Origin: null``
(sandboxed frames, ``data:`` and ``file:`` pages send it; ``--allow-origin null`` admits it). No
response may be framed by another site's page.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from vidrestore.server.errors import error_body

__all__ = ["LOOPBACK_NAMES", "Guard"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d+-\d*|-\d+)(\s*,\s*(\d+-\d*|-\d+))*\s*", re.I)


def _normal_range(value: str) -> str | None:
    """``value`` as a Range header Starlette answers as the HTTP spec says, or None where the spec
    says to ignore it: malformed, or a range whose end comes before its start (``bytes=5-2``). An
    end of more than 18 digits lies past any file, so it is dropped (``bytes=5-``: to the end, the
    same range), where Starlette would answer it with a plain-text 400."""
    if not _RANGE.fullmatch(value):
        return None
    specs = []
    for spec in value.split("=", 1)[1].split(","):
        first, _, last = spec.strip().partition("-")
        if first and last and int(last) < int(first):
            return None
        specs.append(f"{first}-{'' if first and len(last) > 18 else last}")
    return "bytes=" + ",".join(specs)


def _host_name(host: str) -> str:
    """``Host`` without its port: ``[::1]:8000`` -> ``::1``, ``localhost:8000`` -> ``localhost``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: the Host and Origin checks (on loopback), and ``nosniff`` on every response."""

    def __init__(
        self, app: Any, *, loopback: bool, allow_hosts: tuple[str, ...] = (), allow_origins: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.loopback = loopback
        self.hosts = {*LOOPBACK_NAMES, *(h.lower() for h in allow_hosts)}
        self.origins = {o.rstrip("/").lower() for o in allow_origins}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        refused = self._refusal(headers)
        if refused is not None:
            status, kind, message = refused
            await send({"type": "http.response.start", "status": status, "headers": _headers()})
            await send({"type": "http.response.body", "body": error_body(kind, message)})
            return
        if "range" in headers:
            # a malformed Range header is ignored, as the HTTP spec says: the whole file is sent
            wanted = _normal_range(headers["range"])
            kept = [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]
            scope = {**scope, "headers": kept if wanted is None else [*kept, (b"range", wanted.encode())]}
        unsatisfiable = False

        async def checked(message: Message) -> None:
            nonlocal unsatisfiable
            if message["type"] == "http.response.start":
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    # no page of another site may frame this one (clickjacking its buttons)
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", b"frame-ancestors 'none'"),
                ]
                if message["status"] == 416:  # a range past the end: said in JSON, as every error is
                    unsatisfiable = True
                    body = error_body("range", "the requested range is not in the file")
                    kept = [(k, v) for k, v in message.get("headers", []) if k.lower() == b"content-range"]
                    extra += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                    message["headers"] = kept
                message["headers"] = [*message.get("headers", []), *extra]
            elif message["type"] == "http.response.body" and unsatisfiable:
                message = {**message, "body": error_body("range", "the requested range is not in the file")}
            await send(message)

        await self.app(scope, receive, checked)

    def _refusal(self, headers: dict[str, str]) -> tuple[int, str, str] | None:
        if not self.loopback:
            return None
        host = headers.get("host", "")
        if _host_name(host) not in self.hosts:
            return 421, "host", f"this server answers to loopback names only, not {host!r} (--allow-host adds one)"
        origin = headers.get("origin")
        if origin is None:  # a script, curl: no page is asking
            return None
        if origin.strip().lower() == "null" and "null" not in self.origins:
            # an opaque origin: a sandboxed frame, a data: or file: page; any page can make one, and a
            # multipart POST from it needs no preflight
            return 403, "origin", "requests from a page with no origin (sandboxed, data: or file:) are refused"
        own = {f"http://{host}".lower(), f"https://{host}".lower()}
        if origin.rstrip("/").lower() not in own | self.origins:
            return 403, "origin", f"requests from the page {origin!r} are refused (--allow-origin admits one)"
        return None


def _headers() -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"x-content-type-options", b"nosniff"), (b"connection", b"close")]
