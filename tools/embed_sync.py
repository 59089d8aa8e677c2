"""Keep adapter embeddings in step with adapter texts: embed only what is new or changed (by text hash)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import nullcontext

import numpy as np
import psycopg
from tqdm import tqdm

from loracle.db import Database
from loracle.db.vectors import EmbeddingRow, ensure_hnsw_index, stored_text_hashes, text_hash, write_embeddings
from loracle.tools.adapter_texts import INDEXED_KINDS, TEXT_KINDS
from loracle.tools.embedder import Embedder

log = logging.getLogger(__name__)
WRITE_CHUNK = 2048


def _cards(conn: psycopg.Connection, adapter_ids: list[int] | None) -> list[dict]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        sql = "SELECT id, name, tags, trigger_words, description, refined_description, example_prompts FROM adapters"
        if adapter_ids is None:
            return cur.execute(sql + " ORDER BY id").fetchall()
        return cur.execute(sql + " WHERE id = ANY(%s) ORDER BY id", (adapter_ids,)).fetchall()


def _encode_chunks(embedder: Embedder, chunks: list) -> Iterator[np.ndarray]:
    """Vectors per chunk: one job for all of them where the embedder runs jobs (Ray Data), else chunk by chunk."""
    texts = [([text for _, _, text, _ in chunk], kind.max_tokens) for kind, chunk in chunks]
    encode_many = getattr(embedder, "encode_many", None)
    if encode_many is not None:
        yield from encode_many(texts)
        return
    for items, limit in texts:
        yield embedder.encode(items, max_tokens=limit)


def sync_embeddings(
    db: Database, embedder: Embedder, adapter_ids: list[int] | None = None, *, progress: bool = False
) -> int:
    """Embed every stale text of the given adapters (all when None); returns how many texts were embedded."""
    with db.connection() as conn:
        cards = _cards(conn, adapter_ids)
        stored = stored_text_hashes(conn, embedder.name, [c["id"] for c in cards])

    wanted: set[tuple[int, str, int]] = set()
    todo: dict[str, list[tuple[int, int, str, str]]] = {kind.name: [] for kind in TEXT_KINDS}
    for card in cards:
        for kind in TEXT_KINDS:
            for position, text in enumerate(kind.build(card)):
                key = (card["id"], kind.name, position)
                wanted.add(key)
                digest = text_hash(f"{kind.max_tokens}:{text}")
                if stored.get(key) != digest:
                    todo[kind.name].append((card["id"], position, text, digest))
    stale = [key for key in stored if key not in wanted]

    total = sum(len(items) for items in todo.values())
    bar = tqdm(total=total, desc="embedding", unit="text", disable=not progress or total == 0)
    bulk = getattr(embedder, "bulk", None)  # worker processes for big jobs (tools/embedder.py)
    with (bulk(total) if bulk else nullcontext()), db.connection() as conn:
        write_embeddings(conn, embedder.name, [], stale)
        chunks = [(kind, items[start : start + WRITE_CHUNK]) for kind in TEXT_KINDS
                  for items in [todo[kind.name]] for start in range(0, len(items), WRITE_CHUNK)]
        for (kind, chunk), vectors in zip(chunks, _encode_chunks(embedder, chunks)):
            rows = [
                EmbeddingRow(adapter_id, kind.name, position, digest, vector)
                for (adapter_id, position, _, digest), vector in zip(chunk, vectors)
            ]
            write_embeddings(conn, embedder.name, rows, [])
            bar.update(len(chunk))
        for kind in INDEXED_KINDS:
            ensure_hnsw_index(conn, embedder.name, kind, embedder.dims)
    bar.close()
    return total
