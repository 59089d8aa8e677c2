"""Recording agent runs, their images and learned adapter conflicts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def queue_run(conn: psycopg.Connection, thread_id: str, prompt: str, tenant: str = "local", *, owner: int | None = None,
              run_id: uuid.UUID | None = None) -> uuid.UUID:
    """Record an accepted run (status queued) owned by `owner` (db/owners.py); its id."""
    run_id = run_id or uuid.uuid4()
    conn.execute("INSERT INTO runs (id, thread_id, tenant, prompt, status, owner) VALUES (%s, %s, %s, %s, 'queued', %s)",
                 (run_id, thread_id, tenant, prompt, owner))
    return run_id


def start_run(conn: psycopg.Connection, run_id: uuid.UUID) -> bool:
    """queued -> running; False when the run is no longer queued (cancelled, interrupted or deleted meanwhile)."""
    done = conn.execute("UPDATE runs SET status = 'running' WHERE id = %s AND status = 'queued'", (run_id,))
    return done.rowcount > 0


def finish_run(conn: psycopg.Connection, run_id: uuid.UUID, *, status: str, **fields: Any) -> bool:
    """Store the final plan, picks, attempts, NFE and timings (any subset) and the status. A run already
    cancelled (its thread deleted) or finished stays as it is; one marked interrupted while it was in fact still
    running (its owner's lock lost with the database) takes its real end. False when nothing was updated."""
    allowed = {"planner", "plan", "candidates", "picks", "attempts", "nfe", "timings", "error", "sampler_replica",
               "sampler_retried"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"unknown run fields: {sorted(unknown)}")
    columns = ["status = %s", "finished_at = now()"] + [f"{name} = %s" for name in fields]
    values = [status] + [Jsonb(v) if isinstance(v, (dict, list)) else v for v in fields.values()]
    done = conn.execute(f"UPDATE runs SET {', '.join(columns)} WHERE id = %s AND status IN ('queued', 'running', "
                        "'interrupted')", (*values, run_id))
    return done.rowcount > 0


def interrupt_orphans(conn: psycopg.Connection, *, mine: list[int], live: list[uuid.UUID], alive: list[int],
                      lost: str, dead: str) -> int:
    """Mark interrupted every unfinished run nobody will finish: this process's (`mine`) that are not `live`
    any more (reason `lost`), and those of owners holding no lock (`alive` lists who does; reason `dead`)."""
    done = conn.execute(
        "UPDATE runs SET status = 'interrupted', finished_at = now(), "
        "error = CASE WHEN owner = ANY(%(mine)s::int[]) THEN %(lost)s ELSE %(dead)s END "
        "WHERE status IN ('queued', 'running') AND ("
        " (owner = ANY(%(mine)s::int[]) AND NOT id = ANY(%(live)s::uuid[])) OR owner IS NULL"
        " OR NOT owner = ANY(%(alive)s::int[] || %(mine)s::int[]))",
        {"mine": mine, "live": live, "alive": alive, "lost": lost, "dead": dead})
    return done.rowcount


def interrupt_owned(conn: psycopg.Connection, owners: list[int], reason: str) -> int:
    """Mark interrupted the unfinished runs of these owners (a process that stops); how many."""
    done = conn.execute("UPDATE runs SET status = 'interrupted', finished_at = now(), error = %s "
                        "WHERE status IN ('queued', 'running') AND owner = ANY(%s::int[])", (reason, owners))
    return done.rowcount


def cancel_thread_runs(conn: psycopg.Connection, tenant: str, thread_id: str, reason: str) -> int:
    """Mark the thread's unfinished runs cancelled (their thread is being deleted); how many."""
    done = conn.execute("UPDATE runs SET status = 'cancelled', finished_at = now(), error = %s "
                        "WHERE tenant = %s AND thread_id = %s AND status IN ('queued', 'running')", (reason, tenant, thread_id))
    return done.rowcount


def add_image(conn: psycopg.Connection, run_id: uuid.UUID, record: dict[str, Any], tenant: str = "local") -> uuid.UUID:
    image_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO images (id, run_id, tenant, attempt, path, sha256, seed, mix, nfe, parameters) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (image_id, run_id, tenant, record["attempt"], record["path"], record["sha256"], record["seed"],
         Jsonb(record["mix"]), record["nfe"], record["parameters"]),
    )
    return image_id


def image_paths_in_use(conn: psycopg.Connection, paths: list[str]) -> set[str]:
    """Which of these image paths (relative to the images folder) a row names."""
    return {r[0] for r in conn.execute("SELECT DISTINCT path FROM images WHERE path = ANY(%s)", (paths,))}


def get_run(conn: psycopg.Connection, run_id: uuid.UUID | str, tenant: str | None = None) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        run = cur.execute(
            "SELECT * FROM runs WHERE id = %s AND (%s::text IS NULL OR tenant = %s)", (run_id, tenant, tenant)
        ).fetchone()
        if run:
            run["images"] = cur.execute("SELECT * FROM images WHERE run_id = %s ORDER BY created_at", (run_id,)).fetchall()
    return run


@dataclass(frozen=True)
class ConflictScope:
    """Whose evidence a conflict is: one tenant's runs on one base model under one composition method."""

    tenant: str
    base_model: str
    method: str
    half_life_days: float = 14.0  # evidence halves over this time without a new failure


_DECAYED = "adapter_conflicts.evidence * power(0.5, extract(epoch FROM now() - adapter_conflicts.updated_at) / (%s * 86400.0))"


def record_conflict(conn: psycopg.Connection, scope: ConflictScope, adapter_a: int, adapter_b: int, reason: str) -> None:
    """One more failure of this pair in this scope: the decayed evidence so far plus one."""
    low, high = sorted((adapter_a, adapter_b))
    conn.execute(
        "INSERT INTO adapter_conflicts (tenant, base_model, method, adapter_a, adapter_b, reason) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant, base_model, method, adapter_a, adapter_b) DO UPDATE SET "
        f"failures = adapter_conflicts.failures + 1, evidence = {_DECAYED} + 1, "
        "reason = EXCLUDED.reason, updated_at = now()",
        (scope.tenant, scope.base_model, scope.method, low, high, reason, scope.half_life_days),
    )


def known_conflicts(conn: psycopg.Connection, scope: ConflictScope, adapter_ids: list[int],
                    min_evidence: float = 1.5) -> list[tuple[int, int, str]]:
    """Pairs among the given adapters whose decayed evidence in this scope reaches `min_evidence`: more than
    one failure's worth, so a single failure never counts and old ones fade."""
    return conn.execute(
        "SELECT adapter_a, adapter_b, reason FROM adapter_conflicts WHERE tenant = %s AND base_model = %s AND method = %s "
        f"AND adapter_a = ANY(%s) AND adapter_b = ANY(%s) AND {_DECAYED} >= %s",
        (scope.tenant, scope.base_model, scope.method, adapter_ids, adapter_ids, scope.half_life_days, min_evidence),
    ).fetchall()
