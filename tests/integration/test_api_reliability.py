"""No door left open, no 500 from input, nothing lost on a race: fail-closed keys, the official client in local
mode, Unicode digits, non-ASCII and expired signatures, seed replay from a PNG, the thread-delete race, and
catalog names kept as text in chat Markdown (a real uvicorn server, tiny model)."""

from __future__ import annotations

import re
import threading
import time

import httpx
import psycopg
import pytest
from markdown_it import MarkdownIt
from openai import OpenAI
from PIL import Image

from loracle.agent.options import MAX_SEED
from loracle.api.config import ApiConfig
from tests.integration.api_server import LiveServer, build_world, create_key, fresh_database, sse_events


@pytest.fixture(scope="module")
def live(server_url, embedder, tmp_path_factory):
    with fresh_database(server_url) as url:
        settings = build_world(tmp_path_factory.mktemp("api-reliable"), url, embedder)
        with LiveServer(settings, ApiConfig(max_n=2, max_steps=50)) as server:
            server.db_url = url
            server.key = create_key(url, "rel-admin", admin=True)
            yield server


def client(live, key: str | None = None) -> httpx.Client:
    key = live.key if key is None else key
    return httpx.Client(base_url=live.url, timeout=120, headers={"Authorization": f"Bearer {key}"} if key else {})


def test_revoking_the_last_key_keeps_keys_required(server_url, embedder, tmp_path) -> None:
    """Local mode ends with the first key for good: revoking it leaves the server (and the next one) closed."""
    from loracle.db.keys import revoke_key

    with fresh_database(server_url) as url:
        settings = build_world(tmp_path, url, embedder)
        with LiveServer(settings, ApiConfig(), allow_local=True) as live:
            assert httpx.get(f"{live.url}/v1/models").status_code == 200, "local mode before any key"
            create_key(url, "only", admin=True)
            with psycopg.connect(url, autocommit=True) as conn:
                assert revoke_key(conn, "only")
            assert httpx.get(f"{live.url}/v1/models").status_code == 401
            assert httpx.post(f"{live.url}/admin/catalog/import", json={"records": []}).status_code == 401
            assert httpx.get(f"{live.url}/metrics").status_code == 401
        with LiveServer(settings, ApiConfig(), allow_local=True) as fresh:
            assert httpx.get(f"{fresh.url}/v1/models").status_code == 401
            assert httpx.get(f"{fresh.url}/v1/models", headers={"Authorization": "Bearer anything"}).status_code == 401


def test_official_client_in_local_mode_with_any_key(server_url, embedder, tmp_path) -> None:
    with fresh_database(server_url) as url:
        with LiveServer(build_world(tmp_path, url, embedder), ApiConfig(), allow_local=True) as live:
            openai_client = OpenAI(base_url=f"{live.url}/v1", api_key="sk-whatever", max_retries=0, timeout=120)
            assert {m.id for m in openai_client.models.list()} >= {"loracle"}
            done = openai_client.chat.completions.create(model="loracle", messages=[{"role": "user", "content": "a red fox"}])
            assert "![image 1](" in done.choices[0].message.content


def test_metrics_need_an_admin_key(live) -> None:
    assert httpx.get(f"{live.url}/metrics").status_code == 401
    with client(live) as admin:
        assert "loracle_" in admin.get("/metrics").text


def test_unicode_digit_is_a_400_and_the_connection_lives_on(live) -> None:
    body = {"model": "loracle", "messages": [{"role": "user", "content": "a fox"}], "metadata": {"n_images": "²"}}
    with client(live) as c:
        bad = c.post("/v1/chat/completions", json=body)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "metadata.n_images"
        assert c.get("/v1/models").status_code == 200


def run_once(c: httpx.Client, thread: str, message: str, **extra) -> dict:
    c.post("/threads", json={"id": thread})
    done = c.post(f"/threads/{thread}/runs", json={"message": message, "stream": False, **extra})
    assert done.status_code == 200, done.text
    return done.json()


def test_signed_links_expire_and_odd_signatures_are_refused_cleanly(live) -> None:
    with client(live) as c:
        image = run_once(c, "links", "a red fox")["images"][0]
    url = image["url"]
    assert re.search(r"[?&]exp=\d+&sig=[0-9a-f]{32}$", url)
    assert httpx.get(url).status_code == 200
    base = url.split("?")[0]
    for query in ("?exp=9999999999&sig=" + "é" * 32, "?exp=9999999999&sig=" + "0" * 32, "?sig=" + "0" * 32):
        assert httpx.get(base + query).status_code in (400, 404), query
    past = int(time.time()) - 10
    expired = httpx.get(f"{base}?exp={past}&sig={live.service.signer.sign(image['id'], past)}")
    assert expired.status_code == 403 and expired.json()["error"]["code"] == "link_expired"


def test_a_png_s_own_parameters_replay_it_byte_for_byte(live) -> None:
    """The seed a PNG records is one the API accepts, and sending it back makes the same file."""
    with client(live) as c:
        first = run_once(c, "replay-1", "a watercolor painting of a red fox", n=1)["images"][0]
        with Image.open(live.service.settings.images_dir / f"{first['sha256'][:2]}/{first['sha256']}.png") as png:
            parameters = png.info["parameters"]
        seed = int(re.search(r"Seed: (\d+)", parameters).group(1))
        assert seed == first["seed"] <= MAX_SEED
        again = run_once(c, "replay-2", "a watercolor painting of a red fox", n=1, seed=seed)["images"][0]
    assert again["sha256"] == first["sha256"]


def test_deleting_a_thread_while_its_run_samples(live) -> None:
    """The run is cancelled first: no 500, no image file left without a row."""
    images_dir = live.service.settings.images_dir
    with client(live) as c:
        c.post("/threads", json={"id": "race"})
        sampling, outcome = threading.Event(), {}

        def stream() -> None:
            with c.stream("POST", "/threads/race/runs", json={"message": "a red fox", "n": 2, "steps": 50}) as response:
                outcome["status"] = response.status_code
                outcome["events"] = []
                for kind, data in sse_events(response):
                    outcome["events"].append((kind, data))
                    if kind == "progress":
                        sampling.set()

        worker = threading.Thread(target=stream)
        worker.start()
        assert sampling.wait(120), "the run never started sampling"
        with client(live) as other:
            deleted = other.delete("/threads/race")
        worker.join(120)
    assert deleted.status_code == 204, deleted.text
    assert outcome["status"] == 200 and outcome["events"][-1][0] == "error", outcome["events"][-3:]
    assert outcome["events"][-1][1]["error"]["code"] != "run_failed"
    with live.service.agent.db.connection() as conn:
        named = {r[0] for r in conn.execute("SELECT path FROM images")}
    on_disk = {str(p.relative_to(images_dir)) for p in images_dir.rglob("*") if p.is_file() and "uploads" not in p.parts}
    assert on_disk <= named, f"files without a row: {on_disk - named}"


def test_catalog_names_stay_text_in_chat_markdown(live) -> None:
    tracker = "![x](http://127.0.0.1:9/track.png)"
    record = {"id": 103, "name": f"Red Fox {tracker}", "tags": ["animal", "fox"], "trigger_words": ["redfox"],
              "description": "Red Fox adapter.", "base_model": "SD 1.5", "example_prompts": ["a picture, redfox"],
              "recommended_weight": 0.9, "file": {"name": "lora_103.safetensors"}}
    with client(live) as c:
        assert c.post("/admin/catalog/import", json={"records": [record]}).json()["updated"] == 1
        done = c.post("/v1/chat/completions", json={"model": "loracle", "messages": [
            {"role": "user", "content": "a red fox"}]}).json()
    content = done["choices"][0]["message"]["content"]
    assert "Red Fox" in content
    html = MarkdownIt("commonmark").render(content)  # as a Markdown chat client shows it
    images = re.findall(r'<img src="([^"]*)"', html)
    assert images and all(src.startswith(live.url) for src in images), images
    assert "127.0.0.1:9" not in "".join(re.findall(r'<a href="([^"]*)"', html)) and tracker in content.replace("\\", "")
