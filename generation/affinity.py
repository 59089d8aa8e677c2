"""Adapter-affinity routing: which sampler replica should take a request, given what each one holds.

Loading an adapter costs hundreds of times more than switching between loaded ones, so a request should go
where most of its adapters already are. Pure policy, no Ray: the Ray Serve request router
(`generation/ray_serving.py`) and the routing simulation (`evals/bench_routing.py`) call the same function.

Two guards keep affinity from hurting balance:
* a replica more than `slack` requests behind the least busy one gets no affinity preference, so a hot
  adapter spills over to a second replica (which then holds it too) instead of piling onto its first holder;
* routers record a request's adapters on the chosen replica as soon as they route it (`Placement.routed`),
  so the second request for a new adapter follows the first instead of racing it to another replica.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ReplicaView:
    """What a router knows about one replica when it routes a request."""

    replica_id: str
    loaded: frozenset[str]  # adapter refs it holds (or is about to, for requests already routed to it)
    in_flight: int = 0  # requests queued or running on it


def rank_replicas(wanted: Collection[str], replicas: Sequence[ReplicaView], *, slack: int = 2,
                  rng: random.Random | None = None) -> list[list[str]]:
    """Replica ids in ranks, most preferred first: replicas holding more of `wanted` first (among those at most
    `slack` requests busier than the least busy replica), then every replica, least busy and emptiest first.
    Ties are broken at random: a fixed order would send every cold request to the same replica."""
    if not replicas:
        return []
    wanted = set(wanted)
    replicas = list(replicas)
    (rng or random).shuffle(replicas)
    least = min(r.in_flight for r in replicas)
    by_overlap: dict[int, list[ReplicaView]] = {}
    for replica in replicas:
        overlap = len(wanted & replica.loaded)
        if overlap and replica.in_flight <= least + slack:
            by_overlap.setdefault(overlap, []).append(replica)
    ranks = [sorted(by_overlap[k], key=lambda r: r.in_flight) for k in sorted(by_overlap, reverse=True)]
    ranks.append(sorted(replicas, key=lambda r: (r.in_flight, len(r.loaded))))
    return [[r.replica_id for r in rank] for rank in ranks]


@dataclass
class Placement:
    """A router's picture of which adapters each replica holds: an LRU of `capacity` refs per replica, updated
    when the router routes a request and replaced by what the replica itself reports, when it reports."""

    capacity: int
    held: dict[str, OrderedDict[str, None]] = field(default_factory=dict)

    def loaded(self, replica_id: str) -> frozenset[str]:
        return frozenset(self.held.get(replica_id, ()))

    def routed(self, replica_id: str, refs: Iterable[str]) -> None:
        lru = self.held.setdefault(replica_id, OrderedDict())
        for ref in refs:
            lru[ref] = None
            lru.move_to_end(ref)
        while len(lru) > self.capacity:
            lru.popitem(last=False)

    def reported(self, replica_id: str, refs: Sequence[str]) -> None:
        """The replica's own list (least recently used first) replaces the guess."""
        self.held[replica_id] = OrderedDict.fromkeys(refs)

    def keep_only(self, replica_ids: Collection[str]) -> None:
        for gone in set(self.held) - set(replica_ids):
            del self.held[gone]
