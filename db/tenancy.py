"""What the HTTP service asks of the database about ownership: threads per tenant, their runs and images."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row


def ensure_thread(conn: psycopg.Connection, tenant: str, thread_id: str) -> bool:
    """Create the thread for this tenant if it is new; True when it was created."""
    done = conn.execute("INSERT INTO api_threads (tenant, id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (tenant, thread_id))
    return done.rowcount > 0


def get_thread(conn: psycopg.Connection, tenant: str, thread_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT id, created_at FROM api_threads WHERE tenant = %s AND id = %s",
                           (tenant, thread_id)).fetchone()


def thread_tenants(conn: psycopg.Connection, thread_id: str) -> list[str]:
    """Every tenant with a thread of this id: created through the API, or run from the command line."""
    rows = conn.execute("SELECT tenant FROM api_threads WHERE id = %s UNION SELECT tenant FROM runs WHERE thread_id = %s "
                        "ORDER BY 1", (thread_id, thread_id)).fetchall()
    return [r[0] for r in rows]


# A run's result is the last attempt of a run that finished: images of attempts that inspection sent back to
# be retried, and of runs that failed or were interrupted, were never given to anyone as results.
_RESULT_IMAGES = (
    "SELECT i.id, i.run_id, i.attempt, i.path, i.sha256, i.seed, i.mix, i.nfe FROM images i JOIN runs r ON r.id = i.run_id "
    "WHERE i.run_id = ANY(%s) AND r.status = 'done' AND i.attempt = (SELECT max(j.attempt) FROM images j WHERE j.run_id = i.run_id) "
    "ORDER BY i.created_at, i.id"
)


def thread_runs(conn: psycopg.Connection, tenant: str, thread_id: str) -> list[dict[str, Any]]:
    """The thread's runs, oldest first, each with the images it gave as its result (ids and paths)."""
    with conn.cursor(row_factory=dict_row) as cur:
        runs = cur.execute(
            "SELECT id, prompt, status, planner, plan, picks, attempts, nfe, timings, error, created_at, finished_at, "
            "sampler_replica, sampler_retried FROM runs WHERE tenant = %s AND thread_id = %s ORDER BY created_at",
            (tenant, thread_id)).fetchall()
        images = cur.execute(_RESULT_IMAGES, ([r["id"] for r in runs],)).fetchall()
    for run in runs:
        run["images"] = [i for i in images if i["run_id"] == run["id"]]
    return runs


def delete_thread(conn: psycopg.Connection, tenant: str, thread_id: str) -> list[str]:
    """Delete the thread, its runs and image rows; returns image paths no other row still uses."""
    with conn.transaction():
        paths = [r[0] for r in conn.execute(
            "DELETE FROM images WHERE tenant = %s AND run_id IN (SELECT id FROM runs WHERE tenant = %s AND thread_id = %s) "
            "RETURNING path", (tenant, tenant, thread_id))]
        conn.execute("DELETE FROM runs WHERE tenant = %s AND thread_id = %s", (tenant, thread_id))
        conn.execute("DELETE FROM api_threads WHERE tenant = %s AND id = %s", (tenant, thread_id))
        still_used = {r[0] for r in conn.execute("SELECT path FROM images WHERE path = ANY(%s)", (paths,))}
    return sorted(set(paths) - still_used)


def get_image(conn: psycopg.Connection, image_id: str) -> dict[str, Any] | None:
    """The image row (any tenant: the caller decides who may see it); None for an unknown or malformed id."""
    try:
        key = uuid.UUID(image_id)
    except ValueError:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT id, tenant, path, sha256 FROM images WHERE id = %s", (key,)).fetchone()


def get_run_for(conn: psycopg.Connection, tenant: str, run_id: str) -> dict[str, Any] | None:
    try:
        key = uuid.UUID(run_id)
    except ValueError:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        run = cur.execute(
            "SELECT id, thread_id, prompt, status, planner, plan, picks, attempts, nfe, timings, error, created_at, "
            "finished_at, sampler_replica, sampler_retried FROM runs WHERE id = %s AND tenant = %s", (key, tenant)).fetchone()
        if run:
            run["images"] = cur.execute(_RESULT_IMAGES, ([key],)).fetchall()
    return run


def list_threads(conn: psycopg.Connection, tenant: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """The tenant's threads, most recently active first: first prompt, turns, images and the newest image's id."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT t.id, t.created_at, coalesce(r.updated_at, t.created_at) AS updated_at, coalesce(r.turns, 0) AS turns, "
            "r.title, coalesce(i.images, 0) AS images, i.cover "
            "FROM api_threads t "
            "LEFT JOIN LATERAL (SELECT max(created_at) AS updated_at, count(*) AS turns, "
            "  (array_agg(prompt ORDER BY created_at))[1] AS title FROM runs "
            "  WHERE tenant = t.tenant AND thread_id = t.id) r ON true "
            "LEFT JOIN LATERAL (SELECT count(*) AS images, (array_agg(images.id ORDER BY images.created_at DESC))[1] AS cover "
            "  FROM images JOIN runs ON runs.id = images.run_id "
            "  WHERE runs.tenant = t.tenant AND runs.thread_id = t.id) i ON true "
            "WHERE t.tenant = %s ORDER BY updated_at DESC, t.id LIMIT %s OFFSET %s",
            (tenant, limit, offset)).fetchall()


def get_image_record(conn: psycopg.Connection, tenant: str, image_id: str) -> dict[str, Any] | None:
    """The tenant's image row with its run's thread, prompt, plan and picks, and `batch_seed` (the lowest seed
    of its batch: image i of a turn seeded s has seed s + i); None for another tenant's, an unknown or a malformed id."""
    try:
        key = uuid.UUID(image_id)
    except ValueError:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT i.id, i.run_id, i.attempt, i.path, i.sha256, i.seed, i.mix, i.nfe, i.parameters, i.created_at, "
            "r.thread_id, r.prompt, r.plan, r.picks, "
            # image k of a turn seeded s is seeded s + k (agent/sampler_settings.py): the batch's lowest is the turn's
            "(SELECT min(j.seed) FROM images j WHERE j.run_id = i.run_id AND j.attempt = i.attempt) AS turn_seed "
            "FROM images i JOIN runs r ON r.id = i.run_id "
            "WHERE i.id = %s AND i.tenant = %s", (key, tenant)).fetchone()
