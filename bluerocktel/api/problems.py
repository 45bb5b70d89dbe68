"""Errors become HTTP responses here, and only here: RFC 9457 ``application/problem+json``.

``install_problem_handlers(app)`` maps refused requests to problems: :class:`AuthError` → 401
(with ``WWW-Authenticate: Bearer``), :class:`ForbiddenError` → 403, :class:`NotFoundError` →
404, :class:`ConflictError` → 409, :class:`RateLimitedError` → 429 (``Retry-After``), other :class:`UserFacingError` → 400, validation errors → 422, and Starlette's own
HTTP errors (unknown route 404, 405, ...) keep their status. A bug is a 500 problem without
details; the traceback goes to the log.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bluerocktel.api.ratelimit import RateLimitedError
from bluerocktel.errors import ConflictError, NotFoundError, UserFacingError
from bluerocktel.security import AuthError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ForbiddenError(PermissionError):
    """The caller is known but their role may not do this."""


def problem(request: Request, status: int, detail: str | None = None, headers: dict | None = None,
            **extra) -> JSONResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    if detail:
        body["detail"] = detail
    body["instance"] = request.url.path
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError):
        return problem(request, 401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="bluerocktel"'})

    @app.exception_handler(RateLimitedError)
    async def _limited(request: Request, exc: RateLimitedError):
        return problem(request, 429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(ForbiddenError)
    async def _forbidden(request: Request, exc: ForbiddenError):
        return problem(request, 403, str(exc))

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError):
        return problem(request, 404, str(exc))

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError):
        return problem(request, 409, str(exc))

    @app.exception_handler(UserFacingError)
    async def _refused(request: Request, exc: UserFacingError):
        return problem(request, 400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", "")} for err in exc.errors()]
        return problem(request, 422, "the request parameters are invalid", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        plain = isinstance(exc.detail, str) and exc.detail != HTTPStatus(exc.status_code).phrase
        detail = exc.detail if plain else None
        return problem(request, exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(request, 500, "internal error; the details are in the server log")
