"""The `example` plugin: provides the job type `example.greet`.

The host imports this module through the `jobhost.plugins` entry point (see pyproject.toml) and
calls `jobhost_job_types()` once at start-up.
"""

from __future__ import annotations

from typing import Any

from host import JobType, RunContext, hookimpl


async def greet(payload: dict[str, Any], ctx: RunContext) -> dict[str, str]:
    """Return a greeting for `name`, in capitals when `shout` is true.

    The payload has already been validated against greet.schema.json, so `name` is a string.
    """
    greeting = f"Hello, {payload['name']}!"
    if payload.get("shout", False):
        greeting = greeting.upper()
    return {"greeting": greeting}


@hookimpl
def jobhost_job_types() -> list[JobType]:
    return [
        JobType(
            "example.greet",
            greet,
            # A relative path is resolved against this module's folder, so the schema ships as
            # package data next to it and works wherever the package is installed.
            "greet.schema.json",
            description="Greets someone by name.",
            # The plugin's default policy; plugins.toml [types."example.greet"] can override it.
            max_attempts=2,
            priority=3,
        )
    ]
