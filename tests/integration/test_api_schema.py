"""Schemathesis against the live server's own OpenAPI schema: whatever it sends, no 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from loracle.api.config import ApiConfig
from tests.integration.api_server import LiveServer, build_world, create_key, fresh_database


@pytest.fixture(scope="module")
def live(server_url, embedder, tmp_path_factory):
    with fresh_database(server_url) as url:
        world = build_world(tmp_path_factory.mktemp("api-schema"), url, embedder, steps=1)
        with LiveServer(world, ApiConfig(max_n=1, max_steps=2, max_body_bytes=32 * 1024, per_tenant=64)) as server:
            server.key = create_key(url, "fuzz-admin", admin=True)
            yield server


def test_no_server_errors(live) -> None:
    """Every operation, valid and invalid data, 25 cases each (generation runs take 1 step)."""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    headers = {"Authorization": f"Bearer {live.key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    failures: list[str] = []
    for operation in operations:
        @given(case=operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE))
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            case.call_and_validate(base_url=live.url, headers=headers, checks=[not_a_server_error], timeout=60)

        try:
            fuzz()
        except Exception as exc:  # collect all operations' failures, then report them together
            failures.append(f"{operation.label}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
