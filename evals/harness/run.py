"""One harness run: a scratch database for the catalog suites, the suites, the folder, the DB record."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

import loracle.evals.harness.real  # noqa: F401  (registers the opt-in real-model suite)
import loracle.evals.harness.suites  # noqa: F401  (registers the suites)
from loracle.db import Database, connect
from loracle.db.evals import record_eval_run
from loracle.evals.harness.registry import RunContext, default_suites, run_suites
from loracle.evals.harness.report import git_commit, write_run


def _with_dbname(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


def run_harness(db: Database, out_root: Path, *, suites: list[str] | None = None, quick: bool = False, seed: int = 0,
                options: dict[str, Any] | None = None) -> tuple[dict[str, Any], Path]:
    """Run the suites into out_root/RUN_ID and record the run in `db`. The catalog suites build their own catalog in
    a scratch database; the real-model suite uses the user's catalog in `db`."""
    names = suites or default_suites()
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    out = out_root / run_id
    out.mkdir(parents=True)
    scratch = f"loracle_eval_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
    ctx = RunContext(out=out, quick=quick, seed=seed, options=dict(options or {}), cache={"user_db": db})
    try:
        ctx.cache["db"] = connect(_with_dbname(db.url, scratch), out / "unused-pgdata")
        suite_results = run_suites(ctx, names)
    finally:
        if "db" in ctx.cache:
            ctx.cache["db"].close()
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    results = {"run_id": run_id, "git_commit": git_commit(), "quick": quick, "seeds": {"base": seed},
               "settings": {k: str(v) for k, v in ctx.options.items()}, "suites": suite_results}
    write_run(results, out, ctx.cache)
    with db.connection() as conn:
        record_eval_run(conn, results, str(out))
    return results, out
