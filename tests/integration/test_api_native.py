"""Native routes: threads, SSE runs, tenancy, admin import, health and metrics."""

from __future__ import annotations

import httpx
import pytest

from loracle.api.config import ApiConfig
from tests.integration.api_server import LiveServer, build_world, create_key, fresh_database, sse_events


@pytest.fixture(scope="module")
def live(server_url, embedder, tmp_path_factory):
    with fresh_database(server_url) as url:
        settings = build_world(tmp_path_factory.mktemp("api-native"), url, embedder)
        with LiveServer(settings, ApiConfig(max_n=2, max_steps=8)) as server:
            server.db_url = url
            yield server


def client(live, key: str | None) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {key}"} if key else {})


def test_local_mode_until_a_key_exists(server_url, embedder, tmp_path) -> None:
    """No key yet and a loopback bind: requests are the local tenant; the first key turns that off."""
    with fresh_database(server_url) as url:
        with LiveServer(build_world(tmp_path, url, embedder), ApiConfig(), allow_local=True) as live:
            with client(live, None) as anonymous:
                assert anonymous.post("/threads", json={"id": "local-1"}).status_code == 201
                create_key(url, "admin", admin=True)
                refused = anonymous.get("/threads/local-1")
    assert refused.status_code == 401 and "API key" in refused.json()["error"]["message"]


def test_keyless_requests_are_refused_without_local_mode(live) -> None:
    assert httpx.get(f"{live.url}/v1/models").status_code == 401


def test_thread_run_streams_events_and_history(live) -> None:
    key = create_key(live.db_url, "bob")
    with client(live, key) as bob:
        thread = bob.post("/threads", json={}).json()["id"]
        with bob.stream("POST", f"/threads/{thread}/runs", json={"message": "a red fox in a misty forest", "n": 2}) as response:
            assert response.status_code == 200
            events = list(sse_events(response))
        kinds = [kind for kind, _ in events]
        for kind in ("run", "plan", "candidates", "picks", "mixes", "progress", "images", "done"):
            assert kind in kinds, kinds
        assert kinds[-1] == "done" and kinds.index("plan") < kinds.index("progress") < kinds.index("images")
        done = events[-1][1]
        assert len(done["images"]) == 2 and done["nfe"] > 0
        image = bob.get(done["images"][0]["url"].split("?")[0])  # the owner needs no signature
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"

        follow = bob.post(f"/threads/{thread}/runs", json={"message": "at night", "stream": False})
        assert follow.status_code == 200 and follow.json()["thread_id"] == thread
        state = bob.get(f"/threads/{thread}").json()
        assert state["history"] == ["a red fox in a misty forest", "at night"]
        assert [r["status"] for r in state["runs"]] == ["done", "done"] and len(state["runs"][0]["images"]) == 2
        assert state["runs"][0]["sampler_replica"] is None and state["runs"][0]["sampler_retried"] is False  # in process
        assert bob.get(f"/runs/{done['run_id']}").json()["status"] == "done"

        path = live.service.settings.images_dir
        files = {p for p in path.rglob("*.png")}
        assert bob.delete(f"/threads/{thread}").status_code == 204
        assert bob.get(f"/threads/{thread}").status_code == 404
        assert bob.get(f"/runs/{done['run_id']}").status_code == 404
        assert len({p for p in path.rglob("*.png")}) < len(files), "the deleted thread's image files are gone"


def test_another_tenant_gets_404(live) -> None:
    carol, dave = create_key(live.db_url, "carol"), create_key(live.db_url, "dave")
    with client(live, carol) as c, client(live, dave) as d:
        c.post("/threads", json={"id": "secret"})
        done = c.post("/threads/secret/runs", json={"message": "a fox", "stream": False}).json()
        image = done["images"][0]
        assert d.get("/threads/secret").status_code == 404
        assert d.post("/threads/secret/runs", json={"message": "a fox", "stream": False}).status_code == 404
        assert d.delete("/threads/secret").status_code == 404
        assert d.get(f"/runs/{done['run_id']}").status_code == 404
        assert d.get(image["url"].split("?")[0]).status_code == 404
        assert d.get(image["url"]).status_code == 200, "a signed link is a capability anyone may use"
        assert d.get(image["url"].split("?")[0] + "?sig=" + "0" * 32).status_code == 404
        # dave's thread of the same name is his own, not carol's
        assert d.post("/threads", json={"id": "secret"}).status_code == 201
        assert c.get("/threads/secret").json()["runs"][0]["status"] == "done"


def test_adapter_search_and_admin_import(live) -> None:
    user, admin = create_key(live.db_url, "erin"), create_key(live.db_url, "root", admin=True)
    record = {"id": 900, "name": "Neon Glow", "tags": ["style", "neon"], "trigger_words": ["neonglow"],
              "description": "Neon lights.", "base_model": "SD 1.5"}
    with client(live, user) as u, client(live, admin) as a:
        hits = u.get("/adapters/search", params={"q": "watercolor"}).json()
        assert hits[0]["name"] == "Watercolor Wash"
        assert u.post("/admin/catalog/import", json={"records": [record]}).status_code == 403
        report = a.post("/admin/catalog/import", json={"records": [record, {"id": "x"}]}).json()
        assert report["inserted"] == 1 and len(report["rejected"]) == 1
        assert u.get("/adapters/search", params={"q": "neon glow lights"}).json()[0]["name"] == "Neon Glow"


def test_health_readiness_and_metrics(live) -> None:
    assert httpx.get(f"{live.url}/healthz").json() == {"status": "ok", "checks": {}}
    ready = httpx.get(f"{live.url}/readyz").json()
    assert ready["checks"] == {"database": "ok", "model": "ok"}
    assert httpx.get(f"{live.url}/metrics").status_code == 401, "metrics say what every tenant does: admins only"
    with client(live, create_key(live.db_url, "metrics-admin", admin=True)) as admin:
        text = admin.get("/metrics").text
    assert 'loracle_runs_finished_total{status="done"}' in text
    assert 'route="/threads/{thread_id}/runs"' in text
