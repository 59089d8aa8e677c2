"""The studio's server side: the page and its files, the caller's threads newest first, an image explained,
adapter edits made by hand, and an edit (image + painted mask) as a native run; tenants see only their own."""

from __future__ import annotations

import base64
import io
import re

import httpx
import pytest
from PIL import Image

from loracle.agent.access import find_image
from loracle.api.config import ApiConfig
from tests.integration.api_server import LiveServer, build_world, create_key, fresh_database


@pytest.fixture(scope="module")
def live(server_url, embedder, tmp_path_factory):
    with fresh_database(server_url) as url:
        settings = build_world(tmp_path_factory.mktemp("studio-api"), url, embedder, n_images=2)
        with LiveServer(settings, ApiConfig(max_n=4, max_steps=8, per_tenant=8)) as server:
            server.alice = create_key(url, "alice")
            server.bob = create_key(url, "bob")
            yield server


def client(live, key: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=120, headers={"Authorization": f"Bearer {key}"})


def run(http: httpx.Client, thread: str, message: str, **body) -> dict:
    response = http.post(f"/threads/{thread}/runs", json={"message": message, "stream": False, **body})
    assert response.status_code == 200, response.text
    return response.json()


def picked(result: dict) -> dict[str, dict]:
    return {p["ref"]: p for ps in result["picks"].values() for p in ps}


def test_the_page_and_every_file_it_loads_are_served(live) -> None:
    page = httpx.get(f"{live.url}/")  # no key: the page holds no data, it asks for a key
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert "/static/js/app.js" in assets and "/static/studio.css" in assets
    seen, queue = set(), list(assets)
    while queue:  # the page's files and every module they import, transitively
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        response = httpx.get(f"{live.url}{path}")
        assert response.status_code == 200, path
        if path.endswith(".js"):
            assert "javascript" in response.headers["content-type"], path
            folder = path.rsplit("/", 1)[0]
            queue += [f"{folder}/{name}" for name in re.findall(r'from "\./([\w-]+\.js)"', response.text)]
    assert len([p for p in seen if p.endswith(".js")]) >= 6
    assert httpx.get(f"{live.url}/static/nothing.js").status_code == 404
    assert "/" not in httpx.get(f"{live.url}/openapi.json").json()["paths"], "the page is not an API operation"


def test_threads_are_listed_newest_first_and_per_tenant(live) -> None:
    with client(live, live.alice) as alice, client(live, live.bob) as bob:
        ids = [alice.post("/threads", json={}).json()["id"] for _ in range(3)]
        run(alice, ids[1], "a red fox")
        run(alice, ids[0], "a watercolor fox")  # most recently active
        page = alice.get("/threads", params={"limit": 2}).json()
        assert [t["id"] for t in page["threads"]] == [ids[0], ids[1]] and page["next_offset"] == 2
        first = page["threads"][0]
        assert first["title"] == "a watercolor fox" and first["turns"] == 1 and first["images"] == 2
        assert httpx.get(first["cover_url"]).status_code == 200  # signed: an <img> needs no key
        rest = alice.get("/threads", params={"limit": 2, "offset": 2}).json()
        assert ids[2] in [t["id"] for t in rest["threads"]] and rest["threads"][-1]["turns"] == 0
        assert not {t["id"] for t in bob.get("/threads").json()["threads"]} & set(ids)
        assert alice.get("/threads", params={"limit": 0}).status_code == 400


def test_an_image_explains_itself_to_its_tenant_only(live) -> None:
    with client(live, live.alice) as alice, client(live, live.bob) as bob:
        thread = alice.post("/threads", json={}).json()["id"]
        result = run(alice, thread, "a watercolor painting of a red fox", seed=11)
        image = result["images"][0]
        details = alice.get(f"/images/{image['id']}").json()
        assert details["thread_id"] == thread and details["run_id"] == result["run_id"]
        assert details["seed"] == image["seed"] and details["turn_seed"] == 11 and details["nfe"] > 0
        assert f"Seed: {image['seed']}" in details["parameters"] and "<lora:" in details["parameters"]
        picks = picked(result)
        assert details["adapters"], "the mix names its adapters"
        for adapter in details["adapters"]:
            pick = picks[adapter["ref"]]
            assert adapter["name"] == pick["name"] and adapter["trigger_words"] == pick["trigger_words"]
            assert adapter["task"] in result["picks"] and adapter["reason"] == pick["reason"]
            assert adapter["page"] == f"https://civitai.com/models/{adapter['ref'].split(':')[1]}"
            assert image["mix"][pick["file"].removesuffix(".safetensors")] == adapter["weight"]
        file = live.service.settings.images_dir / find_image(live.service.agent, image["id"]).path
        assert httpx.get(details["url"]).content == file.read_bytes(), "the PNG file itself, metadata intact"
        assert all("/" not in (p["file"] or "") for p in picks.values()), "no server paths in responses"

        assert bob.get(f"/images/{image['id']}").status_code == 404
        assert bob.get(f"/v1/images/files/{image['id']}.png").status_code == 404
        assert alice.get("/images/not-an-id").status_code == 404


def test_a_seed_given_on_a_follow_up_turn_is_used(live) -> None:
    """Reusing an image's seed works inside a thread, not only on its first turn."""
    with client(live, live.alice) as alice:
        thread = alice.post("/threads", json={}).json()["id"]
        run(alice, thread, "a red fox", seed=5)
        again = run(alice, thread, "at night", seed=123)
        assert [i["seed"] for i in again["images"]] == [123, 124]  # image k of a turn seeded s: s + k


def test_hand_edits_steer_the_next_turns(live) -> None:
    with client(live, live.alice) as alice:
        thread = alice.post("/threads", json={}).json()["id"]
        first = picked(run(alice, thread, "a watercolor painting of a red fox"))
        assert {"civitai:101", "civitai:103"} <= set(first)
        second = run(alice, thread, "in the evening", exclude=["civitai:101"], pin=["civitai:104"],
                     weights={"civitai:103": 0.35})
        picks = picked(second)
        assert "civitai:101" not in picks and "civitai:104" in picks and picks["civitai:103"]["weight"] == 0.35
        assert "civitai:101" in second["plan"]["edits"]["excluded"]
        third = picked(run(alice, thread, "with more fog"))  # kept for the thread's later turns
        assert "civitai:101" not in third and "civitai:104" in third

        unknown = alice.post(f"/threads/{thread}/runs", json={"message": "x", "stream": False, "pin": ["civitai:999"]})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "pin"
        assert "civitai:999" in unknown.json()["error"]["message"]
        both = alice.post(f"/threads/{thread}/runs", json={"message": "x", "stream": False, "pin": ["civitai:101"],
                                                           "exclude": ["civitai:101"]})
        assert both.status_code == 400 and "both pinned and excluded" in both.json()["error"]["message"]
        heavy = alice.post(f"/threads/{thread}/runs", json={"message": "x", "weights": {"civitai:101": 9}})
        assert heavy.status_code == 400


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_an_edit_with_a_painted_mask_is_a_turn_of_the_thread(live) -> None:
    with client(live, live.alice) as alice, client(live, live.bob) as bob:
        thread = alice.post("/threads", json={}).json()["id"]
        source = run(alice, thread, "a red fox", seed=2)["images"][0]
        side = Image.open(io.BytesIO(httpx.get(source["url"]).content)).width
        mask = Image.new("L", (side, side), 0)
        mask.paste(255, (0, 0, side // 2, side))  # repaint the left half
        edited = run(alice, thread, "a watercolor fox", image=source["url"], mask=png_data_url(mask), n=1)
        edit = edited["plan"]["edit"]
        assert edit["mask"] and edit["strength"] == 1.0 and "/" not in edit["image"] + edit["mask"]
        details = alice.get(f"/images/{edited['images'][0]['id']}").json()
        assert details["edit"]["mode"] == "inpaint" and details["thread_id"] == thread

        foreign = bob.post("/threads", json={}).json()["id"]
        stolen = bob.post(f"/threads/{foreign}/runs", json={"message": "mine", "stream": False, "image": source["url"]})
        assert stolen.status_code == 400 and stolen.json()["error"]["code"] == "image_not_found"
        alone = alice.post(f"/threads/{thread}/runs", json={"message": "x", "stream": False, "mask": png_data_url(mask)})
        assert alone.status_code == 400 and alone.json()["error"]["param"] == "image"
        big = alice.post(f"/threads/{thread}/runs", json={"message": "x", "stream": False,
                                                          "image": "data:image/png;base64," + "A" * 1_500_000})
        assert big.status_code == 400, "an image body over the plain limit reaches the route, which names the problem"
