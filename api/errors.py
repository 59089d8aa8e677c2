"""Every error as OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the right status.

The official `openai` client turns these into its exception classes, and native clients get the same shape.
"""

from __future__ import annotations

import logging
import os
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from loracle.agent.errors import AgentError, Cancelled, DatabaseUnavailable, InvalidInput, NotFound, UnstorableValue

log = logging.getLogger("loracle.api")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
         405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error", 422: "invalid_request_error",
         429: "rate_limit_error", 499: "cancelled", 503: "service_unavailable"}


class ApiError(Exception):
    """An error a client should see as is."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers or {}


_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\"`<>|,;()\[\]{}]+")


def hide_paths(text: str) -> str:
    """The text with absolute paths of this machine (their first folder exists here) as '<path>': the last guard,
    since a message should not hold one in the first place. API routes (/v1/...) are not folders here."""
    def hide(match: re.Match) -> str:
        first = match.group(0).split("/")[1]
        return "<path>" if first and os.path.isdir("/" + first) else match.group(0)

    return _PATH.sub(hide, text)


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": hide_paths(message), "type": TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


def error_response(status: int, message: str, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param), status_code=status, headers=headers)


def database_message(exc: BaseException) -> str:
    return f"the database is unavailable, try again shortly ({exc})"


def from_agent(error: AgentError, *, invalid_code: str = "invalid_value") -> ApiError:
    """The answer to an agent error; `invalid_code` is the code invalid input gets where it happened."""
    if isinstance(error, DatabaseUnavailable):
        return ApiError(503, database_message(error), code="database_unavailable", headers={"Retry-After": "5"})
    if isinstance(error, Cancelled):
        return ApiError(499, f"the run was cancelled ({error})", code="cancelled")
    if isinstance(error, NotFound):
        return ApiError(404, str(error), code="not_found")
    if isinstance(error, UnstorableValue) and invalid_code == "invalid_value":
        # Input PostgreSQL cannot store (NUL bytes, out-of-range numbers) is the client's to fix.
        return ApiError(400, f"the request holds a value the database cannot store: {error}", code=invalid_code)
    if isinstance(error, InvalidInput):
        return ApiError(400, str(error), code=invalid_code)
    return ApiError(500, f"{type(error).__name__}: {error}"[:500], code="internal_error")


def install_handlers(app: FastAPI, on_database_error) -> None:
    """Map validation, HTTP, agent and unexpected errors to the one shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        return error_response(400, f"{param + ': ' if param else ''}{first.get('msg', 'invalid value')}",
                              "invalid_value", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), None, None, getattr(exc, "headers", None))

    @app.exception_handler(AgentError)
    async def _agent(request: Request, exc: AgentError) -> JSONResponse:
        if isinstance(exc, DatabaseUnavailable):
            on_database_error()
        error = from_agent(exc)
        return error_response(error.status, error.message, error.code, error.param, error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log", "internal_error")
