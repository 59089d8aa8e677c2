"""Back-pressure and failure paths: a full queue answers 429, a disconnect cancels its run, health stays
responsive during a run, and a database outage mid-run is a clear 503 after which requests work again."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from loracle.api.config import ApiConfig
from tests.integration.api_server import LiveServer, build_world, create_key, fresh_database, sse_events

LONG = 200  # sampling steps: seconds of work on the tiny model, long enough to act during a run


@pytest.fixture(scope="module")
def live(server_url, embedder, tmp_path_factory):
    with fresh_database(server_url) as url:
        settings = build_world(tmp_path_factory.mktemp("api-limits"), url, embedder)
        config = ApiConfig(workers=1, queue_size=1, per_tenant=2, max_steps=LONG, heartbeat_s=0.5, db_wait_s=2)
        with LiveServer(settings, config) as server:
            server.db_url, server.server_url = url, server_url
            server.keys = {name: create_key(url, name) for name in ("ann", "ben")}
            yield server


def auth(live, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.keys[name]}"}


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def run_status(live, thread_id: str) -> list[str]:
    with psycopg.connect(live.db_url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT status FROM runs WHERE thread_id = %s ORDER BY created_at", (thread_id,))]


def start_long_run(http: httpx.Client, live, name: str, thread: str, steps: int = LONG):
    http.post("/threads", json={"id": thread}, headers=auth(live, name))
    return http.stream("POST", f"/threads/{thread}/runs", json={"message": "a red fox", "steps": steps},
                       headers=auth(live, name))


def test_full_queue_and_busy_tenant_get_429_then_disconnects_cancel(live) -> None:
    with httpx.Client(base_url=live.url, timeout=60) as http:
        with start_long_run(http, live, "ann", "q1") as first:
            events = sse_events(first)
            assert next(kind for kind, _ in events if kind == "progress")  # running on the only worker
            started = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            assert time.perf_counter() - started < 1.0, "health checks are not stuck behind the run"
            with start_long_run(http, live, "ann", "q2") as second:  # waits in the one queue slot
                assert second.status_code == 200
                busy_tenant = http.post("/threads/q1/runs", json={"message": "x", "stream": False}, headers=auth(live, "ann"))
                http.post("/threads", json={"id": "q3"}, headers=auth(live, "ben"))
                full = http.post("/v1/chat/completions", headers=auth(live, "ben"),
                                 json={"model": "loracle", "messages": [{"role": "user", "content": "a fox"}]})
        # both streams are closed now: the running run is cancelled mid-sampling, the queued one never starts
        assert busy_tenant.status_code == 429 and busy_tenant.json()["error"]["code"] == "queue_full"
        assert "this tenant" in busy_tenant.json()["error"]["message"]
        assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1
        assert wait_for(lambda: run_status(live, "q1") == ["cancelled"])
        assert wait_for(lambda: run_status(live, "q2") == ["cancelled"]), "an accepted run is recorded, never started"
        done = wait_for(lambda: (r := http.post("/threads/q3/runs", json={"message": "a fox", "stream": False},
                                                headers=auth(live, "ben"))).status_code == 200 and r)
        assert done.json()["images"]


def test_non_streaming_client_that_leaves_cancels_its_run(live) -> None:
    with httpx.Client(base_url=live.url) as http:
        http.post("/threads", json={"id": "gone"}, headers=auth(live, "ben"))
        with pytest.raises(httpx.ReadTimeout):
            http.post("/threads/gone/runs", json={"message": "a fox", "steps": LONG, "stream": False},
                      headers=auth(live, "ben"), timeout=httpx.Timeout(60, read=1.5))
    assert wait_for(lambda: run_status(live, "gone") == ["cancelled"])


def test_database_outage_during_a_run_is_a_clear_error_and_the_next_request_works(live) -> None:
    name = psycopg.conninfo.conninfo_to_dict(live.db_url)["dbname"]

    def database_down(down: bool) -> None:
        with psycopg.connect(live.server_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}')
            if down:  # what a restart looks like to the service: every connection dropped, none accepted
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

    with httpx.Client(base_url=live.url, timeout=60) as http:
        try:
            with start_long_run(http, live, "ann", "outage", steps=50) as stream:
                events = sse_events(stream)
                next(kind for kind, _ in events if kind == "progress")
                database_down(True)
                during = http.get("/threads/outage", headers=auth(live, "ann"))
                ready = http.get("/readyz")
                kind, error = list(events)[-1]
        finally:
            database_down(False)
        assert during.status_code == 503 and during.json()["error"]["code"] == "database_unavailable"
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unavailable")
        assert kind == "error" and error["status"] == 503 and "database is unavailable" in error["error"]["message"]
        after = http.post("/threads/outage/runs", json={"message": "a fox", "stream": False}, headers=auth(live, "ann"))
        assert after.status_code == 200, after.text
        assert http.get("/readyz").status_code == 200
