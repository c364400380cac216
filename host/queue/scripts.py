"""Load the Lua scripts under lua/, resolve their includes, and call them by SHA.

A script may include shared helpers with a line `--- @include "name"`, replaced by the text of
lua/includes/name.lua (each helper once). redis-py's Script objects call EVALSHA and load the
script again on NOSCRIPT (after a Redis restart or SCRIPT FLUSH).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from host.errors import ConfigError

LUA_DIR = Path(__file__).with_name("lua")
_INCLUDE = re.compile(r'^--- @include "([a-z_]+)"\s*$', re.MULTILINE)

#: The atomic operations, one file each.
SCRIPT_NAMES = (
    "enqueue", "claim", "ack", "retry", "release", "extend", "reap", "bury", "promote", "cancel",
    "leader_acquire", "leader_renew", "leader_release",
)  # fmt: skip


@cache
def script_source(name: str) -> str:
    """The text of lua/{name}.lua with its includes inlined."""
    path = LUA_DIR / f"{name}.lua"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read Lua script {path}: {exc}") from exc
    included: set[str] = set()

    def inline(match: re.Match[str]) -> str:
        helper = match.group(1)
        if helper in included:
            return ""
        included.add(helper)
        return (LUA_DIR / "includes" / f"{helper}.lua").read_text()

    return _INCLUDE.sub(inline, text)


class Scripts:
    """The registered scripts for one Redis client."""

    def __init__(self, redis: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    def sha(self, name: str) -> str:
        """The SHA1 of script `name`, for EVALSHA in a pipeline (the caller handles NOSCRIPT)."""
        return str(self._scripts[name].sha)

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script `name` by SHA (loading it if Redis does not know it)."""
        return await self._scripts[name](keys=keys, args=args)
