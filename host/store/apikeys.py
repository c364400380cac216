"""API keys in PostgreSQL: create (returns the key once), find by hash, list, revoke, touch.

A key is `jh_` + 43 url-safe characters (256 random bits). Only its SHA-256 is stored: a key
that random cannot be guessed from its hash, and finding it by an indexed hash equality means
no request compares secrets byte by byte against stored values.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from host.errors import FieldError, ValidationFailed
from host.store.db import Conn

#: Scopes in order of power: each implies those before it.
SCOPES = ("read", "write", "admin")
KEY_PREFIX = "jh_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never the secret itself)."""

    id: str
    tenant_id: str
    name: str
    prefix: str  #: first characters of the key, to recognise it
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def allows(self, scope: str) -> bool:
        """Whether the key may act with `scope` (admin implies write implies read)."""
        rank = SCOPES.index(scope)
        return any(SCOPES.index(s) >= rank for s in self.scopes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "tenant": self.tenant_id, "name": self.name, "prefix": self.prefix,
            "scopes": list(self.scopes), "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at), "revoked_at": _iso(self.revoked_at),
        }  # fmt: skip


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


_COLUMNS = "id, tenant_id, name, prefix, scopes, created_at, last_used_at, revoked_at"


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=str(row["id"]), tenant_id=row["tenant_id"], name=row["name"], prefix=row["prefix"],
        scopes=tuple(row["scopes"]), created_at=row["created_at"],
        last_used_at=row["last_used_at"], revoked_at=row["revoked_at"],
    )  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def create_key(
    conn: Conn, tenant_id: str, scopes: Sequence[str], name: str = ""
) -> tuple[str, ApiKey]:
    """Store a new key; returns (the key, shown once, and its record)."""
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes or not tenant_id:
        errors = [FieldError("/scopes", f"unknown scope {s!r}") for s in bad]
        if not scopes:
            errors.append(FieldError("/scopes", f"give at least one of {', '.join(SCOPES)}"))
        if not tenant_id:
            errors.append(FieldError("/tenant", "must not be empty"))
        raise ValidationFailed("API key", errors)
    key = new_key()
    row = await conn.fetchrow(
        f"""INSERT INTO api_keys (tenant_id, name, prefix, key_hash, scopes)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}""",
        tenant_id,
        name,
        key[: len(KEY_PREFIX) + 6],
        hash_key(key),
        sorted(set(scopes), key=SCOPES.index),
    )
    assert row is not None
    return key, _key(row)


async def find_active(conn: Conn, key: str) -> ApiKey | None:
    """The unrevoked key with this secret, or None."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(key),
    )
    return _key(row) if row else None


async def list_keys(conn: Conn, tenant_id: str | None = None) -> list[ApiKey]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR tenant_id = $1)
            ORDER BY created_at, id""",
        tenant_id,
    )
    return [_key(row) for row in rows]


async def revoke(conn: Conn, key_id: str) -> ApiKey | None:
    """Revoke a key by id; None when no such key. Revoking twice keeps the first time."""
    try:
        ident = uuid.UUID(key_id)
    except ValueError:
        return None
    row = await conn.fetchrow(
        f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
            WHERE id = $1 RETURNING {_COLUMNS}""",
        ident,
    )
    return _key(row) if row else None


async def touch(conn: Conn, key_ids: Sequence[str]) -> None:
    """Record that these keys were used now."""
    if key_ids:
        await conn.execute(
            "UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1::uuid[])", list(key_ids)
        )
