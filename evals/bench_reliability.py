"""Crash and outage benchmark on loopback (tiny model): `python -m loracle.evals.bench_reliability`.

1. Kill -9: N concurrent two-turn conversations against a live `loracle serve`; the first round runs to the end,
   the server is killed with SIGKILL in the middle of the second, then restarted. Checks: every accepted request
   (every run row) ends done or interrupted, every done run has all its images on disk, no image file without a
   row, no run left queued or running.
2. Database outage: a server on its own embedded PostgreSQL under a steady load; the postmaster is killed with
   SIGKILL. Prints the seconds until `/readyz` is green again (loracle is not restarted) and that no run is
   left running once it is.

Loads are bounded (the tiny model, 2 steps, 1 image, 2 workers) so it can run on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg

from loracle.evals.bench_service import TURNS, bench_folder, build_world, free_port, wait_until_ready


def serve(env: dict[str, str], port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loracle.cli.main", "serve", "--port", str(port), "--log-level",
                             "warning"], env=env, stderr=subprocess.DEVNULL)


async def two_turns(base_url: str, key: str, index: int, second_started: asyncio.Event) -> str:
    """The first turn to the end, then the second (which the kill may cut); the thread id."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=20, timeout=600)
    messages = [{"role": "user", "content": TURNS[0]}]
    reply = await client.chat.completions.create(model="loracle", messages=messages, seed=index)
    thread = reply.model_extra["thread_id"]
    messages += [{"role": "assistant", "content": reply.choices[0].message.content}, {"role": "user", "content": TURNS[1]}]
    await second_started.wait()  # every conversation's second turn goes at once
    try:
        await client.with_options(max_retries=0).chat.completions.create(model="loracle", messages=messages, seed=index)
    except Exception:  # noqa: BLE001 - the server is killed under it
        pass
    await client.close()
    return thread


def count(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def orphan_files(images_dir: Path, url: str) -> list[str]:
    named = {r[0] for r in count(url, "SELECT path FROM images")}
    return sorted(str(p.relative_to(images_dir)) for p in images_dir.rglob("*")
                  if p.is_file() and "uploads" not in p.parts and str(p.relative_to(images_dir)) not in named)


def kill_mid_run(args: argparse.Namespace, folder: Path, url: str, adapters: Path) -> bool:
    from loracle.db.keys import create_key

    with psycopg.connect(url, autocommit=True) as conn:
        keys = [create_key(conn, f"crash-{t}-{time.time_ns()}")[1] for t in range(args.tenants)]
    home = folder / "home"
    env = {**os.environ, "LORACLE_DATABASE_URL": url, "LORACLE_HOME": str(home), "LORACLE_BASE_MODEL": "tiny",
           "LORACLE_ADAPTER_DIRS": json.dumps([str(adapters)]), "LORACLE_STEPS": str(args.steps),
           "LORACLE_N_IMAGES": "1", "LORACLE_SKIP_THRESHOLD": "0", "LORACLE_MAX_RETRIES": "0",
           "LORACLE_API_WORKERS": str(args.workers), "LORACLE_API_QUEUE_SIZE": "128", "LORACLE_API_PER_TENANT": "16",
           "OMP_NUM_THREADS": "1"}
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = serve(env, port)
    if not wait_until_ready(base_url, server):
        raise SystemExit("the server did not start")
    second_started = asyncio.Event()
    loop = asyncio.new_event_loop()
    round_one = threading.Event()

    async def load() -> list[str]:
        tasks = [asyncio.ensure_future(two_turns(base_url, keys[i % len(keys)], i, second_started))
                 for i in range(args.conversations)]
        while count(url, "SELECT count(*) FROM runs WHERE status = 'done'")[0][0] < args.conversations:
            await asyncio.sleep(0.2)
        round_one.set()
        second_started.set()
        return await asyncio.gather(*tasks)

    result: dict[str, list[str]] = {}
    runner = threading.Thread(target=lambda: result.setdefault("threads", loop.run_until_complete(load())))
    runner.start()
    round_one.wait()
    # kill once a few second-round runs are done and others are running or queued
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = count(url, "SELECT count(*) FROM runs WHERE status = 'done'")[0][0]
        if done >= args.conversations + args.kill_after:
            break
        time.sleep(0.05)
    before = dict(count(url, "SELECT status, count(*) FROM runs GROUP BY status"))
    server.send_signal(signal.SIGKILL)
    server.wait(30)
    runner.join(600)
    print(f"kill -9: {args.conversations} conversations x 2 turns ({args.tenants} tenants, {args.steps} steps, 1 image, "
          f"{args.workers} workers); killed in round 2 with runs {before}")
    left_running = dict(count(url, "SELECT status, count(*) FROM runs GROUP BY status"))
    started = time.perf_counter()
    server = serve(env, port)
    try:
        if not wait_until_ready(base_url, server):
            raise SystemExit("the server did not restart")
        print(f"  restart: ready in {time.perf_counter() - started:.1f} s; before it, runs were {left_running}")
        statuses = dict(count(url, "SELECT status, count(*) FROM runs GROUP BY status"))
        accepted = sum(statuses.values())
        done_without_images = count(url, "SELECT r.id FROM runs r WHERE r.status = 'done' AND NOT EXISTS "
                                         "(SELECT 1 FROM images i WHERE i.run_id = r.id)")
        paths = [r[0] for r in count(url, "SELECT i.path FROM images i JOIN runs r ON r.id = i.run_id "
                                          "WHERE r.status = 'done'")]
        missing = [p for p in paths if not (home / "images" / p).is_file()]
        orphans = orphan_files(home / "images", url)
        print(f"  accepted requests (run rows): {accepted}; after restart: {statuses}")
        print(f"  done runs without images: {len(done_without_images)}; images of done runs on disk: "
              f"{len(paths) - len(missing)}/{len(paths)}; files without a row: {len(orphans)}")
        ok = set(statuses) <= {"done", "interrupted"} and not done_without_images and not missing and not orphans
    finally:
        server.terminate()
        server.wait(timeout=60)
    return ok


def database_outage(args: argparse.Namespace, folder: Path) -> bool:
    home = folder / "outage"
    env = {**os.environ, "LORACLE_HOME": str(home), "LORACLE_BASE_MODEL": "tiny", "LORACLE_STEPS": str(args.steps),
           "LORACLE_N_IMAGES": "1", "LORACLE_SKIP_THRESHOLD": "0", "LORACLE_MAX_RETRIES": "0",
           "LORACLE_API_WORKERS": str(args.workers), "LORACLE_API_DB_WAIT_S": "1", "OMP_NUM_THREADS": "1"}
    env.pop("LORACLE_DATABASE_URL", None)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = serve(env, port)
    try:
        if not wait_until_ready(base_url, server):
            raise SystemExit("the server did not start")
        stop, codes = threading.Event(), []

        def load(i: int) -> None:  # local mode (no key on this fresh database): any bearer value
            with httpx.Client(base_url=base_url, timeout=120) as http:
                while not stop.is_set():
                    try:
                        codes.append(http.post("/v1/chat/completions", json={
                            "model": "loracle", "messages": [{"role": "user", "content": "a red fox"}]}).status_code)
                    except httpx.TransportError:
                        codes.append(0)
                        time.sleep(0.2)

        clients = [threading.Thread(target=load, args=(i,)) for i in range(args.outage_clients)]
        for c in clients:
            c.start()
        time.sleep(3)  # load running
        pgdata = home / "pgdata"
        postmaster = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        killed = time.perf_counter()
        os.kill(postmaster, signal.SIGKILL)
        red_seen, green_after = False, None
        while time.perf_counter() - killed < 300:
            try:
                ok = httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                ok = False
            red_seen = red_seen or not ok
            if red_seen and ok:
                green_after = time.perf_counter() - killed
                break
            time.sleep(0.1)
        time.sleep(2)
        stop.set()
        for c in clients:
            c.join(180)
        url = f"host={pgdata} user=postgres dbname=postgres"
        deadline = time.monotonic() + 60
        while count(url, "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')")[0][0] and time.monotonic() < deadline:
            time.sleep(0.5)
        statuses = dict(count(url, "SELECT status, count(*) FROM runs GROUP BY status"))
        by_code = {code: codes.count(code) for code in sorted(set(codes))}
        print(f"database outage: embedded PostgreSQL killed (SIGKILL) under {args.outage_clients} clients")
        print(f"  /readyz green again after {green_after:.1f} s without restarting loracle" if green_after else
              "  /readyz did not turn green within 300 s")
        print(f"  responses by status (0 = connection error): {by_code}; runs: {statuses}; 5xx other than 503: "
              f"{sum(n for c, n in by_code.items() if c >= 500 and c != 503)}")
        return green_after is not None and not {"queued", "running"} & set(statuses)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-after", type=int, default=10, help="Second-round runs done before the kill.")
    parser.add_argument("--outage-clients", type=int, default=4)
    args = parser.parse_args()

    from loracle.db import connect

    with bench_folder("loracle-bench-") as (folder, url):
        with connect(url, folder / "pgdata") as db:
            adapters = build_world(folder, db)
        ok = kill_mid_run(args, folder, url, adapters)
        ok = database_outage(args, folder) and ok
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
