"""Routing simulation toward internet scale: `python -m loracle.evals.bench_routing [--plot routing.png]`.

Replays real requests over simulated sampler replicas, each holding an LRU of K adapters, and compares four
ways of choosing a replica: random, round-robin, Ray Serve's model multiplexing keyed on one adapter id (the
request's first), and the adapter-affinity router (`generation/affinity.py`, the same function the Ray
request router calls). Per setting it prints adapter loads per request, cache hit rate, max/mean requests
per replica and p50/p95 of simulated latency.

Workloads:
* replay: the Civitai prompts (`../shared/data/prompts/civitai_prompts.jsonl`) in file order with their real
  LoRA choices. The file holds at most one prompt per LoRA until every LoRA is used, so a single pass repeats
  almost nothing (1,241 distinct adapters over 2,000 prompts: no router can go below 0.62 loads per
  request). `--session` gives each prompt a session of that many turns on average (a user re-rolling and
  refining one picture, as loracle's threads do), interleaved with other users' sessions.
* replay-shuffled: the same prompts and LoRA choices in random order (the file's order is how it was built,
  not how traffic arrives), so repeats of a popular adapter are spread over the stream.
* zipf: adapters drawn in proportion to the catalog's download counts (a Zipf-like popularity), mix sizes as
  in the replay, with the same sessions.

Bounds are printed with the routers. No router can beat `bound:inf`, which loads only each adapter's first use
(unlimited caches), nor `bound:opt`, Belady's optimal eviction over one pooled cache of replicas x K slots (any
placement over K-slot replicas loads at least this much). `bound:lru` is that pooled cache under LRU, the
replicas' own eviction: what routing alone can reach when it loses nothing to splitting the cache.

Costs come from this machine: `--measure` (default) times a cold adapter load, a warm mix switch and one
request's sampling on the digits world; `--cold-ms/--switch-ms/--sample-ms` override them.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loracle.generation.affinity import ReplicaView, rank_replicas

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
POLICIES = ("random", "round-robin", "multiplex", "affinity")
BOUNDS = ("bound:inf", "bound:opt", "bound:lru")


@dataclass(frozen=True)
class Costs:
    cold_s: float  # load one adapter that the replica does not hold (read, convert, inject)
    switch_s: float  # switch to another mix of adapters the replica holds
    sample_s: float  # one request's sampling, adapters ready


@dataclass(frozen=True)
class Request:
    arrival: float
    adapters: tuple[str, ...]


# ------------------------------------------------------------------------------------------------ workloads


def replay_mixes(prompts: Path) -> list[tuple[str, ...]]:
    mixes = []
    for line in prompts.read_text().splitlines():
        row = json.loads(line)
        mixes.append(tuple(dict.fromkeys(str(i) for i in row["lora_ids"])))
    return mixes


def zipf_mixes(catalog: Path, sizes: list[int], n: int, rng: random.Random) -> list[tuple[str, ...]]:
    """`n` mixes of adapters drawn in proportion to their download counts, sizes drawn from `sizes`."""
    ids, weights = [], []
    for line in catalog.read_text().splitlines():
        row = json.loads(line)
        ids.append(str(row["id"]))
        weights.append(max(1, (row.get("stats") or {}).get("downloadCount") or 1))
    mixes = []
    for _ in range(n):
        size = rng.choice(sizes)
        mixes.append(tuple(dict.fromkeys(rng.choices(ids, weights, k=size))))
    return mixes


def with_sessions(mixes: list[tuple[str, ...]], mean_turns: float, rate: float, think_s: float,
                  rng: random.Random) -> list[Request]:
    """Each mix starts a session (Poisson starts at `rate` requests/s overall) of geometric length with mean
    `mean_turns`; its turns follow each other `think_s` apart on average."""
    session_rate = rate / mean_turns
    requests, t = [], 0.0
    for mix in mixes:
        t += rng.expovariate(session_rate)
        turn_t = t
        while True:
            requests.append(Request(turn_t, mix))
            if rng.random() < 1 / mean_turns:
                break
            turn_t += rng.expovariate(1 / think_s)
    return sorted(requests, key=lambda r: r.arrival)


# ------------------------------------------------------------------------------------------------ replicas


@dataclass
class Replica:
    replica_id: str
    k: int
    cache: OrderedDict[str, None] = field(default_factory=OrderedDict)  # as it will be when its queue is done
    finishes: deque[float] = field(default_factory=deque)  # finish times of queued and running requests
    free_at: float = 0.0
    last_mix: tuple[str, ...] | None = None
    served: int = 0
    models: OrderedDict[str, float] = field(default_factory=OrderedDict)  # multiplexing: model id -> visible from

    def in_flight(self, now: float) -> int:
        while self.finishes and self.finishes[0] <= now:
            self.finishes.popleft()
        return len(self.finishes)

    def serve(self, request: Request, costs: Costs) -> tuple[float, int, int]:
        """Queue the request (FIFO); returns (finish time, adapter loads, adapter hits)."""
        hits = sum(a in self.cache for a in request.adapters)
        loads = len(request.adapters) - hits
        for adapter in request.adapters:
            self.cache[adapter] = None
            self.cache.move_to_end(adapter)
        while len(self.cache) > self.k:
            self.cache.popitem(last=False)
        switch = costs.switch_s if request.adapters and request.adapters != self.last_mix else 0.0
        start = max(request.arrival, self.free_at)
        self.free_at = start + costs.sample_s + loads * costs.cold_s + switch
        self.finishes.append(self.free_at)
        self.last_mix = request.adapters
        self.served += 1
        if request.adapters:  # Ray Serve learns a replica's model ids once it has loaded them
            self.models[request.adapters[0]] = start
            self.models.move_to_end(request.adapters[0])
            while len(self.models) > self.k:
                self.models.popitem(last=False)
        return self.free_at, loads, hits


Router = Callable[[Request, list[Replica]], Replica]


def make_router(policy: str, rng: random.Random, max_ongoing: int) -> Router:
    counter = itertools.count()

    def least_busy_of_two(now: float, pool: list[Replica]) -> Replica:  # Ray Serve's power of two choices
        pair = rng.sample(pool, min(2, len(pool)))
        return min(pair, key=lambda r: r.in_flight(now))

    def route(request: Request, replicas: list[Replica]) -> Replica:
        now = request.arrival
        if policy == "random":
            return rng.choice(replicas)
        if policy == "round-robin":
            return replicas[next(counter) % len(replicas)]
        if policy == "multiplex":
            open_ = [r for r in replicas if r.in_flight(now) < max_ongoing] or replicas
            if not request.adapters:
                return least_busy_of_two(now, open_)
            key = request.adapters[0]
            holders = [r for r in open_ if r.models.get(key, float("inf")) <= now]
            if holders:
                return least_busy_of_two(now, holders)
            fewest = min(len(r.models) for r in open_)
            return least_busy_of_two(now, [r for r in open_ if len(r.models) == fewest])
        views = [ReplicaView(r.replica_id, frozenset(r.cache), r.in_flight(now)) for r in replicas]
        by_id = {r.replica_id: r for r in replicas}
        for rank in rank_replicas(request.adapters, views, rng=rng):
            open_ = [by_id[i] for i in rank if by_id[i].in_flight(now) < max_ongoing]
            if open_:
                return open_[0]
        return min(replicas, key=lambda r: r.in_flight(now))

    return route


@dataclass
class Outcome:
    loads_per_request: float
    hit_rate: float
    max_over_mean: float
    p50_s: float
    p95_s: float


def simulate(requests: list[Request], n_replicas: int, k: int, policy: str, costs: Costs, *,
             seed: int = 0, max_ongoing: int = 4) -> Outcome:
    replicas = [Replica(f"r{i}", k) for i in range(n_replicas)]
    route = make_router(policy, random.Random(seed), max_ongoing)
    loads = hits = 0
    latencies = []
    for request in requests:
        finish, request_loads, request_hits = route(request, replicas).serve(request, costs)
        loads += request_loads
        hits += request_hits
        latencies.append(finish - request.arrival)
    served = [r.served for r in replicas]
    wanted = loads + hits
    return Outcome(loads / len(requests), hits / wanted if wanted else 1.0, max(served) / statistics.mean(served),
                   float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95)))


def pooled_lru_loads(requests: list[Request], capacity: int) -> Outcome:
    """Adapter loads per request of one LRU cache of `capacity` slots shared by every replica."""
    cache: OrderedDict[str, None] = OrderedDict()
    loads = uses = 0
    for request in requests:
        for adapter in request.adapters:
            uses += 1
            if adapter in cache:
                cache.move_to_end(adapter)
                continue
            loads += 1
            cache[adapter] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    nan = float("nan")
    return Outcome(loads / len(requests), 1 - loads / uses if uses else 1.0, nan, nan, nan)


def bound_loads(requests: list[Request], capacity: int | None) -> Outcome:
    """Adapter loads per request of the best possible placement: Belady's optimal eviction (evict the adapter
    used again furthest in the future) over one cache of `capacity` slots; None: unlimited (first uses only).
    A pooled cache relaxes K-slot replicas (and lets a mix be split), so no router loads less."""
    uses = [a for r in requests for a in r.adapters]
    next_use, last = [0.0] * len(uses), {}
    for i in range(len(uses) - 1, -1, -1):
        next_use[i], last[uses[i]] = last.get(uses[i], float("inf")), i
    cache: dict[str, float] = {}  # adapter -> its next use
    furthest: list[tuple[float, str]] = []  # (-next use, adapter), stale entries skipped
    loads = 0
    for i, adapter in enumerate(uses):
        if adapter not in cache:
            loads += 1
            if capacity is not None and len(cache) >= capacity:
                while True:
                    negative, victim = heapq.heappop(furthest)
                    if cache.get(victim) == -negative:
                        del cache[victim]
                        break
        cache[adapter] = next_use[i]
        heapq.heappush(furthest, (-next_use[i], adapter))
    nan = float("nan")
    return Outcome(loads / len(requests), 1 - loads / len(uses) if uses else 1.0, nan, nan, nan)


# ------------------------------------------------------------------------------------------------ costs


def measure_costs(repeats: int = 5) -> Costs:
    """Cold load, warm switch and one request's sampling on the digits world (loracle's default base model)."""
    import torch

    from loracle.generation.adapters import AdapterManager
    from loracle.generation.base_models import load_base_model
    from loracle.generation.engine import Engine, GenerationRequest
    from loracle.generation.guidance import GuidanceSettings
    from loracle.generation.world import world_paths

    torch.set_num_threads(1)
    paths = world_paths()
    refs = sorted(p.stem for p in paths.loras.glob("*.safetensors"))
    cold, switch = [], []
    for i in range(repeats):
        manager = AdapterManager(load_base_model(str(paths.base)), [paths.loras], max_loaded=8)
        started = time.perf_counter()
        manager.activate({refs[i % len(refs)]: 0.8})
        cold.append(time.perf_counter() - started)
    mixes = [{refs[0]: 0.8}, {refs[1]: 0.6, refs[2]: 0.4}, {refs[3]: 0.8}]
    for mix in mixes:
        manager.activate(mix)
    for _ in range(repeats):
        for mix in mixes:
            started = time.perf_counter()
            manager.activate(mix)
            switch.append(time.perf_counter() - started)
    engine = Engine(load_base_model(str(paths.base)), [paths.loras])
    request = dict(prompt="a bold seven", mixes=[{refs[0]: 0.8}] * 4, steps=30, scheduler="ddim",
                   guidance=GuidanceSettings("cfg", 1.5))
    engine.generate(GenerationRequest(**request))  # first call pays one-time setup
    sample = []
    for seed in range(3):
        started = time.perf_counter()
        engine.generate(GenerationRequest(**request, seed=seed))
        sample.append(time.perf_counter() - started)
    return Costs(statistics.median(cold), statistics.median(switch), statistics.median(sample))


# ------------------------------------------------------------------------------------------------ main


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["workload"], r["session"]) for r in rows})
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7), squeeze=False)
    for col, (workload, session) in enumerate(panels):
        for policy in POLICIES:
            mine = sorted((r for r in rows if (r["workload"], r["session"], r["policy"]) == (workload, session, policy)),
                          key=lambda r: r["replicas"])
            xs = [r["replicas"] for r in mine]
            axes[0][col].plot(xs, [r["loads_per_request"] for r in mine], marker="o", label=policy)
            axes[1][col].plot(xs, [r["p95_s"] for r in mine], marker="o", label=policy)
        axes[0][col].set_title(f"{workload}, {session:g} turns per session")
        axes[0][col].set_ylabel("adapter loads per request")
        axes[1][col].set_ylabel("p95 latency (s)")
        axes[1][col].set_yscale("log")
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("replicas")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, default=SHARED_DATA / "prompts" / "civitai_prompts.jsonl")
    parser.add_argument("--catalog", type=Path, default=SHARED_DATA / "catalog" / "civitai_loras.jsonl")
    parser.add_argument("--replicas", default="4,8,16,32,64", help="comma-separated replica counts")
    parser.add_argument("--k", type=int, default=8, help="adapters each replica keeps loaded")
    parser.add_argument("--session", default="1,4", help="mean turns per session, comma-separated")
    parser.add_argument("--utilisation", type=float, default=0.6, help="offered load per replica (of sampling time)")
    parser.add_argument("--think", type=float, default=10.0, help="mean time between a session's turns, in sampling times")
    parser.add_argument("--zipf-requests", type=int, default=4000)
    parser.add_argument("--cold-ms", type=float)
    parser.add_argument("--switch-ms", type=float)
    parser.add_argument("--sample-ms", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, help="write a PNG of loads per request and p95 latency")
    parser.add_argument("--json", type=Path, help="write every row as JSON")
    args = parser.parse_args(argv)
    for path in (args.prompts, args.catalog):
        if not path.exists():
            parser.error(f"{path.name} not found (pass --prompts / --catalog; the defaults read ../shared/data)")

    if None in (args.cold_ms, args.switch_ms, args.sample_ms):
        measured = measure_costs()
        print(f"measured on the digits world: cold load {measured.cold_s * 1000:.1f} ms per adapter, warm switch "
              f"{measured.switch_s * 1000:.2f} ms, sampling {measured.sample_s * 1000:.0f} ms per request "
              "(4 images, 30 DDIM steps, CFG)")
    else:
        measured = Costs(0, 0, 0)
    costs = Costs(args.cold_ms / 1000 if args.cold_ms is not None else measured.cold_s,
                  args.switch_ms / 1000 if args.switch_ms is not None else measured.switch_s,
                  args.sample_ms / 1000 if args.sample_ms is not None else measured.sample_s)
    print(f"costs used: cold {costs.cold_s * 1000:.1f} ms, switch {costs.switch_s * 1000:.2f} ms, "
          f"sample {costs.sample_s * 1000:.0f} ms; K = {args.k}; utilisation {args.utilisation}")

    rng = random.Random(args.seed)
    replay = replay_mixes(args.prompts)
    sizes = [len(m) for m in replay if m]
    shuffled = replay[:]
    random.Random(args.seed).shuffle(shuffled)
    workloads = {"replay": replay, "replay-shuffled": shuffled,
                 "zipf": zipf_mixes(args.catalog, sizes, args.zipf_requests, rng)}
    rows = []
    for (name, mixes), session in itertools.product(workloads.items(), [float(s) for s in args.session.split(",")]):
        distinct, uses = len({a for m in mixes for a in m}), sum(len(m) for m in mixes)
        print(f"\n== {name}: {len(mixes)} sessions, {distinct} distinct adapters in {uses} uses (before sessions' "
              f"repeats), {session:g} turns per session ==")
        print(f"{'replicas':>8} {'policy':<12} {'loads/req':>9} {'hit rate':>8} {'max/mean':>8} {'p50 s':>8} {'p95 s':>8}")
        for n in [int(x) for x in args.replicas.split(",")]:
            rate = args.utilisation * n / costs.sample_s
            requests = with_sessions(mixes, session, rate, args.think * costs.sample_s, random.Random(args.seed + n))
            for policy in POLICIES + BOUNDS:
                if policy == "bound:lru":
                    o = pooled_lru_loads(requests, n * args.k)
                elif policy in BOUNDS:
                    o = bound_loads(requests, None if policy == "bound:inf" else n * args.k)
                else:
                    o = simulate(requests, n, args.k, policy, costs, seed=args.seed)
                rows.append({"workload": name, "session": session, "replicas": n, "policy": policy,
                             "requests": len(requests), **o.__dict__})
                print(f"{n:>8} {policy:<12} {o.loads_per_request:9.3f} {o.hit_rate:8.3f} {o.max_over_mean:8.2f} "
                      f"{o.p50_s:8.3f} {o.p95_s:8.3f}")
            mine = {r["policy"]: r["loads_per_request"] for r in rows[-len(POLICIES + BOUNDS):]}
            vs_random = {p: mine[p] / mine["random"] if mine["random"] else float("nan") for p in mine}
            print(f"{'':>8} loads per request / random's: affinity {vs_random['affinity']:.2f} (goal <= 0.33); best "
                  f"possible {vs_random['bound:opt']:.2f}, unlimited caches {vs_random['bound:inf']:.2f}, pooled LRU "
                  f"{vs_random['bound:lru']:.2f}")
    if args.plot:
        plot(rows, args.plot)
        print(f"\nplot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps({"costs": costs.__dict__, "k": args.k, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
