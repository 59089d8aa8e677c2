"""What every command shares: the agent opened for one command, and errors as one clear line, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from loracle.agent.errors import AgentError
from loracle.agent.settings import Settings, get_settings

if TYPE_CHECKING:
    from loracle.agent.service import Agent


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@contextmanager
def exit_on_agent_error() -> Iterator[None]:
    """An AgentError inside ends the command with its message and exit code 1."""
    try:
        yield
    except AgentError as exc:
        raise fail(str(exc)) from None


@contextmanager
def open_agent(settings: Settings | None = None, **options: Any) -> Iterator[Agent]:
    """The agent over the configured database for one command (see agent.service.open_agent)."""
    from loracle.agent.service import open_agent as opened

    with exit_on_agent_error(), opened(settings or get_settings(), **options) as agent:
        yield agent


@contextmanager
def open_database(settings: Settings | None = None) -> Iterator[Any]:
    """The configured database alone, for commands that work on it directly (evaluation, training)."""
    from loracle.agent.service import open_database as opened

    with exit_on_agent_error(), opened(settings or get_settings()) as db:
        yield db


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
