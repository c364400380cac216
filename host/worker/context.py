"""RunContext: what a handler knows about the run it is executing, and what it may ask for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

_log = logging.getLogger("jobhost.run")


class RunLog(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter whose records carry the run's id, type and attempt (JSON logs show
    them as fields)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs.setdefault("extra", {}).update(self.extra or {})
        return msg, kwargs


class Deadline(Protocol):
    """The attempt's timeout as a handler may push it back (asyncio.Timeout is one)."""

    def when(self) -> float | None: ...

    def reschedule(self, when: float | None) -> None: ...


class RunContext:
    """Passed to every handler next to the payload.

    Attributes: `run_id` (a UUID string), `job_type`, `attempt` (1 for the first),
    `max_attempts`, `deadline` (event-loop time after which this attempt times out),
    `tenant_id`, `job_id` (the job definition that created the run, if any) and `log`.
    """

    __slots__ = (
        "_extend", "_log", "_progress", "_timeout", "attempt", "deadline", "job_id",
        "job_type", "max_attempts", "run_id", "tenant_id",
    )  # fmt: skip

    def __init__(
        self,
        run_id: str,
        job_type: str,
        attempt: int,
        max_attempts: int,
        deadline: float,
        tenant_id: str = "default",
        job_id: str | None = None,
        *,
        extend: Callable[[str, float], Awaitable[None]] | None = None,
        progress: Callable[[str, Any], Awaitable[None]] | None = None,
        timeout: Deadline | None = None,
    ) -> None:
        self.run_id = run_id
        self.job_type = job_type
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.deadline = deadline
        self.tenant_id = tenant_id
        self.job_id = job_id
        self._extend = extend
        self._progress = progress
        self._timeout = timeout
        self._log: RunLog | None = None

    @property
    def log(self) -> RunLog:
        """A logger that tags records with the run id, job type and attempt."""
        if self._log is None:
            extra = {"run_id": self.run_id, "job_type": self.job_type, "attempt": self.attempt}
            self._log = RunLog(_log, extra)
        return self._log

    async def extend_lease(self, seconds: float) -> None:
        """Keep this run leased, and its timeout pushed back, for at least `seconds` more.

        The worker already extends leases of running handlers on a heartbeat; call this before a
        step you know will be long, to push the attempt's own deadline back too.
        """
        if self._timeout is not None:
            new_deadline = asyncio.get_running_loop().time() + seconds
            current = self._timeout.when()
            if current is None or new_deadline > current:
                self._timeout.reschedule(new_deadline)
                self.deadline = new_deadline
        if self._extend is not None:
            await self._extend(self.run_id, seconds)

    async def progress(self, report: Any) -> None:
        """Record a JSON-serialisable progress report, shown with the run while it runs."""
        if self._progress is not None:
            await self._progress(self.run_id, report)

    def __repr__(self) -> str:
        return f"RunContext({self.run_id!r}, {self.job_type!r}, attempt={self.attempt})"
