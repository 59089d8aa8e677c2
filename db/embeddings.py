"""Adapter embeddings: one row per (adapter, model, kind, position), an HNSW index per (model, kind)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector import HalfVector
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.pq import Format


@dataclass(frozen=True)
class EmbeddingRow:
    adapter_id: int
    kind: str
    position: int
    text_hash: str
    vector: np.ndarray


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def index_name(model: str, kind: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", f"{model}_{kind}".lower()).strip("_")
    return f"emb_hnsw_{slug}"[:63]


def ensure_hnsw_index(conn: psycopg.Connection, model: str, kind: str, dims: int) -> None:
    """Create the HNSW cosine index for one (model, kind) if missing; a partial index on a dimension cast."""
    if not 1 <= dims <= 4000:
        raise ValueError(f"halfvec HNSW indexes support 1..4000 dimensions, got {dims}")
    with conn.transaction():
        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        conn.execute(
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {name} ON adapter_embeddings USING hnsw "
            "((embedding::halfvec({dims})) halfvec_cosine_ops) WITH (m = 16, ef_construction = 64) "
            "WHERE model = {model} AND kind = {kind}"
        ).format(
            name=sql.Identifier(index_name(model, kind)),
            dims=sql.Literal(dims),
            model=sql.Literal(model),
            kind=sql.Literal(kind),
        )
    )


def stored_text_hashes(conn: psycopg.Connection, model: str, adapter_ids: list[int]) -> dict[tuple[int, str, int], str]:
    """(adapter_id, kind, position) -> text hash of what is stored, so unchanged texts are not re-embedded."""
    rows = conn.execute(
        "SELECT adapter_id, kind, position, text_hash FROM adapter_embeddings WHERE model = %s AND adapter_id = ANY(%s)",
        (model, adapter_ids),
    ).fetchall()
    return {(a, k, p): h for a, k, p, h in rows}


def write_embeddings(
    conn: psycopg.Connection, model: str, rows: list[EmbeddingRow], stale: list[tuple[int, str, int]]
) -> None:
    """Upsert new vectors and delete stale (adapter_id, kind, position) rows, in one transaction."""
    with conn.transaction(), conn.cursor() as cur:
        if stale:
            cur.executemany(
                "DELETE FROM adapter_embeddings WHERE adapter_id = %s AND model = %s AND kind = %s AND position = %s",
                [(a, model, k, p) for a, k, p in stale],
            )
        if rows:
            cur.executemany(
                "INSERT INTO adapter_embeddings (adapter_id, model, kind, position, text_hash, embedding) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (adapter_id, model, kind, position) "
                "DO UPDATE SET text_hash = EXCLUDED.text_hash, embedding = EXCLUDED.embedding",
                [(r.adapter_id, model, r.kind, r.position, r.text_hash, HalfVector(r.vector)) for r in rows],
            )


class _HalfvecArrayLoader(Loader):
    """Binary halfvec straight to a float16 numpy array (big-endian on the wire, after a 4-byte header),
    skipping pgvector's HalfVector object: reranking reads hundreds of vectors per prompt."""

    format = Format.BINARY

    def load(self, data) -> np.ndarray:
        return np.frombuffer(bytes(data), dtype=">f2", offset=4)


def load_vectors(conn: psycopg.Connection, model: str, adapter_ids: list[int]) -> dict[tuple[int, str], np.ndarray]:
    """Stored vectors of the given adapters, stacked per (adapter, kind) as a (positions, dims) float32 array."""
    with conn.cursor(binary=True) as cur:  # binary halfvecs parse ~10x faster than their text form
        info = conn.adapters.types.get("halfvec")
        if info is not None:
            cur.adapters.register_loader(info.oid, _HalfvecArrayLoader)
        rows = cur.execute(
            "SELECT adapter_id, kind, embedding FROM adapter_embeddings WHERE model = %s AND adapter_id = ANY(%s) "
            "ORDER BY adapter_id, kind, position",
            (model, adapter_ids),
        ).fetchall()
    if not rows:
        return {}
    # one conversion for all rows; rows come ordered by key, so each key is a slice (a view) of it
    data = np.stack([v if isinstance(v, np.ndarray) else v.to_numpy() for _, _, v in rows]).astype(np.float32)
    keys = [(adapter_id, kind) for adapter_id, kind, _ in rows]
    out: dict[tuple[int, str], np.ndarray] = {}
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            out[keys[start]] = data[start:i]
            start = i
    return out
