"""Sampling and catalog embedding on a local Ray cluster (2 CPUs, loopback): Sampler replicas against the local
engine, adapter-affinity routing, a replica killed mid-request, the API as a Serve ingress, Ray Data import."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from loracle.agent.placement import sampler_application  # noqa: E402
from loracle.agent.runtime import build_context  # noqa: E402
from loracle.db.runs import get_run  # noqa: E402
from loracle.generation.base_models import build_tiny_model  # noqa: E402
from loracle.generation.engine import Engine, GenerationRequest  # noqa: E402
from loracle.generation.ray_serving import RemoteEngine, SamplerUnavailable  # noqa: E402
from loracle.generation.ray_serving import sampler_application as bind_sampler  # noqa: E402
from loracle.generation.skipping import SkipSettings  # noqa: E402
from loracle.generation.synthetic import write_synthetic_lora  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> int:
    """A local Ray with this machine's 2 CPUs and Serve's HTTP proxy, both on loopback; yields the proxy's port."""
    from tests.integration.api_server import free_port

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def deploy(cluster):
    """Deploy a Serve application under a fresh name; deleted when the test ends."""
    names = []

    def run(app, route_prefix: str | None = None, name: str | None = None) -> str:
        name = name or f"t{uuid.uuid4().hex[:8]}"
        names.append(name)
        serve.run(app, name=name, route_prefix=route_prefix)
        return name

    yield run
    for name in names:
        serve.delete(name)


def tiny_engine(folder: str, max_loaded: int) -> Engine:
    return Engine(build_tiny_model(), [folder], max_loaded=max_loaded)


def request(mix: dict[str, float], **kw) -> GenerationRequest:
    kw.setdefault("steps", 6)
    return GenerationRequest("a red fox", mixes=[mix], scheduler="ddim", skipping=SkipSettings(threshold=0.0), seed=3, **kw)


def test_sampler_replicas_match_the_local_engine_and_keep_mixes_where_they_are_loaded(deploy, tmp_path: Path) -> None:
    base = build_tiny_model()
    for i in range(2):
        write_synthetic_lora(tmp_path / f"a{i}.safetensors", base, seed=i)
    # one adapter per replica: a router that ignored affinity would reload on almost every request
    build = functools.partial(tiny_engine, str(tmp_path), 1)
    remote = RemoteEngine.connect(deploy(bind_sampler(build, replicas=2, capacity=1, num_cpus=0.5)))
    local = build()

    first = remote.generate(request({"a0": 0.8}))
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(local.generate(request({"a0": 0.8})).images[0]))
    where = {}
    for i in range(9):
        ref = f"a{(i + 1) % 2}"
        where.setdefault(ref, set()).add(remote.generate(request({ref: 0.8})).served_by)
    assert len(where["a0"]) == len(where["a1"]) == 1 and where["a0"] != where["a1"], where
    stats = list(remote.replicas.values())
    assert sum(s.requests for s in stats) == 10
    assert sum(s.adapter_loads for s in stats) == 2 and sum(s.adapter_hits for s in stats) == 8
    assert sorted(s.held for s in stats) == [("a0",), ("a1",)]


def test_a_replica_killed_mid_run_is_retried_elsewhere_or_the_run_fails_cleanly(deploy, world, db) -> None:
    settings, threads = world
    app = deploy(sampler_application(settings, replicas=2, num_cpus=0.5))
    ctx = build_context(settings.model_copy(update={"sampler_app": app}), db)
    remote = ctx.engine_factory()
    killed: list[str] = []
    kills_per_run = 1

    def kill_on_first_progress(event: dict) -> None:
        """Kill the replica working on this run the first time it reports progress (once per run)."""
        if event["event"] == "run":
            nonlocal kills_per_run
            kills_per_run = 1
        elif event["event"] == "progress" and kills_per_run:
            kills_per_run -= 1
            killed.append(remote.serving)
            ray.kill(ray.get_actor(remote.serving, namespace="serve"), no_restart=True)

    state = threads.run_turn(ctx, "t-retried", "a watercolor painting of a red fox", seed=7, on_event=kill_on_first_progress)
    assert len(killed) == 1
    with db.connection() as conn:
        run = get_run(conn, state["run_id"])
    assert run["status"] == "done" and run["timings"]["sampler_retries"] == 1
    assert run["sampler_replica"] in remote.replicas and run["sampler_replica"] != killed[0] and run["sampler_retried"], \
        "the replica that finished it"
    assert len(run["images"]) == 2 and all((settings.images_dir / i["path"]).is_file() for i in run["images"])

    remote.retries = 0  # the next death is final: the run fails and stores nothing
    with pytest.raises(SamplerUnavailable):
        threads.run_turn(ctx, "t-failed", "a watercolor painting of a red fox", seed=8, on_event=kill_on_first_progress)
    assert len(killed) == 2
    with db.connection() as conn:
        status, error = conn.execute("SELECT status, error FROM runs WHERE thread_id = 't-failed'").fetchone()
        assert status == "failed" and "SamplerUnavailable" in error
        assert conn.execute("SELECT count(*) FROM images WHERE run_id <> %s", (run["id"],)).fetchone() == (0,)


def test_the_api_as_a_serve_ingress_answers_the_openai_client(cluster, deploy, server_url, embedder, tmp_path: Path) -> None:
    from openai import OpenAI

    from loracle.api.ray_app import build_application
    from tests.integration.api_server import build_world, create_key, fresh_database

    with fresh_database(server_url) as url:
        settings = build_world(tmp_path, url, embedder)
        key = create_key(url, "ray-test")
        app = deploy(build_application(settings, app_name="api-on-ray", sampler_replicas=1, sampler_cpus=0.5),
                     route_prefix="/", name="api-on-ray")
        client = OpenAI(base_url=f"http://127.0.0.1:{cluster}/v1", api_key=key, max_retries=0, timeout=120)
        reply = client.chat.completions.create(model="loracle", messages=[{"role": "user", "content": "a red fox"}])
        answer = reply.choices[0].message.content
        assert "Red Fox" in answer and "/v1/images/" in answer, answer
        sampler = serve.get_deployment_handle("Sampler", app_name=app)
        assert sampler.stats.remote().result().requests == 1  # the image was drawn by the Sampler replica
        api = httpx.Client(base_url=f"http://127.0.0.1:{cluster}", headers={"Authorization": f"Bearer {key}"}, timeout=60)
        thread = api.get("/threads").json()["threads"][0]["id"]
        run = api.get(f"/threads/{thread}").json()["runs"][0]
        assert f"{app}#Sampler#" in run["sampler_replica"] and run["sampler_retried"] is False, run
        image = api.get(httpx.URL(run["images"][0]["url"]).path)
        assert image.headers["content-type"] == "image/png" and not list(settings.home.rglob("*.png")), "from the database"


def synthetic_catalog(path: Path, n: int) -> Path:
    """`n` small records: enough texts that a kind spans several encoding slices."""
    import json

    words = ["fox", "forest", "watercolor", "neon", "castle", "portrait", "ink", "desert", "robot", "autumn"]
    with path.open("w") as out:
        for i in range(n):
            a, b = words[i % 10], words[(i * 7 + 3) % 10]
            out.write(json.dumps({"id": 5000 + i, "name": f"{a.title()} {b} {i}", "tags": [a, b], "trigger_words": [f"{a}{i}"],
                                  "description": f"Draws {a} scenes with a {b} look, version {i}.",
                                  "base_model": "SD 1.5"}) + "\n")
    return path


def test_ray_data_import_equals_the_local_import_vector_for_vector(cluster, db, server_url, embedder, tmp_path: Path) -> None:
    from loracle.db import connect
    from loracle.tools.catalog_import import import_catalog
    from loracle.tools.embedder import SLICE
    from loracle.tools.ray_embed import RayDataEmbedder
    from tests.integration.api_server import fresh_database

    catalog = synthetic_catalog(tmp_path / "catalog.jsonl", SLICE + 20)
    on_ray = RayDataEmbedder()
    local_report = import_catalog(db, catalog, embedder)
    with fresh_database(server_url) as url, connect(url, tmp_path / "unused") as ray_db:
        ray_report = import_catalog(ray_db, catalog, on_ray)
        rows = []
        for database in (db, ray_db):
            with database.connection() as conn:
                rows.append(conn.execute(
                    "SELECT a.external_id, e.kind, e.position, e.text_hash, e.embedding::text FROM adapter_embeddings e "
                    "JOIN adapters a ON a.id = e.adapter_id ORDER BY 1, 2, 3").fetchall())
    assert local_report.embedded == ray_report.embedded == len(rows[0]) > 2 * SLICE
    assert rows[0] == rows[1]
