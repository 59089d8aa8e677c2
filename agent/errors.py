"""The errors the front ends catch: each says what went wrong in words a user can act on, and its class
says how to answer (the API's status, the CLI's exit code).

The agent's public functions raise only these (or a bug): `agent_errors()` turns what the layers below
raise into them at the boundary, so a front end never learns about psycopg, torch or a tool's exceptions.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from loracle.db import DatabaseUnavailable as DatabaseDown
from loracle.db.server import first_line


class AgentError(Exception):
    """A failure the caller can understand and act on; the message says which and why."""


class InvalidInput(AgentError, ValueError):
    """The request itself is wrong (empty prompt, bad image, unknown strategy...); `field` names the input
    at fault when one does (the CLI's option, the API's parameter)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnstorableValue(InvalidInput):
    """A value PostgreSQL cannot store (a NUL character, a number out of range)."""


class AdapterProblem(InvalidInput):
    """An adapter file does not fit the base model, or cannot be read or verified."""


class NotFound(AgentError, LookupError):
    """The thread, run, image or key named does not exist (for this tenant)."""


class Cancelled(AgentError):
    """The run was cancelled before it finished."""


class DatabaseUnavailable(AgentError):
    """The database cannot be reached; trying again later may work."""


def _loaded(module: str, name: str) -> type[BaseException] | None:
    """An exception class of a lower layer, only if its module is already imported: an exception cannot
    come from a module nobody imported, and importing generation here would load torch for every command."""
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def as_agent_error(exc: BaseException) -> AgentError | None:
    """What an exception from below means to a front end; None for a bug (an internal error)."""
    if isinstance(exc, AgentError):
        return exc
    cancelled = _loaded("loracle.generation.loop", "GenerationCancelled")
    adapter = _loaded("loracle.generation.adapters", "AdapterError")
    for kind, problem in ((cancelled, Cancelled), (adapter, AdapterProblem)):
        if kind is not None and isinstance(exc, kind):
            return problem(str(exc))
    if isinstance(exc, psycopg.DataError):
        return UnstorableValue(str(exc))
    # also an error raised while a lost connection was being handled (a run that could not record its failure)
    for cause in (exc, exc.__context__):
        if isinstance(cause, (DatabaseDown, psycopg.OperationalError, psycopg.InterfaceError)):
            return DatabaseUnavailable(first_line(cause))
    if isinstance(exc, ValueError):  # the layers below say "bad input" with ValueError and a precise message
        return InvalidInput(str(exc))
    return None


@contextmanager
def agent_errors() -> Iterator[None]:
    """Raise what fails inside as an AgentError (with the original as its cause); bugs pass through."""
    try:
        yield
    except Exception as exc:
        translated = as_agent_error(exc)
        if translated is None or translated is exc:
            raise
        raise translated from exc
