"""Which process owns a run: each process that records runs holds a session-level advisory lock under a key of
its own, on a connection of its own. PostgreSQL drops the lock when that session ends (the process died, or the
database went away), so "the owner holds no lock" is exactly "nobody will finish this run", across hosts too.
"""

from __future__ import annotations

import logging
import random
import threading

import psycopg
from psycopg.rows import tuple_row

log = logging.getLogger(__name__)

NAMESPACE = 0x72756E73  # "runs": the first key of the two-key advisory lock form; the second is the owner


def alive_owners(conn: psycopg.Connection) -> list[int]:
    """Owner keys whose lock is held in this database now."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", (NAMESPACE,)).fetchall()
    return [int(r[0]) for r in rows]


class OwnerLease:
    """This process's owner key, held as an advisory lock on a dedicated connection. `key` is the current key;
    `keys` every key this process has held (a reconnect may need a new one while the old session lingers)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.keys: list[int] = []
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self.ensure()

    @property
    def key(self) -> int:
        return self.keys[-1]

    def held(self) -> bool:
        """Whether the lock's session is alive (one round trip)."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                return False
            try:
                self._conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                return False

    def ensure(self) -> bool:
        """Hold the lock (reconnecting if its session is gone); True when it had to be taken again now."""
        if self.held():
            return False
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5, application_name="loracle-owner")
            try:
                for key in ([self.keys[-1]] if self.keys else []) + [random.randrange(1, 2**31) for _ in range(8)]:
                    if conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (NAMESPACE, key)).fetchone()[0]:
                        if key not in self.keys:
                            self.keys.append(key)
                        self._conn = conn
                        return True
            except BaseException:
                conn.close()
                raise
            conn.close()
            raise RuntimeError("could not take an owner key (8 random keys were all held)")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
