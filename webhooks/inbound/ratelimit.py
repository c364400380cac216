"""Per-trigger rate limits: one token bucket per trigger in Redis (lua/hook_bucket.lua), on the
Redis clock, so every API process takes from the same bucket.

A second bucket per trigger bounds how many refused deliveries are logged: anyone who knows a
hook's URL can send unsigned requests, and each logged one is a row in `trigger_deliveries`.
Past that bucket a refusal is still answered but only counted (shown on the trigger)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from host.queue.keys import Keys
from host.queue.scripts import script_source

#: The refusal log's bucket, per trigger: a burst of rows, then one row per 5 s.
REFUSAL_LOG_RATE_PER_S = 0.2
REFUSAL_LOG_BURST = 20


class HookBuckets:
    """Take tokens from triggers' buckets."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        keys = Keys(namespace)
        self.key, self.unlogged_key = keys.hook_buckets, keys.hook_unlogged
        self._redis = redis
        self._script = redis.register_script(script_source("hook_bucket"))

    async def take(self, trigger_id: str, rate_per_s: float, burst: int | None) -> float:
        """0 when a token was granted, else seconds until one will be."""
        size = burst or max(1, int(rate_per_s))
        return await self._take(trigger_id, rate_per_s, size)

    async def may_log_refusal(self, trigger_id: str) -> bool:
        """True when a refusal of this trigger may be logged; else it is counted as unlogged."""
        field = f"{trigger_id}|refused"
        try:
            if await self._take(field, REFUSAL_LOG_RATE_PER_S, REFUSAL_LOG_BURST) == 0:
                return True
            await self._redis.hincrby(self.unlogged_key, trigger_id, 1)
        except RedisError:  # the caller still gets its 401/413 and the refusal its row
            return True
        return False

    async def unlogged(self, trigger_ids: list[str]) -> list[int | None]:
        """How many of each trigger's refusals were answered but not logged; None when Redis
        cannot say (the trigger is still shown)."""
        if not trigger_ids:
            return []
        try:
            counts = await self._redis.hmget(self.unlogged_key, trigger_ids)
        except RedisError:
            return [None] * len(trigger_ids)
        return [int(c or 0) for c in counts]

    async def _take(self, field: str, rate_per_s: float, size: int) -> float:
        granted, wait_ms = await self._script(
            keys=[self.key], args=[field, repr(float(rate_per_s)), size]
        )
        return 0.0 if int(granted) == 1 else max(int(wait_ms), 1) / 1000
