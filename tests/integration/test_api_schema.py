"""Schemathesis against the live server's own OpenAPI schema with every check (`--checks all`): no 5xx, and
every status, content type, header and body the server gives is one its schema states."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks, positive_data_acceptance

from loracle.api.config import ApiConfig
from tests.integration.api_server import LiveServer, build_world, create_key, fresh_database

EXAMPLES = 8  # per operation and mode: a few hundred cases in all


@pytest.fixture(scope="module")
def live(server_url, embedder, tmp_path_factory):
    with fresh_database(server_url) as url:
        world = build_world(tmp_path_factory.mktemp("api-schema"), url, embedder, steps=1)
        with LiveServer(world, ApiConfig(max_n=1, max_steps=2, max_body_bytes=32 * 1024, per_tenant=64)) as server:
            server.key = create_key(url, "fuzz-admin", admin=True)
            yield server


# Schema-valid data these operations rightly refuse (400), because a JSON schema cannot state the rule: A1111's
# base64 images must be images; an image size's limit is on width x height (the server's max pixels).
NOT_STATABLE = {"/sdapi/v1/img2img", "/sdapi/v1/png-info", "/v1/images/generations"}


def excluded(operation) -> list:
    """Uploads (a schema cannot say "a PNG file") and the operations above skip the positive-data check."""
    body = operation.definition.raw.get("requestBody", {}).get("content", {})
    return [positive_data_acceptance] if "multipart/form-data" in body or operation.path in NOT_STATABLE else []


def test_every_check_passes(live) -> None:
    """Every operation, valid and invalid data, a few cases each (generation runs take 1 step)."""
    load_all_checks()
    checks = CHECKS.get_all()
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    headers = {"Authorization": f"Bearer {live.key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    failures: list[str] = []
    for operation in operations:
        @given(case=operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            case.call_and_validate(base_url=live.url, headers=headers, checks=checks, timeout=60,
                                   excluded_checks=excluded(case.operation))

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failures, reported together
            failures.append(f"{operation.label}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
