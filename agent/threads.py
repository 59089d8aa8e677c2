"""Threads that survive restarts: the graph with LangGraph's Postgres checkpointer, one turn at a time.

A run is recorded from the moment it is accepted (`queue`: status queued, owned by this process's lease,
db/owners.py), marked running when a worker takes it, and finished done, failed or cancelled; a run nobody
will finish any more (its process died, or lost the database while it ran) is marked interrupted by
`interrupt_orphans`, which a server calls at start-up and whenever the database comes back. `run_turn`
streams events to a callback. Thread ids are namespaced by tenant, so one tenant can never continue another's
thread.

A turn that did not finish (killed, failed, cancelled) leaves checkpoints of its first steps (its message in
the history, its plan); the next turn starts from the thread's last finished turn instead, so nothing of an
unfinished turn leaks into what follows, and reads of a thread show its last finished turn.

Checkpoints hold the state's pydantic models (`Plan`, `Pick`, `Finding`, ...). langgraph-checkpoint's
serializer revives a stored class by importing it by name, any class unless told otherwise (with a
warning that this will be blocked); ours is told exactly the state's models, so a checkpoint row can
name no other class to construct, and a thread reads back typed in a fresh process.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from pydantic_core import to_jsonable_python

from loracle.agent.errors import Cancelled
from loracle.agent.graph import build_graph
from loracle.agent.plan import Edits
from loracle.agent.state import AgentContext, AgentState, state_models
from loracle.db import Database
from loracle.db.owners import OwnerLease, alive_owners
from loracle.db.runs import cancel_thread_runs, finish_run, interrupt_orphans, interrupt_owned, queue_run, start_run
from loracle.generation.loop import GenerationCancelled

log = logging.getLogger(__name__)
Event = dict[str, Any]


def checkpoint_serializer() -> JsonPlusSerializer:
    """langgraph-checkpoint's serializer, reviving the state's models and no other class."""
    return JsonPlusSerializer(allowed_msgpack_modules=state_models())


LOST = "interrupted: the database connection was lost while it ran"
DEAD = "interrupted: the server process running it stopped before it finished"
STOPPED = "interrupted: the server was stopped before it finished"


@dataclass
class LiveRun:
    """A run of this process that is queued or running: what cancels it, and when it is over."""

    tenant: str
    thread_id: str
    cancel: threading.Event
    running: bool = False
    over: threading.Event = field(default_factory=threading.Event)


class Threads:
    """The compiled graph bound to a Postgres checkpointer in the same database as the catalog, and the
    runs this process owns."""

    def __init__(self, database_url: str, max_size: int = 4) -> None:
        # langgraph-checkpoint-postgres needs autocommit, dict rows and no prepared statements.
        self.pool = ConnectionPool(
            database_url, min_size=1, max_size=max_size, open=True,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        )
        self.saver = PostgresSaver(self.pool, serde=checkpoint_serializer())
        self.saver.setup()
        self.graph = build_graph(self.saver)
        self.lease = OwnerLease(database_url)
        self._live: dict[uuid.UUID, LiveRun] = {}
        self._live_lock = threading.Lock()

    def close(self, wait_s: float = 5.0) -> None:
        """Cancel this process's runs, give them `wait_s` to stop, and mark what is left interrupted."""
        with self._live_lock:
            live = [r for r in self._live.values() if r.running]  # queued ones never start now
        for run in live:
            run.cancel.set()
        deadline = time.monotonic() + wait_s
        for run in live:
            run.over.wait(max(0.0, deadline - time.monotonic()))
        try:
            with self.pool.connection() as conn:
                interrupt_owned(conn, self.lease.keys, STOPPED)
        except Exception as exc:  # the database is gone: the next start-up marks them
            log.warning("could not mark unfinished runs interrupted at shutdown: %s", exc)
        self.pool.close()
        self.lease.close()

    @staticmethod
    def config(tenant: str, thread_id: str) -> dict:
        return {"configurable": {"thread_id": f"{tenant}/{thread_id}"}}

    def _last_finished(self, tenant: str, thread_id: str):
        """The snapshot after the thread's last finished turn (None: no turn finished), and whether newer,
        unfinished checkpoints follow it."""
        config = self.config(tenant, thread_id)
        latest = self.graph.get_state(config)
        if not latest.values or not latest.next:
            return (latest if latest.values else None), False
        for snapshot in self.graph.get_state_history(config):
            if not snapshot.next:
                return snapshot, True
        return None, True

    def read(self, tenant: str, thread_id: str) -> AgentState | None:
        """The thread's typed state after its last finished turn; None for a thread that does not exist."""
        snapshot, _ = self._last_finished(tenant, thread_id)
        return AgentState(**snapshot.values) if snapshot else None

    def state(self, tenant: str, thread_id: str) -> dict[str, Any]:
        """The thread's state after its last finished turn as JSON data, the shape the run record and the API
        show; {} for no thread."""
        snapshot, _ = self._last_finished(tenant, thread_id)
        return to_jsonable_python(snapshot.values) if snapshot else {}

    def _turn_config(self, tenant: str, thread_id: str) -> dict:
        """Where a new turn starts: after the last finished turn (a fork past unfinished ones), or afresh."""
        snapshot, unfinished = self._last_finished(tenant, thread_id)
        if not unfinished:
            return self.config(tenant, thread_id)
        if snapshot is None:  # no turn of this thread ever finished: start it over
            self.delete(tenant, thread_id)
            return self.config(tenant, thread_id)
        return snapshot.config

    def delete(self, tenant: str, thread_id: str) -> None:
        self.saver.delete_thread(self.config(tenant, thread_id)["configurable"]["thread_id"])

    # -- runs

    def queue(self, tenant: str, thread_id: str, message: str, cancel: threading.Event | None = None) -> uuid.UUID:
        """Record an accepted run (queued, owned by this process) and keep it live until it is over; its id.
        Setting `cancel` stops it, queued or running."""
        run_id = uuid.uuid4()
        with self._live_lock:
            self._live[run_id] = LiveRun(tenant, thread_id, cancel or threading.Event())
        try:
            with self.pool.connection() as conn:
                queue_run(conn, thread_id, message, tenant, owner=self.lease.key, run_id=run_id)
        except BaseException:
            self._over(run_id)
            raise
        return run_id

    def abandon(self, run_id: str | uuid.UUID, reason: str) -> None:
        """A queued run that will never start (cancelled while it waited): recorded cancelled."""
        run_id = uuid.UUID(str(run_id))
        try:
            self._finish(run_id, "cancelled", error=reason)
        finally:
            self._over(run_id)

    def _over(self, run_id: uuid.UUID) -> None:
        with self._live_lock:
            run = self._live.pop(run_id, None)
        if run is not None:
            run.over.set()

    def live_runs(self) -> list[uuid.UUID]:
        with self._live_lock:
            return list(self._live)

    def interrupt_orphans(self) -> int:
        """Mark interrupted the runs nobody will finish (see the module doc); how many."""
        self.lease.ensure()
        with self.pool.connection() as conn:
            return interrupt_orphans(conn, mine=self.lease.keys, live=self.live_runs(), alive=alive_owners(conn),
                                     lost=LOST, dead=DEAD)

    def cancel_thread(self, tenant: str, thread_id: str, reason: str, wait_s: float = 10.0) -> None:
        """Stop the thread's runs (this process's at once, others' by their record) before it is deleted; waits
        up to `wait_s` for this process's to be over."""
        with self._live_lock:
            runs = [r for r in self._live.values() if (r.tenant, r.thread_id) == (tenant, thread_id)]
        for run in runs:
            run.cancel.set()
        deadline = time.monotonic() + wait_s
        for run in runs:
            run.over.wait(max(0.0, deadline - time.monotonic()))
        with self.pool.connection() as conn:
            cancel_thread_runs(conn, tenant, thread_id, reason)

    def run_turn(
        self,
        ctx: AgentContext,
        thread_id: str,
        message: str,
        *,
        run_id: str | uuid.UUID | None = None,
        n_images: int | None = None,
        seed: int | None = None,
        on_event: Callable[[Event], None] | None = None,
        input_image: str | None = None,
        input_mask: str | None = None,
        strength: float | None = None,
        edits: Edits | None = None,
    ) -> dict[str, Any]:
        """Run one turn of a thread to the end; returns the final state (with `run_id`). `run_id`: the run
        `queue` recorded for it (None: recorded now). `input_image` (and `input_mask`, white = repaint) are PNG
        paths this turn edits, at `strength` (0..1); `edits`: adapter edits made by hand, applied from this turn on."""
        if not message or not message.strip():
            raise ValueError("the message is empty")
        run_id = uuid.UUID(str(run_id)) if run_id is not None else self.queue(ctx.tenant, thread_id, message, ctx.cancel)
        with self._live_lock:  # whoever cancels the run from now on sets the event its graph reads
            live = self._live.get(run_id)
            if live is not None:
                if live.cancel is not ctx.cancel and live.cancel.is_set():
                    ctx.cancel.set()
                live.cancel, live.running = ctx.cancel, True
        try:
            return self._run(ctx, run_id, thread_id, message, on_event, n_images=n_images, requested_seed=seed,
                             input_image=input_image, input_mask=input_mask, strength=strength, edits=edits)
        finally:
            self._over(run_id)

    def _run(self, ctx: AgentContext, run_id: uuid.UUID, thread_id: str, message: str,
             on_event: Callable[[Event], None] | None, **inputs: Any) -> dict[str, Any]:
        ctx = dataclasses.replace(ctx, owner=self.lease.key)
        if ctx.cancel.is_set():
            self._finish(run_id, "cancelled", error="cancelled before it started")
            raise Cancelled("cancelled before it started")
        with self.pool.connection() as conn:
            if not start_run(conn, run_id):
                raise Cancelled("the run was cancelled before it started")
        turn: dict[str, Any] = {"message": message, "run_id": str(run_id)}
        for key, value in inputs.items():
            if value is not None:
                turn[key] = float(value) if key == "strength" else str(value) if key.startswith("input_") else value
        emit = on_event or (lambda event: None)
        emit({"event": "run", "run_id": str(run_id), "thread_id": thread_id, "status": "running"})
        try:
            config = self._turn_config(ctx.tenant, thread_id)
            for mode, chunk in self.graph.stream(turn, config, context=ctx, stream_mode=["updates", "custom"]):
                if mode == "custom":
                    emit(chunk)
                else:
                    emit({"event": "node", "node": next(iter(chunk))})
        except (GenerationCancelled, Cancelled) as exc:
            self._finish(run_id, "cancelled", error=str(exc), quiet=True)
            raise
        except Exception as exc:
            self._finish(run_id, "failed", error=f"{type(exc).__name__}: {exc}"[:1000], quiet=True)
            raise
        state = self.state(ctx.tenant, thread_id)
        self._finish(
            run_id, "done", planner=state.get("planner"), plan=state.get("plan"), picks=state.get("picks"),
            candidates={t: [c["adapter_id"] for c in cs] for t, cs in (state.get("candidates") or {}).items()},
            attempts=state.get("attempts", []), nfe=state.get("nfe", 0), timings=state.get("timings", {}),
            sampler_replica=state.get("sampler_replica"),
            sampler_retried=state.get("timings", {}).get("sampler_retries", 0) > 0,
        )
        return {**state, "run_id": str(run_id)}

    def _finish(self, run_id: uuid.UUID, status: str, *, quiet: bool = False, **fields: Any) -> None:
        """Record the run's end; `quiet`: a run already failing keeps its own error if this cannot be written
        (the record is then settled by `interrupt_orphans` when the database is back)."""
        try:
            with self.pool.connection() as conn:
                finish_run(conn, run_id, status=status, **fields)
        except Exception as exc:
            if not quiet:
                raise
            log.warning("could not record run %s as %s: %s", run_id, status, exc)

    def prune(self, db: Database, older_than_days: float) -> int:
        """Delete threads (checkpoints and runs) whose last run is older than the given age."""
        with db.connection() as conn:
            rows = conn.execute(
                "SELECT tenant, thread_id FROM runs GROUP BY tenant, thread_id "
                "HAVING max(created_at) < now() - make_interval(secs => %s)",
                (older_than_days * 86400,),
            ).fetchall()
            for tenant, thread_id in rows:
                self.delete(tenant, thread_id)
                conn.execute("DELETE FROM runs WHERE tenant = %s AND thread_id = %s", (tenant, thread_id))
        return len(rows)
