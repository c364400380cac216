"""Per-trigger rate limits: one token bucket per trigger in Redis (lua/hook_bucket.lua), on the
Redis clock, so every API process takes from the same bucket."""

from __future__ import annotations

from redis.asyncio import Redis

from host.queue.keys import Keys
from host.queue.scripts import script_source


class HookBuckets:
    """Take tokens from triggers' buckets."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self.key = Keys(namespace).hook_buckets
        self._script = redis.register_script(script_source("hook_bucket"))

    async def take(self, trigger_id: str, rate_per_s: float, burst: int | None) -> float:
        """0 when a token was granted, else seconds until one will be."""
        size = burst or max(1, int(rate_per_s))
        granted, wait_ms = await self._script(
            keys=[self.key], args=[trigger_id, repr(float(rate_per_s)), size]
        )
        return 0.0 if int(granted) == 1 else max(int(wait_ms), 1) / 1000
