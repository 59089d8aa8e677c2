"""Helpers for the API tests: a tiny catalog with real LoRA files, a fresh database per module, and the
app under a real uvicorn server on a free loopback port (in a thread of the test process)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import uvicorn

from loracle.agent.settings import Settings
from loracle.api.app import create_app
from loracle.api.config import ApiConfig
from tests.integration.tiny_catalog import STYLES, write_tiny_catalog


def with_dbname(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"test_api_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build_world(folder: Path, database_url: str, embedder, **overrides) -> Settings:
    """Adapters on disk, their catalog imported, and Settings for the tiny model (fast runs)."""
    from loracle.db import connect
    from loracle.tools.catalog_import import import_catalog

    adapters, catalog = write_tiny_catalog(folder, STYLES[:4])
    with connect(database_url, folder / "unused-pgdata") as db:
        import_catalog(db, catalog, embedder)
    values = dict(home=folder / "home", database_url=database_url, base_model="tiny", adapter_dirs=[adapters], steps=3,
                  n_images=1, skip_threshold=0.0, max_retries=0, llm_model=None)
    return Settings(**{**values, **overrides})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving `create_app(settings, config)` until stopped; `url` is its base URL."""

    def __init__(self, settings: Settings, config: ApiConfig, *, allow_local: bool = False) -> None:
        self.app = create_app(settings, config, allow_local=allow_local)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def service(self):
        return self.app.state.service

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if not self.thread.is_alive():
                raise RuntimeError("the server exited during start-up")
            time.sleep(0.1)
        raise TimeoutError("the server did not become ready")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def create_key(database_url: str, name: str, *, admin: bool = False, tenant: str | None = None) -> str:
    from loracle.db.keys import create_key as create

    with psycopg.connect(database_url, autocommit=True) as conn:
        return create(conn, name, tenant=tenant, admin=admin)[1]


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict | str]]:
    """(event, data) pairs of a streamed response, data parsed as JSON when it is JSON."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    yield event, json.loads(text)
                except json.JSONDecodeError:
                    yield event, text
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
