"""Builds what every role shares: PostgreSQL pools, the Redis client, the queue and the registry,
as one async context manager that closes them in order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from host.config import Settings, load_plugins_config
from host.errors import ConfigError, ServiceUnavailable
from host.queue.queue import Queue
from host.registry import Registry, load_registry
from host.store.db import HOT_PATH_SETTINGS, connect, create_pool, migrate

#: Eviction policies that could silently drop queued runs.
_EVICTING = {"allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu"}
_EVICTING |= {"volatile-random", "volatile-ttl"}


@dataclass
class Services:
    settings: Settings
    registry: Registry
    pool: asyncpg.Pool  #: general queries (lookups, listings, inserts)
    #: the hot path's statements only (run inserts, batched finishes, start marks), with plans
    #: pinned to index lookups; no session state, so connections go back without a reset
    hot_pool: asyncpg.Pool
    redis: Redis
    queue: Queue


def resolve_urls(settings: Settings) -> Settings:
    """Fill in missing URLs from embedded servers started by `jobhost dev` in the state folder."""
    if settings.database_url and settings.redis_url:
        return settings
    from host.embedded import discover

    found = discover(settings.state_dir)
    if found is None:
        raise ConfigError(
            "no JOBHOST_DATABASE_URL / JOBHOST_REDIS_URL set and no `jobhost dev` servers "
            f"running from {settings.state_dir.resolve()}: start `jobhost dev` in this folder, "
            "or set both URLs"
        )
    return settings.with_urls(
        settings.database_url or found.database_url, settings.redis_url or found.redis_url
    )


async def open_redis(url: str) -> Redis:
    """A Redis client that has answered PING and whose eviction policy cannot drop runs."""
    # The socket timeout must exceed the longest BLPOP an idle worker makes (IDLE_WAIT_S).
    redis = Redis.from_url(url, decode_responses=False, health_check_interval=30, socket_timeout=15)
    try:
        await redis.ping()
        policy = await _eviction_policy(redis)
    except RedisError as exc:
        await redis.aclose()
        raise ServiceUnavailable(f"cannot connect to Redis at {url}: {exc}") from exc
    if policy in _EVICTING:
        await redis.aclose()
        raise ConfigError(
            f"Redis at {url} has maxmemory-policy {policy}, which can evict queued runs; "
            "set it to noeviction"
        )
    return redis


async def _eviction_policy(redis: Redis) -> str | None:
    try:
        reply = await redis.config_get("maxmemory-policy")
    except ResponseError:  # CONFIG disabled (managed Redis): cannot check
        return None
    for key, value in dict(reply).items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name == "maxmemory-policy":
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


async def apply_migrations(database_url: str) -> list[str]:
    conn = await connect(database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    registry: Registry | None = None,
    *,
    run_migrations: bool = True,
) -> AsyncIterator[Services]:
    """Everything a role needs, opened in order and closed in reverse."""
    settings = resolve_urls(settings)
    assert settings.database_url and settings.redis_url
    if registry is None:
        registry = load_registry(load_plugins_config(settings.plugins_file))
    if run_migrations:
        await apply_migrations(settings.database_url)
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(settings.database_url, max_size=settings.pool_size)
        stack.push_async_callback(pool.close)
        hot_pool = await create_pool(
            settings.database_url,
            min_size=1,
            max_size=max(2, settings.pool_size // 2),
            server_settings=HOT_PATH_SETTINGS,
            stateless=True,
        )
        stack.push_async_callback(hot_pool.close)
        redis = await open_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        queue = Queue(redis, settings.namespace)
        yield Services(settings, registry, pool, hot_pool, redis, queue)
