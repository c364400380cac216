"""The exception hierarchy: one root, one leaf per way things go wrong.

Each leaf's docstring is its default message. Details live in attributes so callers (the CLI,
later the API) can render them without parsing strings.
"""

from __future__ import annotations

from dataclasses import dataclass


class JobhostError(Exception):
    """Raised when jobhost cannot do what was asked."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(JobhostError):
    """Raised when settings or plugins.toml are invalid."""


class PluginError(JobhostError):
    """Raised when a plugin cannot be loaded or provides an invalid job type."""

    def __init__(self, message: str, *, plugin: str = "", file: str = "") -> None:
        where = ", ".join(part for part in (f"plugin {plugin}" if plugin else "", file) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.plugin = plugin
        self.file = file


class SchemaError(PluginError):
    """Raised when a job type's JSON Schema is unreadable or not a valid schema."""


class UnknownJobType(JobhostError):
    """Raised when a run names a job type that no plugin provides."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown job type {name!r}")
        self.name = name


@dataclass(frozen=True)
class FieldError:
    """One failing field: a JSON pointer into the document and what is wrong there."""

    path: str
    message: str


class ValidationFailed(JobhostError):
    """Raised when a payload or request does not match its schema."""

    def __init__(self, what: str, errors: list[FieldError]) -> None:
        lines = "; ".join(f"{e.path or '/'}: {e.message}" for e in errors)
        super().__init__(f"{what} is invalid: {lines}")
        self.what = what
        self.errors = errors


class NotFound(JobhostError):
    """Raised when an API path or resource does not exist (or belongs to another tenant)."""


class Conflict(JobhostError):
    """Raised when a resource's state forbids the operation (e.g. retrying a run not dead)."""


class RunNotFound(NotFound):
    """Raised when a run id is not known."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} not found")
        self.run_id = run_id


class ServiceUnavailable(JobhostError):
    """Raised when PostgreSQL or Redis cannot be reached or answered with an error."""


class EmbeddedServerError(ServiceUnavailable):
    """Raised when an embedded PostgreSQL or Redis server cannot be found or started."""


class MigrationError(JobhostError):
    """Raised when a schema migration file cannot be applied."""


class Retry(JobhostError):
    """Raised by a handler to ask for another attempt, after `delay` seconds if given.

    This is control flow, not a failure of the host: it is recorded, not logged as an error.
    """

    def __init__(self, message: str | None = None, *, delay: float | None = None) -> None:
        super().__init__(message or "handler asked for a retry")
        self.delay = delay


class PermanentFailure(JobhostError):
    """Raised by a handler when retrying cannot help: the run is dead-lettered at once."""


class JobNotFound(NotFound):
    """Raised when a job definition name is not known."""

    def __init__(self, name: str) -> None:
        super().__init__(f"job {name!r} not found")
        self.name = name


class JobExists(Conflict):
    """Raised when a job definition with the same name already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"job {name!r} already exists")
        self.name = name


class StaleLeader(JobhostError):
    """Raised when a scheduler leader's write is rejected because a newer leader epoch exists."""

    def __init__(self, epoch: int, current: int) -> None:
        super().__init__(f"leader epoch {epoch} is superseded by epoch {current}")
        self.epoch = epoch
        self.current = current


class BadRequest(JobhostError):
    """Raised when a request cannot be read: malformed JSON, a bad cursor or query parameter."""

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class UnsupportedMediaType(JobhostError):
    """Raised when a request body is not sent as application/json."""


class Unauthorized(JobhostError):
    """Raised when a request carries no API key, or one that is unknown or revoked."""


class Forbidden(JobhostError):
    """Raised when an API key lacks the scope an operation needs."""


class RateLimited(JobhostError):
    """Raised when a caller is over its request rate; `retry_after_s` says when to try again."""

    def __init__(self, message: str | None = None, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
