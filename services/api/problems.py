"""Errors as `application/problem+json` (RFC 9457): `{"type","title","status","detail"}`,
plus `errors` naming every bad field on 422. Never a stack trace: an unexpected error
is logged here and answered 500 with no detail."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.store.pool import DATABASE_UNAVAILABLE

from .answers import Json

log = logging.getLogger("unifier.api")

PROBLEM = "application/problem+json"

_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
    406: "Not acceptable", 409: "Conflict", 410: "Gone", 413: "Content too large", 415: "Unsupported media type",
    422: "Unprocessable content", 429: "Too many requests", 500: "Internal server error", 502: "Bad gateway",
    503: "Service unavailable", 504: "Gateway timeout",
}


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self, status: int, detail: str, *, errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers, self.extra = status, detail, errors, headers, extra


def problem_response(
    status: int, detail: str, *, errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return Json(body, status_code=status, headers=headers, media_type=PROBLEM)


def field_errors(errors: Any) -> list[dict[str, Any]]:
    """pydantic's errors as `{"field": "body.profile.email", "message": …}`, every one."""
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "[key]"]
        out.append({"field": ".".join(loc), "message": str(e.get("msg", "invalid"))})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, errors=exc.errors, headers=exc.headers, extra=exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc.errors())
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
        return problem_response(422, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
        return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, (*DATABASE_UNAVAILABLE, KafkaError)):
            log.warning("%s %s: %s unavailable (%s)", request.method, request.url.path,
                        "broker" if isinstance(exc, KafkaError) else "database", type(exc).__name__)
            return problem_response(503, "the database or the broker is unavailable; retry later",
                                    headers={"Retry-After": "1"})
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(500, "an unexpected error occurred; it has been logged")
