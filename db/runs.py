"""Recording agent runs, their images and learned adapter conflicts."""

from __future__ import annotations

import uuid
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


def record_conflict(conn: psycopg.Connection, adapter_a: int, adapter_b: int, reason: str) -> None:
    low, high = sorted((adapter_a, adapter_b))
    conn.execute(
        "INSERT INTO adapter_conflicts (adapter_a, adapter_b, reason) VALUES (%s, %s, %s) "
        "ON CONFLICT (adapter_a, adapter_b) DO UPDATE SET failures = adapter_conflicts.failures + 1, "
        "reason = EXCLUDED.reason, updated_at = now()",
        (low, high, reason),
    )


def known_conflicts(conn: psycopg.Connection, adapter_ids: list[int], min_failures: int = 2) -> list[tuple[int, int, str]]:
    """Pairs among the given adapters that failed together at least `min_failures` times."""
    return conn.execute(
        "SELECT adapter_a, adapter_b, reason FROM adapter_conflicts WHERE adapter_a = ANY(%s) AND adapter_b = ANY(%s) "
        "AND failures >= %s",
        (adapter_ids, adapter_ids, min_failures),
    ).fetchall()
