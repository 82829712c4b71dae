"""Errors as the API shows them: always JSON ``{"error": {"kind", "message"}}``, never a traceback.

The kind is read off the error class (each of vidrestore's errors carries one, beside its exit
code); :data:`STATUS` is the one table from kinds to HTTP statuses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidrestore.errors import VidrestoreError

__all__ = ["STATUS", "ApiError", "error_body", "error_kind", "error_text", "install_handlers"]

log = logging.getLogger(__name__)

STATUS = {"input": 400, "config": 400, "model": 503, "output": 500, "pipeline": 500, "internal": 500}
"""An error's kind -> the HTTP status it is answered with."""

_HTTP_KINDS = {404: "not_found", 405: "config", 408: "limit", 413: "limit"}


class ApiError(Exception):
    """A refusal the API answers with ``status`` and a kind of its own (auth, busy, not_found...)."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}


def error_body(kind: str, message: str) -> bytes:
    return json.dumps({"error": {"kind": kind, "message": message}}).encode()


def error_kind(exc: BaseException) -> str:
    """The kind a client sees: the error class's own (``internal`` for anything unexpected)."""
    return exc.kind if isinstance(exc, VidrestoreError) else "internal"


def error_text(exc: BaseException) -> str:
    """What the CLI would say (one line), never a traceback."""
    if isinstance(exc, VidrestoreError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"unexpected error: {type(exc).__name__}"


def _json(kind: str, message: str, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"kind": kind, "message": message}}, status, headers)


def install_handlers(app: FastAPI) -> None:
    """Every error the app meets, answered as JSON with its kind."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.kind, exc.message, exc.status, exc.headers)

    @app.exception_handler(VidrestoreError)
    async def _vr_error(request: Request, exc: VidrestoreError) -> JSONResponse:
        kind = error_kind(exc)
        return _json(kind, error_text(exc), STATUS.get(kind, 500))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _json("config", f"{where}: {first.get('msg', 'invalid')}", 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_KINDS.get(exc.status_code, "input")
        message = "no such resource" if exc.status_code == 404 else str(exc.detail)
        return _json(kind, message, exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s: %s", type(exc).__name__, exc)
        return _json("internal", f"unexpected error: {type(exc).__name__}", 500)
