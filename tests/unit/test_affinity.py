"""Adapter-affinity routing: the ranking the Ray request router and the simulation share, and the simulation."""

from __future__ import annotations

import random

from loracle.evals.bench_routing import Costs, Request, bound_loads, pooled_lru_loads, simulate
from loracle.generation.affinity import Placement, ReplicaView, rank_replicas


def test_replicas_holding_more_of_the_mix_come_first_then_everyone_least_busy_first() -> None:
    replicas = [ReplicaView("a", frozenset({"x"}), 1), ReplicaView("b", frozenset({"x", "y"}), 1),
                ReplicaView("c", frozenset(), 0)]
    ranks = rank_replicas(["x", "y"], replicas)
    assert ranks[:2] == [["b"], ["a"]]
    assert ranks[-1][0] == "c" and sorted(ranks[-1]) == ["a", "b", "c"]


def test_a_holder_far_busier_than_the_least_busy_replica_gets_no_preference() -> None:
    replicas = [ReplicaView("hot", frozenset({"x"}), 5), ReplicaView("idle", frozenset(), 0)]
    assert rank_replicas(["x"], replicas, slack=2) == [["idle", "hot"]]
    assert rank_replicas(["x"], replicas, slack=5)[0] == ["hot"]


def test_cold_requests_spread_over_equally_idle_replicas() -> None:
    replicas = [ReplicaView(str(i), frozenset(), 0) for i in range(4)]
    rng = random.Random(0)
    firsts = {rank_replicas(["new"], replicas, rng=rng)[0][0] for _ in range(40)}
    assert firsts == {"0", "1", "2", "3"}


def test_placement_follows_routing_and_yields_to_reports() -> None:
    placement = Placement(capacity=2)
    placement.routed("r", ["a", "b"])
    placement.routed("r", ["c"])
    assert placement.loaded("r") == {"b", "c"}
    placement.reported("r", ["a"])
    assert placement.loaded("r") == {"a"}
    placement.keep_only([])
    assert placement.loaded("r") == frozenset()


def test_affinity_reuses_loaded_adapters_where_random_routing_reloads_them() -> None:
    rng = random.Random(1)
    mixes = [(f"lora{i}",) for i in range(40)]
    requests = sorted((Request(rng.uniform(0, 100), mix) for mix in mixes for _ in range(4)), key=lambda r: r.arrival)
    costs = Costs(cold_s=0.1, switch_s=0.001, sample_s=0.5)
    affinity = simulate(requests, 8, 8, "affinity", costs)
    randomly = simulate(requests, 8, 8, "random", costs)
    assert affinity.loads_per_request <= 0.3 < randomly.loads_per_request
    assert affinity.max_over_mean <= 1.5


def test_the_bounds_count_first_uses_and_beladys_evictions() -> None:
    """a b c a b d a with 2 slots: LRU misses all 7 uses; Belady keeps a (and b while it is needed again): 5."""
    requests = [Request(float(i), (ref,)) for i, ref in enumerate("abcabda")]
    assert bound_loads(requests, None).loads_per_request == 4 / 7  # a, b, c, d once each
    assert bound_loads(requests, 2).loads_per_request == 5 / 7
    assert pooled_lru_loads(requests, 2).loads_per_request == 7 / 7


def test_no_router_beats_the_optimal_bound() -> None:
    rng = random.Random(2)
    requests = sorted((Request(rng.uniform(0, 100), (f"lora{int(rng.paretovariate(1.2))}",)) for _ in range(400)),
                      key=lambda r: r.arrival)
    costs = Costs(cold_s=0.1, switch_s=0.001, sample_s=0.5)
    optimal = bound_loads(requests, 4 * 2).loads_per_request
    assert bound_loads(requests, None).loads_per_request <= optimal
    for policy in ("random", "round-robin", "multiplex", "affinity"):
        assert simulate(requests, 4, 2, policy, costs).loads_per_request >= optimal, policy
