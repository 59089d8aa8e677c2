"""The service object the routes share: the agent, the run queue, and starting runs.

A run executes `Agent.run_turn` on a worker thread; its events cross to the event loop through an
asyncio queue, so a stream can relay them as they happen and a disconnect can set its cancel event.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from loracle.agent.access import shared_link_secret
from loracle.agent.errors import Cancelled
from loracle.agent.options import SamplingOptions
from loracle.agent.plan import Edits
from loracle.agent.service import Agent
from loracle.agent.settings import Settings
from loracle.api.config import ApiConfig
from loracle.api.metrics import Metrics
from loracle.api.queue import RunQueue
from loracle.api.signing import Signer
from loracle.api.uploads import EditInput

log = logging.getLogger("loracle.api")
_END = object()
# A run's sampling steps reach the event loop at most this often (the first and last always): each event wakes the
# loop thread, whose GIL handoffs slowed a tiny model's run by ~30% on a loaded 2-core machine at one event per step.
PROGRESS_EVERY_S = 0.1


@dataclass
class Principal:
    """Who is calling: the tenant that owns what they make, and whether they may administer the catalog."""

    tenant: str
    key_name: str
    admin: bool = False


@dataclass
class RunHandle:
    """One run in flight: its events as they come, its final state, and the switch that cancels it."""

    thread_id: str
    run_id: str
    cancel: threading.Event
    result: asyncio.Future
    events: asyncio.Queue = field(default_factory=asyncio.Queue)

    async def stream(self, heartbeat_s: float) -> AsyncIterator[dict[str, Any] | None]:
        """Events until the run ends (None every `heartbeat_s` of silence, for keep-alives)."""
        while True:
            try:
                event = await asyncio.wait_for(self.events.get(), heartbeat_s)
            except TimeoutError:
                yield None
                continue
            if event is _END:
                return
            yield event

    async def wait(self) -> dict[str, Any]:
        return await asyncio.shield(self.result)


class Service:
    """Long-lived state of one app: opened in the lifespan, closed at shutdown."""

    def __init__(self, agent: Agent, config: ApiConfig, *, allow_local: bool, metrics: Metrics) -> None:
        self.agent, self.config = agent, config
        self.allow_local = allow_local
        self.keys_created = False  # set once a key is seen: local mode never comes back (api/auth.py)
        self.started_at = int(time.time())
        self.metrics = metrics
        self.queue = RunQueue(config.workers, config.queue_size, config.per_tenant)
        self.signer = Signer.from_home(self.settings.home, config.secret or shared_link_secret(agent))
        self.engine_ready = threading.Event()
        self.engine_error: str | None = None
        self._repair = threading.Lock()
        self.stop_watching = agent.watch_database()

    @property
    def settings(self) -> Settings:
        """The agent's settings now (an A1111 client may switch the base model)."""
        return self.agent.settings

    def warm_engine(self) -> None:
        """Load the base model once, so the first request is not the slow one and /readyz can say so."""
        try:
            self.agent.load_engine()
            self.engine_ready.set()
        except Exception as exc:  # a bad model path: readiness reports it, requests fail with the reason
            cause = exc.__cause__ or exc
            self.engine_error = f"{type(cause).__name__}: {cause}"
            log.error("could not load the base model: %s", self.engine_error)

    def native_size(self) -> int:
        return self.agent.native_size()

    def repair_pools(self) -> None:
        """After a database error: drop broken pooled connections (in the background, one check at a time)."""
        def check() -> None:
            if not self._repair.acquire(blocking=False):
                return
            try:
                self.agent.check_pools()
            finally:
                self._repair.release()

        threading.Thread(target=check, name="loracle-pool-check", daemon=True).start()

    async def start_run(self, principal: Principal, thread_id: str, message: str, *, n_images: int | None = None,
                        seed: int | None = None, steps: int | None = None, edit: EditInput | None = None,
                        sampling: SamplingOptions | None = None, edits: Edits | None = None) -> RunHandle:
        """Accept a turn: a place in the queue (QueueFull when there is none), then its run recorded as queued, so
        an accepted request always has a run to look up; its handle, at once. `edit`: an image to edit,
        `sampling`: the request's own sampler options, `edits`: adapter edits made by hand."""
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        events: asyncio.Queue = asyncio.Queue()
        self.queue.reserve(principal.tenant)
        recording = asyncio.ensure_future(run_in_threadpool(self.agent.queue_run, thread_id, message,
                                                            tenant=principal.tenant, cancel=cancel))
        try:
            run_id = await asyncio.shield(recording)
        except BaseException:
            self.queue.release(principal.tenant)
            recording.add_done_callback(self._abandon_if_recorded)
            raise

        last_progress = 0.0

        def push(event: dict[str, Any]) -> None:
            nonlocal last_progress
            if event.get("event") == "progress" and event.get("step") != event.get("steps"):
                if time.monotonic() - last_progress < PROGRESS_EVERY_S:
                    return
                last_progress = time.monotonic()
            loop.call_soon_threadsafe(events.put_nowait, event)

        def run() -> dict[str, Any]:
            return self.agent.run_turn(thread_id, message, tenant=principal.tenant, n_images=n_images, seed=seed,
                                       steps=steps, on_event=push, cancel=cancel, sampling=sampling, edits=edits,
                                       run_id=run_id,
                                       **(edit.turn() if edit else {}))

        events.put_nowait({"event": "run", "run_id": run_id, "thread_id": thread_id, "status": "queued"})
        future = self.queue.run(principal.tenant, run)
        self.metrics.runs_started.inc()

        def finished(fut: asyncio.Future) -> None:
            events.put_nowait(_END)
            exc = fut.exception() if not fut.cancelled() else Cancelled("cancelled")
            status = "done" if exc is None else "cancelled" if isinstance(exc, Cancelled) else "failed"
            self.metrics.runs_finished.labels(status).inc()

        future.add_done_callback(finished)
        return RunHandle(thread_id=thread_id, run_id=run_id, cancel=cancel, result=future, events=events)

    def _abandon_if_recorded(self, recording: asyncio.Future) -> None:
        """The request went away while its run was being recorded: that run will never start."""
        if not recording.cancelled() and recording.exception() is None:
            threading.Thread(target=self.agent.abandon_run, args=(recording.result(), "the client disconnected"),
                             daemon=True).start()

    def close(self) -> None:
        self.stop_watching()
        self.queue.shutdown()
        self.agent.close()
