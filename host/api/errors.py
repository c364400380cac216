"""The one error middleware: every failure leaves as the one error shape,

    {"error": {"code": "...", "message": "...", "details": [{"path": "/field", "message": "..."}]}}

with its status from one table of host.errors classes. Never a traceback: unexpected errors are
logged here and answered 500 with a generic message.
"""

from __future__ import annotations

import logging
import math

import asyncpg
import orjson
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from host import errors as e
from host.api.routes import Handler

log = logging.getLogger("jobhost.api")

#: host.errors class -> (status, code); the first match in order wins (leaves before roots).
STATUSES: tuple[tuple[type[e.JobhostError], int, str], ...] = (
    (e.BadRequest, 400, "bad_request"),
    (e.Unauthorized, 401, "unauthorized"),
    (e.Forbidden, 403, "forbidden"),
    (e.NotFound, 404, "not_found"),
    (e.Conflict, 409, "conflict"),
    (e.UnsupportedMediaType, 415, "unsupported_media_type"),
    (e.ValidationFailed, 422, "validation_failed"),
    (e.UnknownJobType, 422, "unknown_job_type"),
    (e.RateLimited, 429, "rate_limited"),
    (e.ServiceUnavailable, 503, "service_unavailable"),
)

#: Driver errors that mean PostgreSQL or Redis is unreachable right now: 503, not 500.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
    RedisConnectionError,
    RedisTimeoutError,
)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_body(code: str, message: str, details: list[dict[str, str]] | None = None) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "details": details or []}})


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(code, message, details),
        content_type="application/json",
        headers=headers,
    )


def from_jobhost_error(exc: e.JobhostError) -> web.Response:
    for cls, status, code in STATUSES:
        if isinstance(exc, cls):
            return error_response(status, code, exc.message, _details(exc), _headers(exc))
    log.error("unmapped %s: %s", type(exc).__name__, exc.message)
    return error_response(500, "internal_error", "internal error")


def _details(exc: e.JobhostError) -> list[dict[str, str]]:
    if isinstance(exc, e.ValidationFailed | e.BadRequest):
        return [{"path": f.path, "message": f.message} for f in exc.errors]
    if isinstance(exc, e.UnknownJobType):
        return [{"path": "/type", "message": exc.message}]
    return []


def retry_after(seconds: float) -> dict[str, str]:
    """The Retry-After header of a 429: whole seconds, at least 1."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _headers(exc: e.JobhostError) -> dict[str, str] | None:
    if isinstance(exc, e.RateLimited):
        return retry_after(exc.retry_after_s)
    if isinstance(exc, e.Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    return None


def from_http_exception(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
    message = exc.reason if exc.status != 413 else "the request body is too large"
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(exc.status, code, message, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except e.JobhostError as exc:
        return from_jobhost_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http_exception(exc)
    except asyncpg.DataError as exc:  # a value PostgreSQL cannot take (NUL in a query string)
        log.info("%s %s: %s", request.method, request.path, exc)
        return error_response(400, "bad_request", "a value in the request cannot be stored")
    except UNAVAILABLE as exc:
        log.warning("%s %s: service unavailable: %s", request.method, request.path, exc)
        return error_response(503, "service_unavailable", "PostgreSQL or Redis is unavailable")
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal_error", "internal error")
