"""Benchmark of the HTTP service on loopback (tiny model): `python -m loracle.evals.bench_service`.

1. Load: N concurrent chat conversations x T turns through the official `openai` client against a live
   `loracle serve` process, one key per tenant; each turn sends the history back, so the thread marker
   continues the thread. Checks: every run recorded and done, every image file present, no 5xx.
2. Overhead: `/v1/images/generations` against the same turn run in-process (`Threads.run_turn`), and
   against the engine alone (`Engine.generate` with the mix the agent chose), interleaved call by call.
   The 10% target is the service's own cost (HTTP, auth, queue, thread hop, storage lookups); the
   agent's planning, retrieval and inspection are reported separately as the gap to the engine alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

STYLES = [("101", "Watercolor Wash", ["style", "watercolor"], ["wtrclr"]),
          ("102", "Misty Forest Backgrounds", ["background", "forest", "fog"], ["mistyforest"]),
          ("103", "Red Fox", ["animal", "fox"], ["redfox"]),
          ("104", "Oil Painting", ["style", "oil painting"], ["oilpaint"])]
TURNS = ["a watercolor painting of a red fox in a misty forest", "drop the watercolor look, more oil painting",
         "same picture but at night"]


def build_world(folder: Path, db) -> Path:
    """Synthetic LoRA files for the tiny model and their catalog, imported into `db`."""
    from loracle.generation.base_models import load_base_model
    from loracle.generation.synthetic import write_synthetic_lora
    from loracle.tools.catalog_import import import_catalog
    from loracle.tools.embedder import get_embedder

    adapters = folder / "adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    tiny, lines = load_base_model("tiny"), []
    for i, (ext, name, tags, triggers) in enumerate(STYLES):
        write_synthetic_lora(adapters / f"lora_{ext}.safetensors", tiny, seed=200 + i)
        lines.append(json.dumps({"id": int(ext), "name": name, "tags": tags, "trigger_words": triggers,
                                 "description": f"{name} adapter.", "base_model": "SD 1.5", "recommended_weight": 0.9,
                                 "example_prompts": [f"a picture, {triggers[0]}"], "file": {"name": f"lora_{ext}.safetensors"}}))
    (folder / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    import_catalog(db, folder / "catalog.jsonl", get_embedder())
    return adapters


@contextmanager
def bench_folder(prefix: str) -> Iterator[tuple[Path, str]]:
    """A temporary folder the embedded server's user can read, and a database URL: LORACLE_BENCH_DATABASE_URL, or
    an embedded PostgreSQL under the folder (removed with it)."""
    from loracle.db.server import start_embedded

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        yield folder, os.environ.get("LORACLE_BENCH_DATABASE_URL") or start_embedded(folder / "pgdata", cleanup_mode="delete")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(base_url: str, server: subprocess.Popen, timeout_s: float = 180) -> bool:
    """Poll /readyz until it answers 200; False if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() <= deadline and server.poll() is None:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def conversation(base_url: str, key: str, index: int, turns: int, latencies: list[float]) -> str:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=20, timeout=600)
    messages: list[dict] = []
    thread = ""
    for turn in range(turns):
        messages.append({"role": "user", "content": TURNS[turn % len(TURNS)]})
        started = time.perf_counter()
        reply = await client.chat.completions.create(model="loracle", messages=messages, seed=index)
        latencies.append(time.perf_counter() - started)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
        thread = reply.model_extra["thread_id"]
    await client.close()
    return thread


def server_metrics(base_url: str, admin_key: str) -> dict[str, float]:
    totals: dict[str, float] = {"5xx": 0.0, "429": 0.0, "requests": 0.0}
    for line in httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {admin_key}"}).text.splitlines():
        if line.startswith("loracle_http_requests_total{"):
            status = re.search(r'status="(\d+)"', line).group(1)
            value = float(line.rsplit(" ", 1)[1])
            totals["requests"] += value
            totals["5xx"] += value if status.startswith("5") else 0
            totals["429"] += value if status == "429" else 0
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--overhead-calls", type=int, default=10)
    parser.add_argument("--overhead-steps", type=int, default=30, help="Steps in the overhead comparison.")
    args = parser.parse_args()
    # One intra-op thread on both sides: on a small shared machine torch's default pool oversubscribes the
    # cores (the engine alone ran ~25x slower here), which would swamp what this benchmark compares.
    import torch

    torch.set_num_threads(1)

    from loracle.agent.runtime import build_context
    from loracle.agent.settings import Settings
    from loracle.agent.threads import Threads
    from loracle.db import connect
    from loracle.db.keys import create_key

    with bench_folder("loracle-bench-") as (folder, url):
        db = connect(url, folder / "pgdata")
        adapters = build_world(folder, db)
        keys = []
        with db.connection() as conn:
            for t in range(args.tenants):
                keys.append(create_key(conn, f"bench-{t}-{time.time_ns()}")[1])
            admin_key = create_key(conn, f"bench-admin-{time.time_ns()}", admin=True)[1]  # /metrics is for admins
        env = {**os.environ, "LORACLE_DATABASE_URL": url, "LORACLE_HOME": str(folder / "home"), "LORACLE_BASE_MODEL": "tiny",
               "LORACLE_ADAPTER_DIRS": json.dumps([str(adapters)]), "LORACLE_STEPS": str(args.steps),
               "LORACLE_N_IMAGES": "1", "LORACLE_SKIP_THRESHOLD": "0", "LORACLE_MAX_RETRIES": "0",
               "LORACLE_API_WORKERS": str(args.workers), "LORACLE_API_QUEUE_SIZE": "64",
               "LORACLE_API_PER_TENANT": "8", "LORACLE_API_MAX_STEPS": "200", "OMP_NUM_THREADS": "1"}
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "loracle.cli.main", "serve", "--port", str(port), "--log-level", "warning"],
                                  env=env, stderr=subprocess.DEVNULL)
        try:
            if not wait_until_ready(base_url, server):
                raise SystemExit("the server did not start")

            # 1. load
            latencies: list[float] = []

            async def load() -> list[str]:
                return await asyncio.gather(*[conversation(base_url, keys[i % len(keys)], i, args.turns, latencies)
                                              for i in range(args.conversations)])

            before = server_metrics(base_url, admin_key)  # /readyz answered 503 while the model loaded; not counted
            started = time.perf_counter()
            threads = asyncio.run(load())
            wall = time.perf_counter() - started
            metrics = {k: v - before[k] for k, v in server_metrics(base_url, admin_key).items()}
            with db.connection() as conn:
                statuses = dict(conn.execute("SELECT status, count(*) FROM runs WHERE thread_id = ANY(%s) GROUP BY status",
                                             (threads,)).fetchall())
                per_thread = conn.execute("SELECT count(*) FROM runs WHERE thread_id = ANY(%s) GROUP BY tenant, thread_id",
                                          (threads,)).fetchall()
                paths = [r[0] for r in conn.execute("SELECT path FROM images")]
            missing = [p for p in paths if not (folder / "home" / "images" / p).is_file()]
            turns = args.conversations * args.turns
            print(f"load: {args.conversations} conversations x {args.turns} turns ({turns} runs, {args.tenants} tenants, "
                  f"{args.steps} steps, 1 image, {args.workers} workers)")
            print(f"  wall {wall:.1f} s, throughput {turns / wall:.2f} turns/s, "
                  f"latency p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s")
            print(f"  runs recorded: {statuses} (expected done={turns}); threads with {args.turns} runs: "
                  f"{sum(1 for (n,) in per_thread if n == args.turns)}/{args.conversations}")
            print(f"  image files present: {len(paths) - len(missing)}/{len(paths)}; "
                  f"5xx: {int(metrics['5xx'])}; 429 (retried by the client): {int(metrics['429'])}")
            ok = statuses == {"done": turns} and not missing and metrics["5xx"] == 0

            # 2. overhead, interleaved call by call
            settings = Settings(home=folder / "home", database_url=url, base_model="tiny", adapter_dirs=[adapters],
                                steps=args.overhead_steps, n_images=1, skip_threshold=0.0, max_retries=0, llm_model=None)
            direct_threads = Threads(url)
            ctx = build_context(settings, db, tenant="bench-direct")
            engine = ctx.engine_factory()
            from loracle.generation.engine import GenerationRequest
            from loracle.generation.guidance import GuidanceSettings
            from loracle.generation.skipping import SkipSettings

            http = httpx.Client(base_url=base_url, timeout=600, headers={"Authorization": f"Bearer {keys[0]}"})
            times: dict[str, list[float]] = {"api": [], "agent": [], "engine": []}
            prompt = "an oil painting of a red fox"
            for i in range(args.overhead_calls + 1):  # the first round warms caches and is not counted
                t0 = time.perf_counter()
                response = http.post("/v1/images/generations", json={"prompt": prompt, "n": 1, "seed": i,
                                                                     "steps": args.overhead_steps})
                t1 = time.perf_counter()
                state = direct_threads.run_turn(ctx, f"direct-{i}", prompt, n_images=1, seed=i)
                t2 = time.perf_counter()
                mix = state["images"][0]["mix"]
                engine.generate(GenerationRequest(prompt=state["images"][0]["prompt"], mixes=[mix], seeds=[i],
                                                  steps=args.overhead_steps, scheduler=settings.scheduler,
                                                  guidance=GuidanceSettings(kind="cfg", scale=ctx.guidance_scale),
                                                  skipping=SkipSettings(threshold=0.0)))
                t3 = time.perf_counter()
                assert response.status_code == 200, response.text
                if i:
                    times["api"].append(t1 - t0)
                    times["agent"].append(t2 - t1)
                    times["engine"].append(t3 - t2)
            direct_threads.close()
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"overhead ({args.overhead_calls} interleaved calls, {args.overhead_steps} steps, 1 image; medians):")
            print(f"  /v1/images/generations {med['api']:.3f} s | in-process agent turn {med['agent']:.3f} s | engine alone "
                  f"{med['engine']:.3f} s")
            print(f"  service over in-process agent: {100 * (med['api'] / med['agent'] - 1):+.1f}% (target <= 10%); "
                  f"over the engine alone: {100 * (med['api'] / med['engine'] - 1):+.1f}%")
            ok = ok and med["api"] <= 1.10 * med["agent"]
        finally:
            server.terminate()
            server.wait(timeout=30)
            db.close()
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
