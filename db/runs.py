"""Recording agent runs, their images and learned adapter conflicts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def start_run(conn: psycopg.Connection, thread_id: str, prompt: str, tenant: str = "local") -> uuid.UUID:
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO runs (id, thread_id, tenant, prompt) VALUES (%s, %s, %s, %s)", (run_id, thread_id, tenant, prompt)
    )
    return run_id


def finish_run(conn: psycopg.Connection, run_id: uuid.UUID, *, status: str, **fields: Any) -> None:
    """Store the final plan, picks, attempts, NFE and timings (any subset) and the status."""
    allowed = {"planner", "plan", "candidates", "picks", "attempts", "nfe", "timings", "error"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"unknown run fields: {sorted(unknown)}")
    columns = ["status = %s", "finished_at = now()"] + [f"{name} = %s" for name in fields]
    values = [status] + [Jsonb(v) if isinstance(v, (dict, list)) else v for v in fields.values()]
    conn.execute(f"UPDATE runs SET {', '.join(columns)} WHERE id = %s", (*values, run_id))


def add_image(conn: psycopg.Connection, run_id: uuid.UUID, record: dict[str, Any], tenant: str = "local") -> uuid.UUID:
    image_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO images (id, run_id, tenant, attempt, path, sha256, seed, mix, nfe, parameters) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (image_id, run_id, tenant, record["attempt"], record["path"], record["sha256"], record["seed"],
         Jsonb(record["mix"]), record["nfe"], record["parameters"]),
    )
    return image_id


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
