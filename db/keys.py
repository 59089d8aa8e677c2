"""API keys: random secrets shown once, stored as sha256 (the secrets are high-entropy, so a slow hash
buys nothing), each bound to a tenant and optionally an admin."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

PREFIX = "lor_"


@dataclass
class ApiKey:
    id: uuid.UUID
    name: str
    tenant: str
    prefix: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(conn: psycopg.Connection, name: str, *, tenant: str | None = None, admin: bool = False) -> tuple[ApiKey, str]:
    """A new key; returns its row and the secret (never stored, shown once)."""
    if not name.strip():
        raise ValueError("the key name is empty")
    secret = PREFIX + secrets.token_urlsafe(32)
    try:
        with conn.cursor(row_factory=class_row(ApiKey)) as cur:
            row = cur.execute(
                "INSERT INTO api_keys (id, name, tenant, key_hash, prefix, admin) VALUES (%s, %s, %s, %s, %s, %s) "
                "RETURNING id, name, tenant, prefix, admin, created_at, revoked_at",
                (uuid.uuid4(), name, tenant or name, hash_key(secret), secret[:8], admin),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise ValueError(f"an active key named {name!r} already exists; revoke it first") from None
    return row, secret


def find_key(conn: psycopg.Connection, secret: str) -> ApiKey | None:
    """The active key with this secret, or None."""
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(
            "SELECT id, name, tenant, prefix, admin, created_at, revoked_at FROM api_keys "
            "WHERE key_hash = %s AND revoked_at IS NULL",
            (hash_key(secret),),
        ).fetchone()


def list_keys(conn: psycopg.Connection, *, include_revoked: bool = False) -> list[ApiKey]:
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(
            "SELECT id, name, tenant, prefix, admin, created_at, revoked_at FROM api_keys "
            "WHERE %s OR revoked_at IS NULL ORDER BY created_at",
            (include_revoked,),
        ).fetchall()


def revoke_key(conn: psycopg.Connection, name: str) -> bool:
    """Revoke the active key with this name; False when there is none."""
    done = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL", (name,))
    return done.rowcount > 0


def any_active_key(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)").fetchone()[0]


def any_key_created(conn: psycopg.Connection) -> bool:
    """Whether a key was ever created here (revoked ones count): once one was, the API never runs key-less again."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM api_keys)").fetchone()[0]


def link_secret(conn: psycopg.Connection) -> str:
    """The database's image-link signing secret, created by whichever process asks first."""
    conn.execute("INSERT INTO link_secret (secret) VALUES (%s) ON CONFLICT DO NOTHING", (secrets.token_hex(32),))
    return conn.execute("SELECT secret FROM link_secret").fetchone()[0]
