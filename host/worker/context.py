"""RunContext: what a handler knows about the run it is executing, and what it may ask for."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunContext:
    """Passed to every handler next to the payload."""

    run_id: str  #: the run's id (a UUID string)
    job_type: str  #: the job type's name
    attempt: int  #: 1 for the first attempt
    max_attempts: int  #: attempts allowed before the run is dead
    deadline: float  #: time.monotonic() after which this attempt times out
    tenant_id: str  #: the tenant the run belongs to
    job_id: str | None  #: the job definition that created it, if any
    log: logging.LoggerAdapter[logging.Logger]  #: a logger that tags records with the run id
    _extend: Callable[[float], Awaitable[None]] = field(repr=False, default=None)  # type: ignore[assignment]
    _progress: Callable[[Any], Awaitable[None]] = field(repr=False, default=None)  # type: ignore[assignment]

    async def extend_lease(self, seconds: float) -> None:
        """Keep this run leased for at least `seconds` more, and its timeout with it.

        The worker already extends leases of running handlers on a heartbeat; call this before a
        step you know will be long, to push the run's own deadline back too.
        """
        await self._extend(seconds)

    async def progress(self, report: Any) -> None:
        """Record a JSON-serialisable progress report, shown with the run while it runs."""
        await self._progress(report)
