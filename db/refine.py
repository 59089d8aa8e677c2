"""Storage for the refiner: read the inputs of rows to refine, write refined fields, cache model answers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

_INPUTS = (
    "SELECT id, name, base_model, tags, trigger_words, description, example_prompts, file_name, "
    "CASE WHEN jsonb_typeof(extra->'example_images') = 'array' THEN extra->'example_images' END AS example_images, "
    "refine_hash FROM adapters"
)


@dataclass(frozen=True)
class RefinedRow:
    """The refined fields of one adapter, as stored."""

    adapter_id: int
    refined_description: str
    category: str
    recommended_weight: float
    weight_source: str
    clean_trigger_words: list[str]
    refined_by: str
    refine_hash: str
    refine_note: str | None = None


def refine_inputs(conn: psycopg.Connection, *, only_missing: bool = False, ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Cards to consider, in id order: all, or only those without a refined description."""
    where, params = [], []
    if only_missing:
        where.append("refined_description IS NULL")
    if ids is not None:
        where.append("id = ANY(%s)")
        params.append(ids)
    sql = _INPUTS + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def write_refinements(conn: psycopg.Connection, rows: Iterable[RefinedRow]) -> int:
    """Store refined fields (one transaction per call, so an interrupted batch keeps what it wrote)."""
    params = [
        (r.refined_description, r.category, r.recommended_weight, r.weight_source, r.clean_trigger_words,
         r.refined_by, r.refine_hash, r.refine_note, r.adapter_id)
        for r in rows
    ]
    if not params:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "UPDATE adapters SET refined_description = %s, category = %s, recommended_weight = %s, weight_source = %s, "
            "clean_trigger_words = %s, refined_by = %s, refine_hash = %s, refine_note = %s, refined_at = now(), "
            "updated_at = now() WHERE id = %s",
            params,
        )
    return len(params)


def cached_answers(conn: psycopg.Connection, model: str, hashes: list[str]) -> dict[str, dict[str, Any]]:
    """Model answers already paid for, by input hash."""
    rows = conn.execute(
        "SELECT input_hash, answer FROM refine_cache WHERE model = %s AND input_hash = ANY(%s)", (model, hashes)
    ).fetchall()
    return {digest: answer for digest, answer in rows}


def store_answers(conn: psycopg.Connection, model: str, answers: dict[str, dict[str, Any]]) -> None:
    if not answers:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO refine_cache (input_hash, model, answer) VALUES (%s, %s, %s) "
            "ON CONFLICT (input_hash, model) DO UPDATE SET answer = EXCLUDED.answer, created_at = now()",
            [(digest, model, Jsonb(answer)) for digest, answer in answers.items()],
        )


def refine_summary(conn: psycopg.Connection) -> dict[str, int]:
    """How many rows each refiner filled ('unrefined' for the rest)."""
    rows = conn.execute(
        "SELECT coalesce(refined_by, 'unrefined'), count(*) FROM adapters "
        "GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    return {name: n for name, n in rows}
