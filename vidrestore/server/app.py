"""``vidrestore serve``: restoration over HTTP on the user's own machine.

The image API follows the hosted one that clients already call (``POST /v1/edit`` with a bearer
token and ``{"operation": "restore" | "upscale", "image_url", "scale"}``, answering
``{"output_url"}``), so a client switches by changing its base URL and key. Videos are jobs
(``/v1/jobs``). A web page at ``/`` uses the same API. See the README's "Run it as a service".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import io
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidrestore.config import Config
from vidrestore.errors import ConfigError, InputError, VidrestoreError
from vidrestore.models.store import ModelStore
from vidrestore.server.fetch import fetch_url
from vidrestore.server.jobs import DONE, Job, JobStore, Runner, error_kind, error_text, new_id, request_config

__all__ = ["ServerSettings", "create_app"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
_VIDEO_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "matroska,webm": ".mkv", "avi": ".avi", "mpegts": ".ts"}


@dataclass
class ServerSettings:
    config: Config
    models: ModelStore
    data: Path
    token: str | None = None
    workers: int = 1
    queue_size: int = 8
    max_upload: int = 512 << 20
    expire_seconds: float = 24 * 3600
    fetch_hosts: tuple[str, ...] = ()
    build: Callable[..., Any] | None = None  # the stages' builder (tests inject small models)
    started: float = field(default_factory=time.time)


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}


def _body(kind: str, message: str) -> bytes:
    return json.dumps({"error": {"kind": kind, "message": message}}).encode()


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
        body = _body("limit", f"the upload is larger than this server's limit of {self.limit} bytes")
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
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        pass
    import av
    import av.error

    try:
        with av.open(str(path)) as c:
            if c.streams.video:
                return "video", _VIDEO_FORMATS.get(c.format.name, ".mkv")
    except (av.error.FFmpegError, ValueError, OSError):
        pass
    raise InputError("the upload is neither an image nor a video this server can read")


def _store(source: BinaryIO, folder: Path, name: Callable[[str], str]) -> tuple[Path, str]:
    """Copy ``source`` into ``folder`` in pieces (never whole in memory), hashing it; the file is
    named ``name(sha256) + suffix``, the suffix from its content. Returns (path, kind)."""
    digest = hashlib.sha256()
    tmp = folder / f".upload-{new_id()}.part"
    try:
        with tmp.open("wb") as out:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        kind, suffix = _kind_of(tmp)
        path = folder / f"{name(digest.hexdigest())}{suffix}"
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, kind


def create_app(settings: ServerSettings) -> Any:
    """The FastAPI application (uvicorn serves it)."""
    data = settings.data
    files = data / "files"
    jobs_dir = data / "jobs"
    for d in (files, jobs_dir):
        d.mkdir(parents=True, exist_ok=True)
    store = JobStore(data / "jobs.sqlite3")
    runner = Runner(
        store, settings.config, settings.models, workers=settings.workers, queue_size=settings.queue_size,
        build=settings.build,
    )  # fmt: skip
    stop_sweeping = threading.Event()

    def sweep() -> None:
        while not stop_sweeping.wait(min(60.0, settings.expire_seconds / 4)):
            expire(time.time() - settings.expire_seconds)

    def expire(before: float) -> None:
        for job in store.finished_before(before):
            _remove_job(job)
        for f in files.iterdir():
            if f.stat().st_mtime < before:
                f.unlink(missing_ok=True)

    def _remove_job(job: Job) -> None:
        for p in (job.input, job.output):
            Path(p).unlink(missing_ok=True)
        store.delete(job.id)
        runner.cancels.pop(job.id, None)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        runner.start()
        again = await asyncio.to_thread(runner.requeue_unfinished)
        if again:
            log.warning("%d job(s) from before the restart are back in the queue", again)
        sweeper = threading.Thread(target=sweep, name="vidrestore-serve-expiry", daemon=True)
        sweeper.start()
        yield
        stop_sweeping.set()
        await asyncio.to_thread(runner.stop)
        store.close()

    app = FastAPI(title="vidrestore", lifespan=lifespan, docs_url=None, redoc_url=None)

    # -- errors: always JSON with the CLI's kind, never a traceback ------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"kind": exc.kind, "message": exc.message}}, exc.status, exc.headers)

    @app.exception_handler(VidrestoreError)
    async def _vr_error(request: Request, exc: VidrestoreError) -> JSONResponse:
        kind = error_kind(exc)
        status = {"input": 400, "config": 400, "model": 503, "output": 500}.get(kind, 500)
        return JSONResponse({"error": {"kind": kind, "message": error_text(exc)}}, status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": {"kind": "config", "message": f"{where}: {first.get('msg', 'invalid')}"}}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "config", 413: "limit"}.get(exc.status_code, "input")
        message = "no such resource" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": {"kind": kind, "message": message}}, exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s: %s", type(exc).__name__, exc)
        return JSONResponse({"error": {"kind": "internal", "message": f"unexpected error: {type(exc).__name__}"}}, 500)

    # -- helpers -----------------------------------------------------------------------------

    def authorize(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), settings.token.encode()):
            raise ApiError(
                401, "auth", "missing or wrong token (Authorization: Bearer KEY)", {"WWW-Authenticate": "Bearer"}
            )

    def save_upload(source: BinaryIO) -> tuple[str, Path, str]:
        """Store an upload under its content's hash (never a client's name); returns (id, path, kind)."""
        path, kind = _store(source, files, lambda h: h[:32])
        return path.stem, path, kind

    def file_path(fid: str) -> Path:
        if not fid.isalnum() or len(fid) > 64:
            raise ApiError(404, "not_found", "no such file")
        found = [p for p in files.glob(f"{fid}.*") if not p.name.startswith(".")]
        if not found:
            raise ApiError(404, "not_found", "no such file")
        return found[0]

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def form_upload(request: Request) -> tuple[BinaryIO, dict[str, Any]]:
        """The multipart upload (spooled to disk by the parser past 1 MB) and the other fields."""
        form = await request.form()
        upload = form.get("file") or form.get("image") or form.get("video")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "input", "send the file as a multipart field named 'file'")
        params = {k: _number(v) for k, v in form.items() if k not in ("file", "image", "video") and isinstance(v, str)}
        return upload.file, params

    def image_bytes(url: str, request: Request) -> bytes:
        if url.startswith("data:"):
            head, _, payload = url.partition(",")
            try:
                raw = base64.b64decode(payload, validate=True) if head.endswith(";base64") else payload.encode()
            except (binascii.Error, ValueError) as exc:
                raise InputError("image_url: the data: URL is not valid base64") from exc
            if len(raw) > settings.max_upload:
                raise ApiError(413, "limit", "the image is larger than this server's limit")
            return raw
        parts = urlsplit(url)
        own = parts.netloc in ("", request.url.netloc) and parts.path.startswith("/v1/files/")
        if own:
            return file_path(parts.path.rsplit("/", 1)[-1]).read_bytes()
        return fetch_url(url, settings.fetch_hosts, settings.max_upload)

    async def run_image(src: Path, config: Config) -> Path:
        out = files / f"{new_id()}{src.suffix}"
        try:
            future = runner.submit_image(src, out, config)
        except queue.Full as exc:
            raise ApiError(429, "busy", "the queue is full; try again shortly", {"Retry-After": "5"}) from exc
        await asyncio.wrap_future(future)
        return out

    def operation_config(operation: str, scale: Any, params: dict[str, Any]) -> Config:
        if operation == "restore":
            return request_config(settings.config, {**params, "scale": scale})
        if operation == "upscale":
            config = request_config(settings.config, {**params, "scale": scale or 4})
            from vidrestore.config import apply_overrides

            return apply_overrides(config, {"detector": {"model": "none"}}, "upscale")
        raise ConfigError(f"unknown operation {operation!r}; use 'restore' or 'upscale'")

    # -- the API -------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        html = resources.files("vidrestore.server").joinpath("index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        state = "starting" if not runner.ready.is_set() else "failed" if runner.load_error else "ready"
        if state == "ready" and (runner.busy or runner.depth):
            state = "busy"
        out: dict[str, Any] = {"status": state, "device": runner.device, "queue_depth": runner.depth}
        if runner.load_error is not None:
            out["error"] = {"kind": error_kind(runner.load_error), "message": error_text(runner.load_error)}
        return out

    @app.post("/v1/files")
    async def upload(request: Request) -> dict[str, str]:
        authorize(request)
        source, _ = await form_upload(request)
        fid, _, _ = await asyncio.to_thread(save_upload, source)
        return {"id": fid, "url": f"{base_url(request)}/v1/files/{fid}"}

    @app.get("/v1/files/{fid}")
    async def get_file(fid: str, request: Request) -> FileResponse:
        authorize(request)
        return FileResponse(file_path(fid))

    @app.post("/v1/edit")
    async def edit(request: Request) -> dict[str, str]:
        authorize(request)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "input", "the body must be JSON") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "input", "the body must be a JSON object")
        operation = body.get("operation")
        url = body.get("image_url")
        if not isinstance(url, str) or not url:
            raise ApiError(400, "input", "image_url is required")
        params = {k: v for k, v in body.items() if k not in ("operation", "image_url", "scale")}
        config = operation_config(str(operation), body.get("scale"), params)
        content = await asyncio.to_thread(image_bytes, url, request)
        _, src, kind = await asyncio.to_thread(save_upload, io.BytesIO(content))
        if kind != "image":
            raise ApiError(400, "input", "image_url must point at an image (videos go to /v1/jobs)")
        out = await run_image(src, config)
        return {"output_url": f"{base_url(request)}/v1/files/{out.stem}"}

    @app.post("/v1/restore")
    async def restore(request: Request) -> Response:
        authorize(request)
        source, params = await form_upload(request)
        operation = str(params.pop("operation", "restore"))
        config = operation_config(operation, params.pop("scale", None), params)
        _, src, kind = await asyncio.to_thread(save_upload, source)
        if kind != "image":
            raise ApiError(400, "input", "/v1/restore takes images; send videos to /v1/jobs")
        out = await run_image(src, config)
        media = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}.get(
            out.suffix, "application/octet-stream"
        )
        return FileResponse(out, media_type=media)

    @app.post("/v1/jobs", status_code=202)
    async def create_job(request: Request) -> JSONResponse:
        authorize(request)
        source, params = await form_upload(request)
        request_config(settings.config, params)  # refused now, not when it runs
        jid = new_id()
        job_input, kind = await asyncio.to_thread(_store, source, jobs_dir, lambda _: f"{jid}-in")
        if kind != "video":
            job_input.unlink(missing_ok=True)
            raise ApiError(400, "input", "/v1/jobs takes videos; send images to /v1/restore or /v1/edit")
        output = jobs_dir / f"{jid}-out{job_input.suffix}"
        job = Job(jid, "queued", time.time(), str(job_input), str(output), params)
        try:
            runner.submit_job(job)
        except queue.Full as exc:
            job_input.unlink(missing_ok=True)
            raise ApiError(429, "busy", "the queue is full; try again shortly", {"Retry-After": "10"}) from exc
        return JSONResponse(job.public(), 202, {"Location": f"/v1/jobs/{jid}"})

    def job_or_404(jid: str) -> Job:
        job = store.get(jid)
        if job is None:
            raise ApiError(404, "not_found", "no such job")
        return runner.progress(job)

    @app.get("/v1/jobs/{jid}")
    async def get_job(jid: str, request: Request) -> dict[str, Any]:
        authorize(request)
        return job_or_404(jid).public()

    @app.get("/v1/jobs/{jid}/events")
    async def job_events(jid: str, request: Request) -> StreamingResponse:
        authorize(request)
        job_or_404(jid)

        async def events() -> AsyncIterator[bytes]:
            last = None
            quiet = 0.0
            while not await request.is_disconnected():
                job = store.get(jid)
                if job is None:
                    yield b"event: deleted\ndata: {}\n\n"
                    return
                now = json.dumps(runner.progress(job).public())
                if now != last:
                    yield f"data: {now}\n\n".encode()
                    last, quiet = now, 0.0
                elif quiet > 15:
                    yield b": keep-alive\n\n"
                    quiet = 0.0
                if job.state in DONE:
                    return
                await asyncio.sleep(0.25)
                quiet += 0.25

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/jobs/{jid}/cancel")
    async def cancel_job(jid: str, request: Request) -> dict[str, Any]:
        authorize(request)
        job_or_404(jid)
        runner.cancel(jid)
        return job_or_404(jid).public()

    @app.get("/v1/jobs/{jid}/result")
    async def job_result(jid: str, request: Request) -> FileResponse:
        authorize(request)
        job = job_or_404(jid)
        if job.state != "succeeded":
            raise ApiError(409, "not_ready", f"the job is {job.state}")
        return FileResponse(job.output, filename=f"restored{Path(job.output).suffix}")

    @app.delete("/v1/jobs/{jid}", status_code=204, response_class=Response)
    async def delete_job(jid: str, request: Request) -> Response:
        authorize(request)
        job = job_or_404(jid)
        runner.cancel(jid)
        deadline = time.monotonic() + 30
        while runner.running.get(jid) is not None and time.monotonic() < deadline:  # bounded wait for it to stop
            await asyncio.sleep(0.1)
        await asyncio.to_thread(_remove_job, job)
        return Response(status_code=204)

    app.state.runner = runner
    app.state.expire = expire
    return UploadLimit(app, settings.max_upload)


def _number(value: str) -> Any:
    """A form field as the number it spells, else the text."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value
