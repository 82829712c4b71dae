"""``vidrestore serve``: restoration over HTTP on the user's own machine.

The image API follows the hosted one that clients already call (``POST /v1/edit`` with a bearer
token and ``{"operation": "restore" | "upscale", "image_url", "scale"}``, answering
``{"output_url"}``), so a client switches by changing its base URL and key. Videos are jobs
(``/v1/jobs``). A web page at ``/`` uses the same API. See the README's "Run it as a service".
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import queue
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from PIL import Image

from vidrestore.config import Config, apply_overrides
from vidrestore.errors import ConfigError
from vidrestore.models.store import ModelStore
from vidrestore.server.errors import ApiError, error_kind, error_text, install_handlers
from vidrestore.server.guard import Guard
from vidrestore.server.jobs import DONE, Job, JobStore, new_id, request_config
from vidrestore.server.uploads import IMAGE_SUFFIXES, BodyLimits, UploadLimit, Uploads, form_upload, store_upload
from vidrestore.server.worker import Runner

__all__ = ["EventPace", "ServerSettings", "create_app"]

log = logging.getLogger(__name__)


@dataclass
class ServerSettings:
    config: Config
    models: ModelStore
    data: Path
    token: str | None = None
    workers: int = 1
    queue_size: int = 8
    limits: BodyLimits = field(default_factory=BodyLimits)  # request bodies: size, pace, uploads at once
    expire_seconds: float = 24 * 3600
    fetch_hosts: tuple[str, ...] = ()
    public_url: str | None = None  # what output URLs start with (--public-url, else the bound address)
    loopback: bool = True  # bound to a loopback address: Host and Origin are checked (see guard)
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    max_pixels: int = 50_000_000  # an input image's pixels at most
    max_output_pixels: int = 100_000_000  # an output image's pixels (after scale) at most
    allow_downloads: bool = False  # a request may make the server download a model it lacks
    build: Callable[..., Any] | None = None  # the stages' builder (tests inject small models)
    started: float = field(default_factory=time.time)


def create_app(settings: ServerSettings) -> Any:
    """The FastAPI application (uvicorn serves it)."""
    data = settings.data
    files = Uploads(data / "files", settings.limits.max_json * 3 // 4, settings.fetch_hosts)
    jobs_dir = data / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(data / "jobs.sqlite3")
    runner = Runner(
        store, settings.config, settings.models, workers=settings.workers, queue_size=settings.queue_size,
        build=settings.build, allow_downloads=settings.allow_downloads,
    )  # fmt: skip
    stop_sweeping = threading.Event()

    def sweep() -> None:
        """Expire old results forever: an error (a file renamed under it) is logged once, never fatal."""
        said: set[str] = set()
        while not stop_sweeping.wait(min(60.0, settings.expire_seconds / 4)):
            try:
                expire(time.time() - settings.expire_seconds)
            except Exception as exc:  # this thread must outlive any one error, or the disk fills
                if type(exc).__name__ not in said:
                    said.add(type(exc).__name__)
                    log.warning("expiring old files failed once (%s: %s); it goes on", type(exc).__name__, exc)

    def expire(before: float) -> None:
        for job in store.finished_before(before):
            _remove_job(job)
        files.expire(before)

    def _remove_job(job: Job) -> None:
        for p in (job.input, job.output):
            Path(p).unlink(missing_ok=True)
        store.delete(job.id)
        runner.cancels.pop(job.id, None)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        for part in jobs_dir.glob(".*.part-*"):  # a killed run's unfinished output: no job is running yet
            part.unlink(missing_ok=True)
        again = await asyncio.to_thread(runner.requeue_unfinished)  # never waits on the queue
        runner.start()
        if again:
            log.warning("%d job(s) from before the restart are back in the queue", again)
        sweeper = threading.Thread(target=sweep, name="vidrestore-serve-expiry", daemon=True)
        sweeper.start()
        yield
        stop_sweeping.set()
        await asyncio.to_thread(runner.stop)
        store.close()

    # the API's schema lists every route and parameter: with a token it is not served at all (no
    # route of it could check the token), without one it is as open as the rest
    schema = None if settings.token else "/openapi.json"
    app = FastAPI(title="vidrestore", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=schema)

    install_handlers(app)  # errors: always JSON with the CLI's kind, never a traceback

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

    def base_url(request: Request) -> str:
        """Where output URLs point: set by whoever started the server, never read from a request's Host."""
        return (settings.public_url or "").rstrip("/")

    def check_image(src: Path, config: Config, created: bool) -> None:
        """Refuse work too large before any of it starts: the input's pixels, and the output's after
        scale. A refused upload is not kept (if this request stored it)."""
        try:
            _check_pixels(src, config)
        except ApiError:
            if created:
                src.unlink(missing_ok=True)
            raise

    def _check_pixels(src: Path, config: Config) -> None:
        with Image.open(src) as im:
            w, h = im.size
        if w * h > settings.max_pixels:
            raise ApiError(
                413, "limit", f"the image has {w}x{h} pixels; this server takes {settings.max_pixels} at most"
            )
        out = w * h * config.output.scale**2
        if out > settings.max_output_pixels:
            raise ApiError(
                413,
                "limit",
                f"the output would have {out} pixels (x{config.output.scale}); this server makes "
                f"{settings.max_output_pixels} at most",
            )

    async def run_image(src: Path, config: Config, created: bool) -> Path:
        await asyncio.to_thread(check_image, src, config, created)
        out = files.new_path(src.suffix)
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

            return apply_overrides(config, {"detector": {"model": "none"}}, "upscale")
        shown = operation if len(operation) <= 40 else operation[:40] + "..."  # never a client's 10 MB back
        raise ConfigError(f"unknown operation {shown!r}; use 'restore' or 'upscale'")

    # -- the API -------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        html = resources.files("vidrestore.server").joinpath("index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    def trusted(request: Request) -> bool:
        """Whether the request carries the token (there is one, and it is right)."""
        if settings.token is None:
            return False
        try:
            authorize(request)
        except ApiError:
            return False
        return True

    @app.get("/v1/health")
    async def health(request: Request) -> dict[str, Any]:
        state = "starting" if not runner.ready.is_set() else "failed" if runner.load_error else "ready"
        if state == "ready" and (runner.busy or runner.depth):
            state = "busy"
        out: dict[str, Any] = {"status": state, "device": runner.device, "queue_depth": runner.depth}
        if runner.load_error is not None:
            text = error_text(runner.load_error)
            out["error"] = {
                "kind": error_kind(runner.load_error),
                "message": text if trusted(request) else _no_paths(text),
            }
        return out

    @app.post("/v1/files")
    async def upload(request: Request) -> dict[str, str]:
        authorize(request)
        source, _ = await form_upload(request)
        fid, _, _ = await asyncio.to_thread(files.save, source)
        return {"id": fid, "url": f"{base_url(request)}/v1/files/{fid}"}

    @app.get("/v1/files/{fid}")
    async def get_file(fid: str, request: Request) -> FileResponse:
        authorize(request)
        return FileResponse(files.path(fid))

    @app.post("/v1/edit")
    async def edit(request: Request) -> dict[str, str]:
        authorize(request)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "input", "send the body as application/json")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            raise ApiError(400, "input", "the body must be JSON (and not nested hundreds deep)") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "input", "the body must be a JSON object")
        operation = body.get("operation")
        url = body.get("image_url")
        if not isinstance(url, str) or not url:
            raise ApiError(400, "input", "image_url is required")
        params = {k: v for k, v in body.items() if k not in ("operation", "image_url", "scale")}
        config = operation_config(str(operation), body.get("scale"), params)
        why = "image_url must point at an image (videos go to /v1/jobs)"
        own = files.own(url, request.url.netloc)
        if own is not None:  # one of this server's files: used where it is, never read whole or copied
            if own.suffix not in IMAGE_SUFFIXES:
                raise ApiError(400, "input", why)
            src, created = own, False
        else:
            content = await asyncio.to_thread(files.image_file, url)
            with content:
                src, created = await asyncio.to_thread(files.save_for, content, "image", why)
        out = await run_image(src, config, created)
        return {"output_url": f"{base_url(request)}/v1/files/{out.stem}"}

    @app.post("/v1/restore")
    async def restore(request: Request) -> Response:
        authorize(request)
        source, params = await form_upload(request)
        operation = str(params.pop("operation", "restore"))
        config = operation_config(operation, params.pop("scale", None), params)
        why = "/v1/restore takes images; send videos to /v1/jobs"
        src, created = await asyncio.to_thread(files.save_for, source, "image", why)
        out = await run_image(src, config, created)
        media = {
            ".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".tif": "image/tiff",
            ".bmp": "image/bmp",
        }.get(out.suffix, "application/octet-stream")  # fmt: skip
        return FileResponse(out, media_type=media)

    @app.post("/v1/jobs", status_code=202)
    async def create_job(request: Request) -> JSONResponse:
        authorize(request)
        source, params = await form_upload(request)
        request_config(settings.config, params)  # refused now, not when it runs
        jid = new_id()
        job_input, kind, _ = await asyncio.to_thread(store_upload, source, jobs_dir, lambda _: f"{jid}-in")
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
            pace = EventPace()
            while not await request.is_disconnected():
                job = store.get(jid)
                if job is None:
                    yield b"event: deleted\ndata: {}\n\n"
                    return
                now = json.dumps(runner.progress(job).public())
                said = pace.next(job.state, now, time.monotonic())
                if said is not None:
                    yield said
                if job.state in DONE:
                    return
                await asyncio.sleep(0.25)

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
    guarded = Guard(
        app, loopback=settings.loopback, allow_hosts=settings.allow_hosts, allow_origins=settings.allow_origins
    )
    return UploadLimit(guarded, settings.limits)


def _no_paths(text: str) -> str:
    """``text`` with every absolute path shortened to its last part: health answers without a token."""
    return re.sub(r"(?<![\w.])/[^\s;,'\"()]+", lambda m: Path(m.group()).name or "/", text)


class EventPace:
    """When a job's event stream speaks: at once when the job's state changes, otherwise at most once
    a second however often its progress moves (frames done, fps), and a keep-alive comment after 15 s
    of silence so that proxies keep the stream open."""

    def __init__(self, every: float = 1.0, keep_alive: float = 15.0) -> None:
        self.every, self.keep_alive = every, keep_alive
        self.state: str | None = None
        self.last: str | None = None
        self.at = float("-inf")

    def next(self, state: str, body: str, now: float) -> bytes | None:
        """What to send now for a job in ``state`` whose public record is ``body`` (None: nothing)."""
        if state != self.state or (body != self.last and now - self.at >= self.every):
            self.state, self.last, self.at = state, body, now
            return f"data: {body}\n\n".encode()
        if now - self.at >= self.keep_alive:
            self.at = now
            return b": keep-alive\n\n"
        return None
