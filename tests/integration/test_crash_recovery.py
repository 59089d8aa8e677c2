"""Crashes and outages leave no lies: a real `loracle serve` killed with SIGKILL mid-run, then restarted (the
accepted runs end interrupted, no image file without a row); its embedded PostgreSQL killed (restarted by the
server, /readyz green again); SIGTERM stopping the embedded PostgreSQL with the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import psycopg

from tests.integration.api_server import build_world, free_port, fresh_database, sse_events


def wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=5).status_code == 200


@contextmanager
def serve(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`loracle serve` as a user starts it, on a free loopback port, until it is ready; killed at the end."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "loracle.cli.main", "serve", "--host", "127.0.0.1", "--port",
                                    str(port)], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is None and ready(url), f"the server to be ready (log: {log.read_text()[-2000:]})",
                 240)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def world_env(folder: Path, url: str, embedder) -> dict[str, str]:
    settings = build_world(folder, url, embedder)
    return {"LORACLE_DATABASE_URL": url, "LORACLE_HOME": str(settings.home), "LORACLE_BASE_MODEL": "tiny",
            "LORACLE_ADAPTER_DIRS": json.dumps([str(d) for d in settings.adapter_dirs]), "LORACLE_N_IMAGES": "2",
            "LORACLE_MAX_RETRIES": "0", "LORACLE_SKIP_THRESHOLD": "0", "LORACLE_API_WORKERS": "1",
            "LORACLE_LLM_MODEL": ""}


def test_sigkill_mid_run_then_restart(server_url, embedder, tmp_path) -> None:
    with fresh_database(server_url) as db_url:
        env = world_env(tmp_path, db_url, embedder)
        images_dir = Path(env["LORACLE_HOME"]) / "images"
        with serve(env, tmp_path / "serve.log") as (process, url):
            sampling, run_ids = threading.Event(), []

            def stream(thread: str) -> None:
                try:
                    with httpx.Client(base_url=url, timeout=120) as c:
                        c.post("/threads", json={"id": thread})
                        with c.stream("POST", f"/threads/{thread}/runs", json={"message": "a red fox", "steps": 50}) as r:
                            for kind, data in sse_events(r):
                                if kind == "run" and data["run_id"] not in run_ids:
                                    run_ids.append(data["run_id"])
                                if kind == "progress":
                                    sampling.set()
                except httpx.TransportError:
                    pass  # the server is killed under it

            # one worker: the first run samples while the other two wait in the queue
            workers = [threading.Thread(target=stream, args=(f"crash-{i}",)) for i in range(3)]
            for worker in workers:
                worker.start()
            assert sampling.wait(120), "no run started sampling"
            wait_for(lambda: len(run_ids) == 3, "three accepted runs", 30)
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            for worker in workers:
                worker.join(30)
        with httpx.Client(timeout=120) as c, serve(env, tmp_path / "serve2.log") as (_, url):
            runs = [c.get(f"{url}/runs/{run_id}").json() for run_id in run_ids]
            statuses = [r["status"] for r in runs]
            assert set(statuses) == {"interrupted"}, runs
            assert all(r["finished_at"] and "interrupted" in r["error"] for r in runs)
            assert all("/" not in r["error"].split(":", 1)[1] for r in runs), "no server path in the reason"
            with psycopg.connect(db_url) as conn:
                named = {r[0] for r in conn.execute("SELECT path FROM images")}
            files = {str(p.relative_to(images_dir)) for p in images_dir.rglob("*") if p.is_file()}
            assert files <= named, f"files without a row: {files - named}"
            follow = c.post(f"{url}/threads/crash-0/runs", json={"message": "at night", "stream": False})
            assert follow.status_code == 200
            history = c.get(f"{url}/threads/crash-0").json()["history"]
            assert history == ["at night"], "the killed turn's message does not leak into the next turn"


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])


def test_embedded_database_killed_heals_and_sigterm_stops_it(tmp_path) -> None:
    home = tmp_path / "home"
    env = {"LORACLE_HOME": str(home), "LORACLE_BASE_MODEL": "tiny", "LORACLE_DATABASE_URL": "",
           "LORACLE_API_DB_WAIT_S": "1"}
    with serve(env, tmp_path / "serve.log") as (process, url):
        first = postmaster_pid(home / "pgdata")
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not ready(url), "/readyz to notice the outage", 60)
        wait_for(lambda: ready(url), "/readyz to turn green again without a restart", 120)
        second = postmaster_pid(home / "pgdata")
        assert second != first and process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) is not None
        wait_for(lambda: not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE,
                 "SIGTERM to stop the embedded PostgreSQL", 60)
        handles = home / "pgdata" / ".handle_pids.json"
        assert not handles.exists() or process.pid not in json.loads(handles.read_text() or "[]")
