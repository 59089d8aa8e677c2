"""Image bytes stored in PostgreSQL (migration 011), for services whose API replicas share no folder.

Blobs are content-addressed, so a run may write a blob that already exists while a thread deletion decides
that nobody needs it any more. A transaction-scoped advisory lock per path orders the two: the writer holds it
until its `images` row commits, and the deleter takes it before looking for rows, in a statement of its own so
that its snapshot already sees that row.
"""

from __future__ import annotations

import psycopg

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(p, 0)) FROM unnest(%s::text[]) AS p ORDER BY p"
_UNUSED = "kind = 'image' AND NOT EXISTS (SELECT 1 FROM images WHERE images.path = image_blobs.path)"


def put_blobs(conn: psycopg.Connection, blobs: dict[str, bytes], kind: str) -> None:
    """Store each path's bytes (an existing blob is the same bytes); call it in the transaction that inserts the
    rows naming them, so a concurrent `delete_unused` waits for that transaction."""
    conn.execute(_LOCK, (sorted(blobs),))
    for path, data in sorted(blobs.items()):
        conn.execute("INSERT INTO image_blobs (path, kind, data) VALUES (%s, %s, %s) ON CONFLICT (path) DO NOTHING",
                     (path, kind, data))


def get_blob(conn: psycopg.Connection, path: str) -> bytes | None:
    row = conn.execute("SELECT data FROM image_blobs WHERE path = %s", (path,)).fetchone()
    return None if row is None else bytes(row[0])


def has_blob(conn: psycopg.Connection, path: str) -> bool:
    return conn.execute("SELECT 1 FROM image_blobs WHERE path = %s", (path,)).fetchone() is not None


def delete_unused(conn: psycopg.Connection, paths: list[str]) -> int:
    """Delete these run images' blobs where no `images` row names them any more; how many went."""
    with conn.transaction():
        conn.execute(_LOCK, (paths,))
        return conn.execute(f"DELETE FROM image_blobs WHERE path = ANY(%s) AND {_UNUSED}", (paths,)).rowcount


def sweep_unused(conn: psycopg.Connection) -> int:
    """Delete every run image blob no row names (what a crash between deleting rows and blobs left); how many."""
    candidates = [r[0] for r in conn.execute(f"SELECT path FROM image_blobs WHERE {_UNUSED}")]
    return delete_unused(conn, candidates) if candidates else 0
