"""Adapters left out of retrieval because their file cannot be used (missing, unsafe, outside the adapter
folders, shared with another entry, unreadable). A quarantine holds while the record is unchanged: a re-import
that changes the record, or `lift` after the file was checked again, ends it."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row


def quarantine(conn: psycopg.Connection, adapter_id: int, reason: str) -> None:
    """Quarantine the adapter as its record is now (a later quarantine replaces the reason)."""
    conn.execute(
        "INSERT INTO adapter_quarantine (adapter_id, reason, content_hash) "
        "SELECT id, %s, content_hash FROM adapters WHERE id = %s "
        "ON CONFLICT (adapter_id) DO UPDATE SET reason = EXCLUDED.reason, content_hash = EXCLUDED.content_hash, "
        "found_at = now()", (reason, adapter_id))


_CURRENT = "FROM adapter_quarantine q JOIN adapters a ON a.id = q.adapter_id AND a.content_hash = q.content_hash"


def quarantined_ids(conn: psycopg.Connection) -> list[int]:
    """Adapters quarantined as their record is now (a changed record is free again)."""
    return [r[0] for r in conn.execute(f"SELECT q.adapter_id {_CURRENT}")]


def list_quarantined(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The quarantined adapters with what a person needs to fix them, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT a.id, a.source, a.external_id, a.name, a.file_name, a.local_path, q.reason, q.found_at "
            f"{_CURRENT} ORDER BY q.found_at, a.id").fetchall()


def lift(conn: psycopg.Connection, adapter_ids: list[int]) -> int:
    """End the quarantine of these adapters, and of every adapter whose record changed since; how many rows went."""
    done = conn.execute(
        "DELETE FROM adapter_quarantine q USING adapters a WHERE a.id = q.adapter_id "
        "AND (q.adapter_id = ANY(%s::bigint[]) OR a.content_hash <> q.content_hash)", (adapter_ids,))
    return done.rowcount
