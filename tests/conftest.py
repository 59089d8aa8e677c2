"""Shared fixtures: a real embedded PostgreSQL per session, a fresh database per test, the real embedder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from loracle.db import Database, connect
from loracle.db.server import start_embedded

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def server_url() -> str:
    """An embedded PostgreSQL 18 + pgvector for the whole session (or LORACLE_TEST_DATABASE_URL).

    Its folder is outside pytest's private (0700) temp dir: as root, the server runs as another user.
    """
    external = os.environ.get("LORACLE_TEST_DATABASE_URL")
    if external:
        return external
    folder = Path(tempfile.mkdtemp(prefix="loracle-test-pg-"))
    folder.chmod(0o755)
    atexit.register(shutil.rmtree, folder, True)  # registered first, so it runs after the server's own cleanup
    return start_embedded(folder / "pgdata", cleanup_mode="delete")


def _with_dbname(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards: no test sees another's leftovers."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_dbname(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    database = connect(database_url, tmp_path / "unused-pgdata")
    yield database
    database.close()


@pytest.fixture(scope="session")
def embedder():
    """The real packaged MiniLM, loaded once."""
    from loracle.tools.embedder import get_embedder

    return get_embedder()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "catalog" / "civitai_loras.jsonl").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only present in the project's CI and dev machines)")
    return SHARED_DATA
