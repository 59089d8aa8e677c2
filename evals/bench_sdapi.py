"""Overhead of the A1111 API (tiny model): `python -m loracle.evals.bench_sdapi [--calls 10] [--steps 30]`.

`/sdapi/v1/txt2img` on a live `loracle serve` against the same agent turn run in-process (`Agent.run_turn` with
the sampling options the route builds from the body), interleaved call by call, medians. What the difference
holds is the route's own cost: HTTP, auth, validation, the queue and thread hop, reading the PNG back and
base64 in the JSON answer. Target: <= 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import httpx

from loracle.evals.bench_service import bench_folder, build_world, free_port, wait_until_ready

TARGET = 1.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10, help="Measured calls per side (one more warms up).")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # one intra-op thread on both sides, as the server runs (OMP_NUM_THREADS=1)

    from loracle.agent.options import SamplingOptions
    from loracle.agent.service import open_agent
    from loracle.agent.settings import Settings
    from loracle.db import connect
    from loracle.db.keys import create_key

    with bench_folder("loracle-bench-sdapi-") as (folder, url):
        db = connect(url, folder / "pgdata")
        adapters = build_world(folder, db)
        with db.connection() as conn:
            key = create_key(conn, f"bench-sdapi-{time.time_ns()}")[1]
        common = {"LORACLE_DATABASE_URL": url, "LORACLE_BASE_MODEL": "tiny", "LORACLE_ADAPTER_DIRS": json.dumps([str(adapters)]),
                  "LORACLE_N_IMAGES": "1", "LORACLE_SKIP_THRESHOLD": "0", "LORACLE_MAX_RETRIES": "0"}
        env = {**os.environ, **common, "LORACLE_HOME": str(folder / "server"), "LORACLE_API_WORKERS": "1",
               "LORACLE_API_MAX_STEPS": "200", "OMP_NUM_THREADS": "1"}
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "loracle.cli.main", "serve", "--port", str(port), "--log-level", "warning"],
                                  env=env, stderr=subprocess.DEVNULL)
        settings = Settings(home=folder / "direct", database_url=url, base_model="tiny", adapter_dirs=[adapters],
                            n_images=1, skip_threshold=0.0, max_retries=0, llm_model=None)
        try:
            if not wait_until_ready(base_url, server):
                raise SystemExit("the server did not start")
            http = httpx.Client(base_url=base_url, timeout=600, headers={"Authorization": f"Bearer {key}"})
            prompt = "an oil painting of a red fox"
            times: dict[str, list[float]] = {"sdapi": [], "agent": []}
            with open_agent(settings) as agent:
                agent.prepare()
                agent.load_engine()
                for i in range(args.calls + 1):  # the first round warms caches and is not counted
                    t0 = time.perf_counter()
                    response = http.post("/sdapi/v1/txt2img", json={"prompt": prompt, "seed": i, "steps": args.steps})
                    t1 = time.perf_counter()
                    state = agent.run_turn(f"direct-{i}", prompt, n_images=1, seed=i,
                                           sampling=SamplingOptions(steps=args.steps, negative_prompt=""))
                    t2 = time.perf_counter()
                    assert response.status_code == 200 and len(response.json()["images"]) == 1, response.text[:500]
                    assert len(state["images"]) == 1
                    if i:
                        times["sdapi"].append(t1 - t0)
                        times["agent"].append(t2 - t1)
            with db.connection() as conn:  # each run's own duration, as recorded, per side (the warm-up left out)
                runs = conn.execute("SELECT thread_id LIKE 'direct-%%', extract(epoch FROM finished_at - created_at) FROM runs "
                                    "WHERE status = 'done' AND thread_id <> 'direct-0' ORDER BY created_at").fetchall()
        finally:
            server.terminate()
            server.wait(timeout=30)
            db.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["sdapi"] / med["agent"]
    print(f"A1111 API overhead ({args.calls} interleaved calls, {args.steps} steps, 1 image, tiny model; medians):")
    print(f"  /sdapi/v1/txt2img {med['sdapi']:.3f} s | in-process agent turn {med['agent']:.3f} s | "
          f"overhead {100 * (ratio - 1):+.1f}% (target <= {100 * (TARGET - 1):.0f}%)")
    inside = {side: statistics.median([float(d) for direct, d in runs if direct == (side == "agent")][-args.calls:])
              for side in times}
    print(f"  the runs themselves (created to finished, as recorded): in the server {inside['sdapi']:.3f} s | "
          f"in-process {inside['agent']:.3f} s")
    print("PASS" if ratio <= TARGET else "FAIL")
    sys.exit(0 if ratio <= TARGET else 1)


if __name__ == "__main__":
    main()
