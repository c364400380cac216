"""PostgreSQL connections and migrations.

Migrations are plain SQL files under migrations/, applied in order of their numeric prefix, each
in its own transaction, and recorded in `jobhost_migrations`. An advisory lock makes concurrent
starts (several workers booting at once) apply each file exactly once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg

from host.errors import MigrationError, ServiceUnavailable

#: What the store functions run on: a pool (one statement, any connection) or a connection.
Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x6A6F62686F7374  # "jobhost"

#: Planner settings for connections that run the hot-path statements. Every hot-path statement
#: joins on a primary key; forbidding hash and merge joins and penalising sequential scans keeps
#: a plan made while the table was young from scanning the whole table once it has grown. With
#: those, the generic plan is the index plan whatever the table's size, so each prepared
#: statement is planned once per connection instead of at every execution (planning the finish
#: statement was about a tenth of its server CPU, 0.4 ms per flush).
HOT_PATH_SETTINGS = {
    "enable_seqscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
    "plan_cache_mode": "force_generic_plan",
}


def migration_files() -> list[tuple[int, str, Path]]:
    """(version, name, path) of every migration, in order; a misnamed file is an error."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _MIGRATION.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path} is not named NNNN_name.sql")
        found.append((int(match.group(1)), match.group(2), path))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version in {MIGRATIONS_DIR}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; returns the names applied."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS jobhost_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM jobhost_migrations")}
        for version, name, path in migration_files():
            if version in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO jobhost_migrations (version, name) VALUES ($1, $2)",
                        version,
                        name,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {path.name} failed: {exc}") from exc
            applied_now.append(f"{version:04d}_{name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool `reset` that sends nothing: asyncpg's default sends `SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release, one more round
    trip (and four statements for the server) per use. asyncpg still rolls back an open
    transaction first. Only for pools whose users leave no session state behind."""


async def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    server_settings: dict[str, str] | None = None,
    stateless: bool = False,
) -> asyncpg.Pool:
    """An asyncpg pool, with a clear error when the server cannot be reached. `stateless`: its
    users never SET, LISTEN, hold cursors or advisory locks, so a released connection needs no
    reset (see keep_session)."""
    settings = {"application_name": "jobhost", **(server_settings or {})}
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            server_settings=settings,
            reset=keep_session if stateless else None,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(f"cannot connect to PostgreSQL at {_safe(url)}: {exc}") from exc
    return pool


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, **kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(f"cannot connect to PostgreSQL at {_safe(url)}: {exc}") from exc


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


async def delete_counted(conn: Conn, table: str, key: str, candidates: str, *args: Any) -> int:
    """Delete the rows of `table` whose `key` is among `candidates` (a SELECT, with a LIMIT when
    the caller deletes in bounded batches, as retention does); returns how many went."""
    deleted: int = await conn.fetchval(
        f"""WITH gone AS (DELETE FROM {table} WHERE {key} IN ({candidates}) RETURNING 1)
            SELECT count(*) FROM gone""",
        *args,
    )
    return deleted
