"""Uploads: bodies bounded as they stream, files stored under their content's hash and recognised
from their content (never from a client's name), and images fetched from a URL, a data: URL or
this server's own files."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidrestore.errors import InputError
from vidrestore.server.errors import ApiError, error_body
from vidrestore.server.fetch import fetch_url
from vidrestore.server.jobs import new_id

__all__ = ["IMAGE_SUFFIXES", "UploadLimit", "Uploads", "form_upload", "store_upload"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
IMAGE_SUFFIXES = frozenset(_IMAGE_FORMATS.values())  # what a stored image is named with
_VIDEO_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "matroska,webm": ".mkv", "avi": ".avi", "mpegts": ".ts"}


class UploadLimit:
    """ASGI middleware: a body larger than ``limit`` is answered 413 as soon as that is known (its
    Content-Length, or the bytes streamed so far), so an oversized upload is never read whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watch)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = error_body("limit", f"the upload is larger than this server's limit of {self.limit} bytes")
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(StarletteHTTPException):
    """Raised from the body stream; answered 413 by the app's handler (or the middleware)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the upload is larger than this server's limit of {limit} bytes")


def _kind_of(path: Path) -> tuple[str, str]:
    """("image" | "video", suffix) from the file's content itself; InputError if it is neither."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise InputError("the upload is empty")
    try:
        with Image.open(path) as im:
            fmt = im.format or ""
            im.verify()
        if fmt in _IMAGE_FORMATS:
            return "image", _IMAGE_FORMATS[fmt]
    except Image.DecompressionBombError as exc:  # a small file that claims a huge picture
        raise ApiError(413, "limit", f"the image claims too many pixels to decode safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        pass
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

    def __init__(self, folder: Path, max_upload: int, fetch_hosts: tuple[str, ...]) -> None:
        self.folder = folder
        self.max_upload = max_upload
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

    def image_bytes(self, url: str) -> bytes:
        """An image named by ``url``: a data: URL, or fetched (guarded)."""
        if url.startswith("data:"):
            head, _, payload = url.partition(",")
            try:
                raw = base64.b64decode(payload, validate=True) if head.endswith(";base64") else payload.encode()
            except (binascii.Error, ValueError) as exc:
                raise InputError("image_url: the data: URL is not valid base64") from exc
            if len(raw) > self.max_upload:
                raise ApiError(413, "limit", "the image is larger than this server's limit")
            return raw
        return fetch_url(url, self.fetch_hosts, self.max_upload)

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
