"""Ray on this machine: `python -m loracle.evals.bench_ray [--requests 8] [--catalog FILE --records 300]`.

1. Sampler replicas: requests per second through one Sampler replica and through two, on the digits world
   (4 images, 30 DDIM steps, CFG, a style LoRA each), ratio in one run.
2. Catalog import: the same records embedded locally and as a Ray Data job into two fresh databases on one
   embedded PostgreSQL: wall time of both, and whether every stored vector is identical.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import psycopg
import ray
from ray import serve

from loracle.agent.placement import sampler_application
from loracle.agent.settings import Settings
from loracle.generation.engine import GenerationRequest
from loracle.generation.guidance import GuidanceSettings
from loracle.generation.ray_serving import RemoteEngine
from loracle.generation.world import world_paths

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def bench_replicas(requests: int, home: Path, rounds: int = 2) -> None:
    """Each replica count is measured `rounds` times, alternating (1, 2, 1, 2), so drift in the machine's load
    hits both alike; clients keep every replica full (2 requests in flight per replica, its max_ongoing_requests)
    and no more, so no request waits in the router's back-off."""
    settings = Settings(home=home, base_model="world")
    refs = sorted(p.stem for p in world_paths().loras.glob("*.safetensors"))
    work = [GenerationRequest("a bold seven", mixes=[{refs[i % len(refs)]: 0.8}] * 4, steps=30, scheduler="ddim",
                              guidance=GuidanceSettings("cfg", 1.5), seed=i) for i in range(requests)]
    rates: dict[int, list[float]] = {1: [], 2: []}
    for replicas in [1, 2] * rounds:
        name = f"bench{replicas}"
        serve.run(sampler_application(settings, replicas=replicas), name=name, route_prefix=None)
        remote = RemoteEngine.connect(name)
        with ThreadPoolExecutor(2 * replicas) as pool:
            list(pool.map(remote.generate, work[: 2 * replicas]))  # every replica pays its one-time setup
            started = time.perf_counter()
            list(pool.map(remote.generate, work))
            rates[replicas].append(requests / (time.perf_counter() - started))
        serve.delete(name)
        print(f"{replicas} Sampler replica(s): {rates[replicas][-1]:.2f} requests/s ({requests} requests, "
              f"{2 * replicas} in flight)")
    one, two = statistics.mean(rates[1]), statistics.mean(rates[2])
    print(f"mean: one replica {one:.2f} requests/s, two {two:.2f}; two / one: {two / one:.2f}x")


def bench_import(catalog: Path, records: int, folder: Path) -> None:
    from loracle.db import connect
    from loracle.db.server import start_embedded
    from loracle.tools.catalog_import import import_catalog
    from loracle.tools.embedder import get_embedder
    from loracle.tools.ray_embed import RayDataEmbedder

    subset = folder / "catalog.jsonl"
    with catalog.open() as source:
        subset.write_text("".join(islice(source, records)))
    server = start_embedded(folder / "pgdata", cleanup_mode="delete")
    stored, seconds = [], {}
    for label, embedder in (("local", get_embedder()), ("ray data", RayDataEmbedder())):
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        info = psycopg.conninfo.conninfo_to_dict(server)
        with connect(psycopg.conninfo.make_conninfo(**{**info, "dbname": name}), folder / "unused") as db:
            started = time.perf_counter()
            report = import_catalog(db, subset, embedder)
            seconds[label] = time.perf_counter() - started
            with db.connection() as conn:
                stored.append(conn.execute(
                    "SELECT a.external_id, e.kind, e.position, e.embedding::text FROM adapter_embeddings e "
                    "JOIN adapters a ON a.id = e.adapter_id ORDER BY 1, 2, 3").fetchall())
        print(f"{label:>8} import of {records} records: {seconds[label]:.1f} s ({report.summary()})")
    same = sum(a == b for a, b in zip(*stored))
    print(f"ray data / local wall time: {seconds['ray data'] / seconds['local']:.2f}x; "
          f"identical vectors: {same} of {len(stored[0])} (and {len(stored[1])} rows on Ray)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--catalog", type=Path, default=SHARED_DATA / "catalog" / "civitai_loras.jsonl")
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--skip-import", action="store_true")
    args = parser.parse_args(argv)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            serve.start(http_options={"host": "127.0.0.1", "port": 0})
            bench_replicas(args.requests, Path(tmp) / "home")
            serve.shutdown()
            if not args.skip_import:
                if not args.catalog.exists():
                    parser.error(f"{args.catalog} not found (pass --catalog)")
                bench_import(args.catalog, args.records, Path(tmp))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
