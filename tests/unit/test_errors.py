"""What fails below the agent reaches the front ends as one of the agent's errors, and each gets its answer."""

from __future__ import annotations

import psycopg
import pytest

from loracle.agent.errors import (
    AdapterProblem,
    Cancelled,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    UnstorableValue,
    agent_errors,
    as_agent_error,
)
from loracle.api.errors import from_agent
from loracle.db import DatabaseUnavailable as DatabaseDown
from loracle.generation.adapters import AdapterError
from loracle.generation.loop import GenerationCancelled


def lost_while_recording() -> RuntimeError:
    try:
        raise psycopg.OperationalError("server closed the connection")
    except psycopg.OperationalError:
        try:
            raise RuntimeError("could not record the run")
        except RuntimeError as exc:
            return exc


@pytest.mark.parametrize(("raised", "expected"), [
    (GenerationCancelled("stop"), Cancelled),
    (AdapterError("x.safetensors is for SDXL"), AdapterProblem),
    (ValueError("there is no image 3"), InvalidInput),
    (psycopg.DataError("invalid byte sequence"), UnstorableValue),
    (psycopg.OperationalError("connection refused"), DatabaseUnavailable),
    (DatabaseDown("cannot reach the database"), DatabaseUnavailable),
    (lost_while_recording(), DatabaseUnavailable),
])
def test_lower_errors_become_agent_errors(raised: Exception, expected: type) -> None:
    translated = as_agent_error(raised)
    assert type(translated) is expected
    assert str(raised) in str(translated) or isinstance(translated, DatabaseUnavailable)


def test_bugs_pass_through_and_translations_keep_their_cause() -> None:
    assert as_agent_error(KeyError("plan")) is None
    with pytest.raises(KeyError), agent_errors():
        raise KeyError("plan")
    with pytest.raises(InvalidInput) as caught, agent_errors():
        raise ValueError("strength must be in [0, 1]")
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize(("error", "status", "code"), [
    (InvalidInput("the prompt is empty"), 400, "invalid_value"),
    (UnstorableValue("NUL"), 400, "invalid_value"),
    (AdapterProblem("wrong base"), 400, "invalid_value"),
    (NotFound("no thread 'x'"), 404, "not_found"),
    (Cancelled("client left"), 499, "cancelled"),
    (DatabaseUnavailable("down"), 503, "database_unavailable"),
])
def test_each_agent_error_has_its_http_answer(error, status: int, code: str) -> None:
    answer = from_agent(error)
    assert (answer.status, answer.code) == (status, code)
    assert from_agent(error, invalid_code="invalid_request").code == ("invalid_request" if status == 400 else code)
