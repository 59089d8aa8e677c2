"""Images in PostgreSQL (LORACLE_IMAGE_STORE=postgres, what `loracle serve --ray` uses): two API apps over one
database, each with its own LORACLE_HOME, as two ingress replicas on two machines would be. An image made
through one is served by the other; blobs and rows are written together, and the sweep removes what no row names."""

from __future__ import annotations

import base64
import io
import threading

import httpx
import pytest
from openai import OpenAI
from PIL import Image

from loracle.api.config import ApiConfig
from loracle.db.image_blobs import put_blobs
from loracle.db.runs import add_image, queue_run
from loracle.tools.image_store import PostgresImageStore
from tests.integration.api_server import LiveServer, build_world, create_key, fresh_database


@pytest.fixture(scope="module")
def replicas(server_url, embedder, tmp_path_factory):
    with fresh_database(server_url) as url:
        settings = build_world(tmp_path_factory.mktemp("store-a"), url, embedder, image_store="postgres")
        other = settings.model_copy(update={"home": tmp_path_factory.mktemp("store-b") / "home"})
        config = ApiConfig(max_n=2, max_steps=8)
        with LiveServer(settings, config) as first, LiveServer(other, config) as second:
            yield first, second, create_key(url, "alice")


def files_under(live) -> list[str]:
    folder = live.service.settings.images_dir
    return [str(p) for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def png(color=(200, 40, 40), size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_image_made_through_one_replica_is_served_by_the_other(replicas) -> None:
    first, second, key = replicas
    made = OpenAI(base_url=f"{first.url}/v1", api_key=key, max_retries=0, timeout=120).images.generate(
        prompt="a red fox in a watercolor style", n=2, response_format="url")
    headers = {"Authorization": f"Bearer {key}"}
    for item in made.data:
        path = httpx.URL(item.url).path
        here = httpx.get(f"{first.url}{path}", headers=headers, timeout=30)
        there = httpx.get(f"{second.url}{path}", headers=headers, timeout=30)
        signed = httpx.get(f"{second.url}{path}?{httpx.URL(item.url).query.decode()}", timeout=30)  # no key: the link
        assert there.status_code == 200 and there.headers["content-type"] == "image/png", there.text
        assert there.content == here.content == signed.content
        with Image.open(io.BytesIO(there.content)) as image:
            assert image.format == "PNG" and "parameters" in image.info
    assert files_under(first) == files_under(second) == [], "nothing is written to either data directory"


def test_an_upload_to_one_replica_is_edited_and_read_back_through_the_other(replicas) -> None:
    first, second, key = replicas
    edited = OpenAI(base_url=f"{second.url}/v1", api_key=key, max_retries=0, timeout=120).images.edit(
        image=("fox.png", png(), "image/png"), prompt="a red fox", response_format="b64_json", n=1)
    encoded = base64.b64decode(edited.data[0].b64_json)
    with Image.open(io.BytesIO(encoded)) as image:
        assert image.format == "PNG"
    threads = httpx.get(f"{first.url}/threads", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
    assert threads, "the edit's thread is in the shared database"
    assert files_under(first) == files_under(second) == []


def test_deleting_a_thread_on_one_replica_removes_its_images_on_both(replicas) -> None:
    first, second, key = replicas
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=first.url, headers=headers, timeout=120) as api:
        thread = api.post("/threads", json={}).json()["id"]
        done = api.post(f"/threads/{thread}/runs", json={"message": "a blue fox at night", "stream": False, "n": 1})
        path = httpx.URL(done.json()["images"][0]["url"]).path
    assert httpx.get(f"{second.url}{path}", headers=headers, timeout=30).status_code == 200
    assert httpx.delete(f"{second.url}/threads/{thread}", headers=headers, timeout=30).status_code == 204
    assert httpx.get(f"{first.url}{path}", headers=headers, timeout=30).status_code == 404


def test_blobs_are_committed_with_their_rows_and_swept_when_no_row_names_them(db) -> None:
    store = PostgresImageStore(db)
    with db.connection() as conn:
        run = queue_run(conn, "t", "a fox")
    kept, lost = (store.stage(Image.new("RGB", (8, 8), c), "p", None) for c in ((1, 2, 3), (4, 5, 6)))
    record = {"attempt": 0, "sha256": "x", "seed": 1, "mix": {}, "nfe": 1, "parameters": "p"}
    with db.connection() as conn, conn.transaction():
        add_image(conn, run, {**record, "path": kept.path})
        store.write(conn, [kept])
    with pytest.raises(RuntimeError), db.connection() as conn, conn.transaction():
        add_image(conn, run, {**record, "path": lost.path})
        store.write(conn, [lost])
        raise RuntimeError("the run failed before its rows were committed")
    assert store.read(kept.path) == kept.data and not store.exists(lost.path), "no blob without its row"
    upload = store.put_upload("alice", Image.new("RGB", (8, 8)), "input")
    with db.connection() as conn:  # a crash between deleting a thread's rows and its blobs
        conn.execute("DELETE FROM images WHERE run_id = %s", (run,))
    assert store.sweep(lambda paths: set(), set()).removed_orphans == 1
    assert not store.exists(kept.path) and store.exists(upload), "uploads have no rows and are never swept"
    with pytest.raises(ValueError, match="input image not found: uploads/none.png"):
        store.open("uploads/none.png", "input image")


def test_a_deletion_racing_a_run_that_writes_the_same_image_keeps_the_blob(db) -> None:
    """Content-addressed blobs: while a run's transaction writes the row of an image whose blob exists, a thread
    deletion that finds no row for it waits for that transaction, then sees the row and keeps the blob."""
    store = PostgresImageStore(db)
    with db.connection() as conn:
        run = queue_run(conn, "t", "a fox")
    file = store.stage(Image.new("RGB", (8, 8), (7, 8, 9)), "p", None)
    with db.connection() as conn:  # left by a deleted thread's run: no row names it yet
        put_blobs(conn, {file.path: file.data}, "image")
    record = {"attempt": 0, "path": file.path, "sha256": file.sha256, "seed": 1, "mix": {}, "nfe": 1, "parameters": "p"}
    with db.connection() as conn:
        with conn.transaction():
            add_image(conn, run, record)
            store.write(conn, [file])
            deleting = threading.Thread(target=store.remove, args=([file.path],))
            deleting.start()
            deleting.join(timeout=0.5)
            assert deleting.is_alive(), "the deletion waits for the run's transaction"
        deleting.join(timeout=10)
    assert store.read(file.path) == file.data
