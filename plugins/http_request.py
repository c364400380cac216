"""`http.request`: one HTTP call with aiohttp, succeeding on the expected status.

A connection error, a timeout or a 5xx/429 is retried per policy (honouring Retry-After); any
other unexpected status fails permanently, since repeating the same request will not change it.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from host import JobType, PermanentFailure, Retry, RunContext, hookimpl
from plugins._schemas import schema_path

#: Response bodies are kept in the result up to this many characters.
BODY_EXCERPT = 2000
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


async def handle(payload: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    method = payload.get("method", "GET")
    expected = payload.get("expected_status", [200, 201, 202, 204])
    expected = [expected] if isinstance(expected, int) else expected
    timeout = aiohttp.ClientTimeout(total=payload.get("timeout_s", 30))
    body = payload.get("body")
    kwargs: dict[str, Any] = {"json": body} if isinstance(body, dict | list) else {"data": body}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                method,
                payload["url"],
                headers=payload.get("headers", {}),
                allow_redirects=payload.get("follow_redirects", False),
                **kwargs,
            ) as response,
        ):
            text = await response.text(errors="replace")
            status = response.status
            retry_after = response.headers.get("Retry-After")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Retry(f"{method} {payload['url']} failed: {type(exc).__name__}: {exc}") from exc
    if status in expected:
        return {"status": status, "body": text[:BODY_EXCERPT]}
    message = f"{method} {payload['url']} answered {status}, expected {expected}"
    if status in RETRYABLE:
        raise Retry(message, delay=_seconds(retry_after))
    raise PermanentFailure(message)


def _seconds(retry_after: str | None) -> float | None:
    try:
        return float(retry_after) if retry_after is not None else None
    except ValueError:
        return None


@hookimpl
def jobhost_job_types() -> list[JobType]:
    return [
        JobType(
            "http.request",
            handle,
            schema_path("http.request"),
            description="Makes one HTTP request and checks its status.",
            max_attempts=5,
            timeout_s=120,
        )
    ]
