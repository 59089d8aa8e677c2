"""Image bytes stored in PostgreSQL (migration 011), for services whose API replicas share no folder."""

from __future__ import annotations

import psycopg

_UNUSED = "kind = 'image' AND NOT EXISTS (SELECT 1 FROM images WHERE images.path = image_blobs.path)"


def put_blob(conn: psycopg.Connection, path: str, data: bytes, kind: str) -> None:
    """Store the bytes under `path` (content-addressed: an existing blob is the same bytes). The upsert locks the
    row, so a concurrent `delete_unused` of the same path waits for this transaction and then sees its row."""
    conn.execute("INSERT INTO image_blobs (path, kind, data) VALUES (%s, %s, %s) "
                 "ON CONFLICT (path) DO UPDATE SET created_at = now()", (path, kind, data))


def get_blob(conn: psycopg.Connection, path: str) -> bytes | None:
    row = conn.execute("SELECT data FROM image_blobs WHERE path = %s", (path,)).fetchone()
    return None if row is None else bytes(row[0])


def has_blob(conn: psycopg.Connection, path: str) -> bool:
    return conn.execute("SELECT 1 FROM image_blobs WHERE path = %s", (path,)).fetchone() is not None


def delete_unused(conn: psycopg.Connection, paths: list[str]) -> int:
    """Delete these run images' blobs where no `images` row names them any more; how many went."""
    return conn.execute(f"DELETE FROM image_blobs WHERE path = ANY(%s) AND {_UNUSED}", (paths,)).rowcount


def sweep_unused(conn: psycopg.Connection) -> int:
    """Delete every run image blob no row names (what a crash between deleting rows and blobs left); how many."""
    return conn.execute(f"DELETE FROM image_blobs WHERE {_UNUSED}").rowcount
