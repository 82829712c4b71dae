"""Uploads: bodies bounded as they stream, files stored under their content's hash and recognised
from their content (never from a client's name), and images fetched from a URL, a data: URL or
this server's own files."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidrestore.errors import InputError
from vidrestore.server.errors import ApiError, error_body
from vidrestore.server.fetch import fetch_url
from vidrestore.server.jobs import new_id

__all__ = ["IMAGE_SUFFIXES", "BodyLimits", "UploadLimit", "Uploads", "form_upload", "store_upload"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
IMAGE_SUFFIXES = frozenset(_IMAGE_FORMATS.values())  # what a stored image is named with
_VIDEO_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "matroska,webm": ".mkv", "avi": ".avi", "mpegts": ".ts"}


@dataclass(frozen=True)
class BodyLimits:
    """What a request body may cost: its size (``max_upload``; JSON bodies ``max_json``, since a
    JSON body is held whole), how long it may stall (``idle`` seconds between pieces) and how slowly
    it may come (after ``idle`` seconds, ``min_rate`` bytes/s on average), and how many multipart
    uploads (each spooled to disk by the parser) may stream at once (``max_uploads``)."""

    max_upload: int = 512 << 20
    max_json: int = 64 << 20
    idle: float = 30.0
    min_rate: float = 8192.0
    max_uploads: int = 8


class UploadLimit:
    """ASGI middleware that holds every request body to :class:`BodyLimits`: a body over its size is
    answered 413 as soon as that is known (its Content-Length, or the bytes streamed so far), one
    that stalls or trickles 408. Multipart uploads stream in at most ``max_uploads`` at a time; one
    more waits for a slot as long as a body may stall, then gets 429 with none of it read. Each of
    these answers closes the connection, so the rest of the body is never read."""

    def __init__(self, app: Any, limits: BodyLimits) -> None:
        self.app, self.limits = app, limits
        self._slots: asyncio.Semaphore | None = None  # made in the server's event loop, on first use

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        limit = self.limits.max_upload
        if ctype == b"application/json":
            limit = min(limit, self.limits.max_json)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, 413, "limit", _too_large(limit))
            return
        if ctype != b"multipart/form-data":
            await self._serve(scope, receive, send, limit, lambda: None)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.max_uploads)
        slots = self._slots
        try:  # an upload waits for one of the slots as long as a body may stall, then is refused unread
            await asyncio.wait_for(slots.acquire(), self.limits.idle)
        except TimeoutError:
            why = f"{self.limits.max_uploads} uploads are streaming in already; try again shortly"
            await _refuse(send, 429, "busy", why, [(b"retry-after", b"5")])
            return
        held = True

        def give_back() -> None:  # once the body is in (the work that follows holds no slot), or at the end
            nonlocal held
            if held:
                held = False
                slots.release()

        try:
            await self._serve(scope, receive, send, limit, give_back)
        finally:
            give_back()

    async def _serve(self, scope: Scope, receive: Receive, send: Send, limit: int, done: Callable[[], None]) -> None:
        seen, started, refused = 0, False, False
        t0 = time.monotonic()
        idle, min_rate = self.limits.idle, self.limits.min_rate

        async def counted() -> Message:
            nonlocal seen, refused
            try:
                message = await asyncio.wait_for(receive(), idle)
            except TimeoutError:
                refused = True
                raise _BodyRefused(408, f"the request body stalled for {idle:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                took = time.monotonic() - t0
                if seen > limit:
                    refused = True
                    raise _BodyRefused(413, _too_large(limit))
                if took > idle and seen < min_rate * took and message.get("more_body", False):
                    refused = True
                    raise _BodyRefused(408, f"the request body came slower than {min_rate:g} bytes/s")
                if not message.get("more_body", False):
                    done()
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if refused:  # the rest of the body is not read: this connection cannot carry another request
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted, watch)
        except _BodyRefused as exc:
            if not started:
                await _refuse(send, exc.status_code, "limit", str(exc.detail))


def _too_large(limit: int) -> str:
    return f"the body is larger than this server's limit of {limit} bytes"


async def _refuse(
    send: Send, status: int, kind: str, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = error_body(kind, message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BodyRefused(StarletteHTTPException):
    """Raised from the body stream (too large, too slow); answered by the app's handler (or the
    middleware). Whoever answers, :class:`UploadLimit` closes the connection with the answer."""


def _kind_of(path: Path) -> tuple[str, str]:
    """("image" | "video", suffix) from the file's content itself; InputError if it is neither."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise InputError("the upload is empty")
    fmt = ""
    try:
        with Image.open(path) as im:
            fmt, most, (w, h) = im.format or "", _most_bytes(im), im.size
            im.verify()
    except Image.DecompressionBombError as exc:  # a small file that claims a huge picture
        raise ApiError(413, "limit", f"the image claims too many pixels to decode safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, IndexError, EOFError, struct.error):
        fmt = ""  # not an image PIL can check (a PNG without IDAT gave IndexError): maybe a video
    if fmt in _IMAGE_FORMATS:
        size = path.stat().st_size
        if size > most:
            raise InputError(
                f"the upload is {size} bytes, more than its {w}x{h} picture can take up ({most} at most): "
                "data after an image is not accepted"
            )
        return "image", _IMAGE_FORMATS[fmt]
    import av
    import av.error

    try:
        with av.open(str(path)) as c:
            # an image FFmpeg reads through an image demuxer (SVG, a lone picture) is not a video
            still = c.format.name.endswith("_pipe") or c.format.name in ("image2", "svg")
            if c.streams.video and not still:
                return "video", _VIDEO_FORMATS.get(c.format.name, ".mkv")
    except (av.error.FFmpegError, ValueError, OSError):
        pass
    raise InputError("the upload is neither an image nor a video this server can read")


def _most_bytes(im: Any) -> int:
    """The most bytes a file holding ``im`` can reasonably take: every frame stored uncompressed at
    its bands' depth (PNG's stored blocks and row filters add under 1%), plus room for metadata (ICC
    profiles, EXIF thumbnails). A file larger than this carries something else after its picture."""
    depth = 4 if im.mode in ("I", "F") else 2 if "16" in im.mode else 1
    frames = int(getattr(im, "n_frames", 1) or 1)
    raw = im.width * im.height * len(im.getbands()) * depth
    return int(frames * (raw * 1.02 + im.height * 8) + (4 << 20))


def store_upload(source: BinaryIO, folder: Path, name: Callable[[str], str]) -> tuple[Path, str, bool]:
    """Copy ``source`` into ``folder`` in pieces (never whole in memory), hashing it; the file is
    named ``name(sha256) + suffix``, the suffix from its content. Returns (path, kind, whether the
    file is new: the same content stored before is the same file, and is not this request's to remove)."""
    digest = hashlib.sha256()
    tmp = folder / f".upload-{new_id()}.part"
    try:
        with tmp.open("wb") as out:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        kind, suffix = _kind_of(tmp)
        path = folder / f"{name(digest.hexdigest())}{suffix}"
        created = not path.exists()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, kind, created


class Uploads:
    """The folder of uploaded and restored files: stored by hash, found by id, expired by age."""

    def __init__(self, folder: Path, max_image: int, fetch_hosts: tuple[str, ...]) -> None:
        self.folder = folder
        self.max_image = max_image  # an image sent as a data: URL or fetched from one, in bytes
        self.fetch_hosts = fetch_hosts
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, source: BinaryIO) -> tuple[str, Path, str]:
        """Store an upload under its content's hash (never a client's name); returns (id, path, kind)."""
        path, kind, _ = store_upload(source, self.folder, lambda h: h[:32])
        return path.stem, path, kind

    def save_for(self, source: BinaryIO, want: str, why: str) -> tuple[Path, bool]:
        """Store a request's input, which must be of kind ``want``; one that is not is refused with
        ``why`` and not kept (unless the same content was stored before: then it is not this request's).
        Returns the path, and whether the file is new."""
        path, kind, created = store_upload(source, self.folder, lambda h: h[:32])
        if kind != want:
            if created:
                path.unlink(missing_ok=True)
            raise ApiError(400, "input", why)
        return path, created

    def path(self, fid: str) -> Path:
        if not fid.isalnum() or len(fid) > 64:
            raise ApiError(404, "not_found", "no such file")
        found = [p for p in self.folder.glob(f"{fid}.*") if not p.name.startswith(".")]
        if not found:
            raise ApiError(404, "not_found", "no such file")
        return found[0]

    def own(self, url: str, own_host: str) -> Path | None:
        """The stored file ``url`` names, if it is one of this server's own ``/v1/files`` URLs."""
        parts = urlsplit(url)
        if parts.scheme in ("", "http", "https") and parts.netloc in ("", own_host):
            if parts.path.startswith("/v1/files/"):
                return self.path(parts.path.rsplit("/", 1)[-1])
        return None

    def image_file(self, url: str) -> BinaryIO:
        """An image named by ``url`` (a data: URL, or fetched, guarded), at most ``max_image`` bytes,
        as a file: a data: URL is decoded piece by piece into it, never held twice whole."""
        if not url.startswith("data:"):
            return io.BytesIO(fetch_url(url, self.fetch_hosts, self.max_image))
        head, _, payload = url.partition(",")
        if not head.endswith(";base64"):
            raise InputError("image_url: a data: URL must be base64 (data:image/png;base64,...)")
        if len(payload) // 4 * 3 > self.max_image:
            raise ApiError(413, "limit", f"the image is larger than this server's limit of {self.max_image} bytes")
        out: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(1 << 20, "w+b", dir=str(self.folder))
        step = 4 << 20  # a multiple of 4: each piece decodes on its own
        try:
            for i in range(0, len(payload), step):
                out.write(base64.b64decode(payload[i : i + step], validate=True))
        except (binascii.Error, ValueError) as exc:
            out.close()
            raise InputError("image_url: the data: URL is not valid base64") from exc
        out.seek(0)
        return out  # type: ignore[return-value]  # a spooled file is a binary file

    def expire(self, before: float) -> None:
        """Remove files last written before ``before`` (seconds since the epoch). A file renamed or
        removed meanwhile (an upload finishing, a request deleting it) is skipped."""
        for f in self.folder.iterdir():
            try:
                if f.stat().st_mtime < before:
                    f.unlink(missing_ok=True)
            except FileNotFoundError:
                continue

    def new_path(self, suffix: str) -> Path:
        return self.folder / f"{new_id()}{suffix}"


async def form_upload(request: Request) -> tuple[BinaryIO, dict[str, Any]]:
    """The multipart upload (spooled to disk by the parser past 1 MB) and the other fields."""
    form = await request.form()
    upload = form.get("file") or form.get("image") or form.get("video")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "input", "send the file as a multipart field named 'file'")
    params = {k: _number(v) for k, v in form.items() if k not in ("file", "image", "video") and isinstance(v, str)}
    return upload.file, params


def _number(value: str) -> Any:
    """A form field as the number it spells, else the text."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value
