"""Recording eval harness runs (`eval_runs`) so `loracle eval compare` can find them by id."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def record_eval_run(conn: psycopg.Connection, results: dict[str, Any], folder: str | None) -> None:
    """Store a run's results.json (replacing an earlier record of the same id)."""
    suites = list(results.get("suites", {}))
    failed = any(s.get("status") != "ok" for s in results.get("suites", {}).values())
    conn.execute(
        "INSERT INTO eval_runs (id, git_commit, quick, suites, settings, seeds, results, folder, status) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET results = EXCLUDED.results, "
        "status = EXCLUDED.status, folder = EXCLUDED.folder",
        (results["run_id"], results.get("git_commit"), bool(results.get("quick")), suites,
         Jsonb(results.get("settings", {})), Jsonb(results.get("seeds", {})), Jsonb(results), folder,
         "partial" if failed else "ok"),
    )


def get_eval_run(conn: psycopg.Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT results FROM eval_runs WHERE id = %s", (run_id,)).fetchone()
    return row[0] if row else None


def list_eval_runs(conn: psycopg.Connection, limit: int = 20) -> list[tuple[str, str, str]]:
    """(id, status, created_at) of the latest runs, newest first."""
    return [(r[0], r[1], r[2].isoformat()) for r in conn.execute(
        "SELECT id, status, created_at FROM eval_runs ORDER BY created_at DESC LIMIT %s", (limit,))]
