"""Threads that survive restarts: the graph with LangGraph's Postgres checkpointer, one turn at a time.

`run_turn` records the run (plan, picks, attempts, NFE, timings) in the `runs` table, streams events
to a callback, and marks the run failed or cancelled when the graph raises. Thread ids are namespaced
by tenant, so one tenant can never continue another's thread.

Checkpoints hold the state's pydantic models (`Plan`, `Pick`, `Finding`, ...). langgraph-checkpoint's
serializer revives a stored class by importing it by name, any class unless told otherwise (with a
warning that this will be blocked); ours is told exactly the state's models, so a checkpoint row can
name no other class to construct, and a thread reads back typed in a fresh process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from pydantic_core import to_jsonable_python

from loracle.agent.graph import build_graph
from loracle.agent.plan import Edits
from loracle.agent.state import AgentContext, AgentState, state_models
from loracle.db import Database
from loracle.db.runs import finish_run, start_run
from loracle.generation.loop import GenerationCancelled

Event = dict[str, Any]


def checkpoint_serializer() -> JsonPlusSerializer:
    """langgraph-checkpoint's serializer, reviving the state's models and no other class."""
    return JsonPlusSerializer(allowed_msgpack_modules=state_models())


class Threads:
    """The compiled graph bound to a Postgres checkpointer in the same database as the catalog."""

    def __init__(self, database_url: str, max_size: int = 4) -> None:
        # langgraph-checkpoint-postgres needs autocommit, dict rows and no prepared statements.
        self.pool = ConnectionPool(
            database_url, min_size=1, max_size=max_size, open=True,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        )
        self.saver = PostgresSaver(self.pool, serde=checkpoint_serializer())
        self.saver.setup()
        self.graph = build_graph(self.saver)

    def close(self) -> None:
        self.pool.close()

    @staticmethod
    def config(tenant: str, thread_id: str) -> dict:
        return {"configurable": {"thread_id": f"{tenant}/{thread_id}"}}

    def read(self, tenant: str, thread_id: str) -> AgentState | None:
        """The thread's typed state after its last turn; None for a thread that does not exist."""
        values = self.graph.get_state(self.config(tenant, thread_id)).values
        return AgentState(**values) if values else None

    def state(self, tenant: str, thread_id: str) -> dict[str, Any]:
        """The thread's state as JSON data, the shape the run record and the API show; {} for no thread."""
        return to_jsonable_python(self.graph.get_state(self.config(tenant, thread_id)).values)

    def delete(self, tenant: str, thread_id: str) -> None:
        self.saver.delete_thread(self.config(tenant, thread_id)["configurable"]["thread_id"])

    def run_turn(
        self,
        ctx: AgentContext,
        thread_id: str,
        message: str,
        *,
        n_images: int | None = None,
        seed: int | None = None,
        on_event: Callable[[Event], None] | None = None,
        input_image: str | None = None,
        input_mask: str | None = None,
        strength: float | None = None,
        edits: Edits | None = None,
    ) -> dict[str, Any]:
        """Run one turn of a thread to the end; returns the final state (with `run_id`). `input_image`
        (and `input_mask`, white = repaint) are PNG paths this turn edits, at `strength` (0..1); `edits`:
        adapter edits made by hand, applied from this turn on."""
        if not message or not message.strip():
            raise ValueError("the message is empty")
        with ctx.db.connection() as conn:
            run_id = start_run(conn, thread_id, message, ctx.tenant)
        turn: dict[str, Any] = {"message": message, "run_id": str(run_id)}
        if n_images is not None:
            turn["n_images"] = n_images
        if seed is not None:
            turn["requested_seed"] = seed
        for key, value in (("input_image", input_image), ("input_mask", input_mask), ("strength", strength)):
            if value is not None:
                turn[key] = str(value) if key != "strength" else float(value)
        if edits is not None:
            turn["edits"] = edits
        config = self.config(ctx.tenant, thread_id)
        emit = on_event or (lambda event: None)
        emit({"event": "run", "run_id": str(run_id), "thread_id": thread_id})
        try:
            for mode, chunk in self.graph.stream(turn, config, context=ctx, stream_mode=["updates", "custom"]):
                if mode == "custom":
                    emit(chunk)
                else:
                    emit({"event": "node", "node": next(iter(chunk))})
        except GenerationCancelled as exc:
            self._finish(ctx, run_id, "cancelled", error=str(exc))
            raise
        except Exception as exc:
            self._finish(ctx, run_id, "failed", error=f"{type(exc).__name__}: {exc}"[:1000])
            raise
        state = self.state(ctx.tenant, thread_id)
        self._finish(
            ctx, run_id, "done", planner=state.get("planner"), plan=state.get("plan"), picks=state.get("picks"),
            candidates={t: [c["adapter_id"] for c in cs] for t, cs in (state.get("candidates") or {}).items()},
            attempts=state.get("attempts", []), nfe=state.get("nfe", 0), timings=state.get("timings", {}),
        )
        return {**state, "run_id": str(run_id)}

    @staticmethod
    def _finish(ctx: AgentContext, run_id: uuid.UUID, status: str, **fields: Any) -> None:
        with ctx.db.connection() as conn:
            finish_run(conn, run_id, status=status, **fields)

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
