"""Sampling on Ray Serve: sampler replicas that keep their adapters warm, routed by adapter affinity.

* `SamplerReplica`, a deployment: one engine per replica (one per GPU, or per CPU slot), an LRU of loaded
  adapters, progress streamed back while it samples, its held adapters reported to routers.
* `AdapterAffinityRouter`, a Ray Serve request router: ranks replicas by how many of the request's adapters
  they hold (`generation/affinity.py`), least busy first, and falls back to the least busy replica.
* `RemoteEngine`: the local engine's `generate(GenerationRequest) -> GenerationResult` over a deployment
  handle, so the agent runs unchanged on either placement. A replica that dies mid-request is retried once
  on another replica; a second failure raises `SamplerUnavailable` and nothing was written.

Ray is an optional extra (`pip install 'loracle[ray]'`); nothing imports this module unless asked to.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.config import RequestRouterConfig
from ray.serve.handle import DeploymentHandle
from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

from loracle.generation.affinity import Placement, ReplicaView, rank_replicas
from loracle.generation.engine import GenerationRequest, GenerationResult
from loracle.generation.loop import GenerationCancelled, Progress
from loracle.generation.sampler import EngineInfo, Sampler, SamplerStats, request_adapters

log = logging.getLogger("loracle.ray")
DEPLOYMENT = "Sampler"
_DONE = object()


class SamplerUnavailable(RuntimeError):
    """No sampler replica could finish the request (each one tried died or was unreachable)."""


@dataclasses.dataclass(frozen=True)
class Assigned:
    """The first item of a replica's answer: which replica took the request."""

    replica: str


@dataclasses.dataclass(frozen=True)
class Served:
    """A replica's answer: the result, and its own counters as they stand after this request."""

    result: GenerationResult
    stats: SamplerStats


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=2, ray_actor_options={"num_cpus": 1})
class SamplerReplica:
    """One engine, built on the replica from `build_engine` (weights are loaded where they are used)."""

    def __init__(self, build_engine: Callable[[], Any], torch_threads: int | None = 1) -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.sampler = Sampler(build_engine(), name=serve.get_replica_context().replica_id.to_full_id_str())

    def info(self) -> EngineInfo:
        return self.sampler.info()

    def stats(self) -> SamplerStats:
        return self.sampler.stats()

    def record_routing_stats(self) -> dict[str, Any]:
        """Polled by Serve's controller; routers read it as `RunningReplica.routing_stats`."""
        return {"held": list(self.sampler.stats().held), "at": time.time()}

    def generate(self, request: GenerationRequest) -> Iterator[Assigned | Progress | Served]:
        """Who took it, progress events while sampling, then the result (a streaming call)."""
        yield Assigned(self.sampler.name)
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()  # set when the caller goes away (the generator is closed)
        request = dataclasses.replace(request, callback=events.put, cancel=cancel)

        def run() -> None:
            try:
                result = self.sampler.generate(request)
                events.put(Served(result, self.sampler.stats()))
            except BaseException as exc:  # re-raised in the generator, where Serve sends it to the caller
                events.put(exc)
            finally:
                events.put(_DONE)

        worker = threading.Thread(target=run, name="loracle-sample", daemon=True)
        worker.start()
        try:
            while (item := events.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            worker.join()


class AdapterAffinityRouter(FIFOMixin, RequestRouter):
    """Routes a GenerationRequest to the replica holding most of its adapters (see generation/affinity.py).

    Each router keeps its own picture of what every replica holds, updated as it routes (so the second request
    for a new adapter follows the first) and replaced by what the replica reports (so several ingress replicas,
    each with its own router, converge). Requests routed after a report are laid over it again.
    """

    def initialize_state(self, capacity: int = 8, slack: int = 2, **kwargs: Any) -> None:
        self.placement = Placement(capacity)
        self.slack = slack
        self.reports: dict[str, float] = {}
        self.recent: deque[tuple[float, str, tuple[str, ...]]] = deque(maxlen=1024)

    def _refresh(self, replicas: list[RunningReplica]) -> None:
        self.placement.keep_only([r.replica_id.unique_id for r in replicas])
        for replica in replicas:
            stats, rid = replica.routing_stats or {}, replica.replica_id.unique_id
            if "held" in stats and stats.get("at", 0) > self.reports.get(rid, 0):
                self.reports[rid] = stats["at"]
                self.placement.reported(rid, stats["held"])
                for at, routed_to, refs in self.recent:
                    if routed_to == rid and at > stats["at"]:
                        self.placement.routed(rid, refs)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        self._refresh(candidate_replicas)
        wanted = _wanted(pending_request)
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        views = [ReplicaView(rid, self.placement.loaded(rid), self.replica_queue_len_cache.get(r.replica_id) or 0)
                 for rid, r in by_id.items()]
        return [[by_id[rid] for rid in rank] for rank in rank_replicas(wanted, views, slack=self.slack)]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        refs = tuple(_wanted(pending_request))
        if refs:
            self.placement.routed(replica_id.unique_id, refs)
            self.recent.append((time.time(), replica_id.unique_id, refs))


def _wanted(pending_request: PendingRequest | None) -> list[str]:
    args = pending_request.args if pending_request is not None else []
    return request_adapters(args[0]) if args and isinstance(args[0], GenerationRequest) else []


def sampler_application(build_engine: Callable[[], Any], *, replicas: int = 2, capacity: int = 8,
                        num_cpus: float = 1, num_gpus: float = 0, max_ongoing_requests: int = 2):
    """The bound Sampler deployment, routed by adapter affinity (`capacity`: adapters each replica keeps)."""
    router = RequestRouterConfig(request_router_class=AdapterAffinityRouter,
                                 request_router_kwargs={"capacity": capacity}, request_routing_stats_period_s=1)
    return SamplerReplica.options(
        num_replicas=replicas, max_ongoing_requests=max_ongoing_requests, request_router_config=router,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
    ).bind(build_engine)


class RemoteEngine:
    """The engine contract (`ImageEngine`: `generate`, `native_size`, `guide_names`) served by Sampler replicas."""

    def __init__(self, handle: DeploymentHandle, *, retries: int = 1) -> None:
        self.handle = handle
        self.retries = retries
        self.info = handle.info.remote().result()
        self.replicas: dict[str, SamplerStats] = {}  # each replica's counters, as it last reported them
        # the latest request's replicas, for logs and tests (requests on other threads overwrite them)
        self.serving: str | None = None

    @property
    def native_size(self) -> int:
        return self.info.native_size

    @property
    def guide_names(self) -> frozenset[str]:
        return frozenset(self.info.guides)

    @classmethod
    def connect(cls, app_name: str, *, retries: int = 1) -> RemoteEngine:
        return cls(serve.get_deployment_handle(DEPLOYMENT, app_name=app_name), retries=retries)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        callback, cancel = request.callback, request.cancel
        remote = dataclasses.replace(request, callback=None, cancel=None)
        for attempt in range(self.retries + 1):
            try:
                result = self._stream(remote, callback, cancel)
                if attempt:
                    result.timings["sampler_retries"] = float(attempt)
                return result
            except (ActorDiedError, ActorUnavailableError) as exc:
                if attempt == self.retries:
                    raise SamplerUnavailable(f"sampler replicas died mid-request {attempt + 1} time(s) in a row "
                                             f"({type(exc).__name__}); nothing was stored") from exc
                log.warning("sampler replica %s died mid-request (%s); retrying on another replica", self.serving,
                            type(exc).__name__)
        raise AssertionError("unreachable")

    def _stream(self, request: GenerationRequest, callback, cancel: threading.Event | None) -> GenerationResult:
        served = None
        stream = self.handle.options(stream=True).generate.remote(request)
        for item in stream:
            if cancel is not None and cancel.is_set():
                stream.cancel()
                raise GenerationCancelled("cancelled")
            if isinstance(item, Assigned):
                self.serving = item.replica
            elif isinstance(item, Progress):
                if callback is not None:
                    callback(item)
            else:
                served = item
        if served is None:
            raise SamplerUnavailable("the sampler replica ended the stream without a result")
        self.replicas[served.stats.name] = served.stats
        return dataclasses.replace(served.result, served_by=served.stats.name)
