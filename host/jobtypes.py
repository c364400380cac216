"""JobType: what a plugin provides, and the resolved form the host runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.policy import Policy

if TYPE_CHECKING:
    from host.worker.context import RunContext

#: A handler takes the payload and a RunContext and returns a JSON-serialisable result,
#: either directly (run in a thread) or as an awaitable (run on the event loop).
Handler = Callable[[dict[str, Any], "RunContext"], Any | Awaitable[Any]]


class JobType:
    """A job type as a plugin declares it: `JobType(name=..., handler=..., schema=..., **policy)`.

    `schema` is a JSON Schema as a dict, or a path to a JSON file (relative paths are resolved
    against the plugin module's folder). Policy keyword arguments are those of host.policy.Policy.
    """

    def __init__(
        self,
        name: str,
        handler: Handler,
        schema: Mapping[str, Any] | str | Path,
        *,
        description: str = "",
        **policy: Any,
    ) -> None:
        self.name = name
        self.handler = handler
        self.schema = schema
        self.description = description
        self.policy_overrides: dict[str, Any] = dict(policy)

    def __repr__(self) -> str:
        return f"JobType(name={self.name!r})"


@dataclass(frozen=True)
class ResolvedType:
    """A job type after discovery: schema loaded and checked, policy merged."""

    name: str
    handler: Handler
    schema: Mapping[str, Any]
    policy: Policy
    plugin: str  #: the plugin (module or entry point) that provided it
    source: str  #: the file the handler or schema came from, for messages
    description: str = ""
    is_async: bool = field(default=False)
