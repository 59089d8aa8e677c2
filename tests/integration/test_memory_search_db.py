"""Serving's in-memory dense lists (tools/memory_search.py) in the agent's own search, on the tiny catalog
of test_catalog_db: the same adapters as the HNSW indexes, current after another process's import, and
the database's search above the size limit."""

from __future__ import annotations

from pathlib import Path

import pytest

import loracle.tools.memory_search as memory_search
import loracle.tools.retrieve as retrieve_module
from loracle.agent.catalog import search_catalog
from loracle.agent.settings import Settings
from loracle.db import connect
from loracle.tools.catalog_import import import_catalog
from loracle.tools.retrieve import retrieve
from tests.integration.test_catalog_db import ADAPTERS, catalog, write_catalog  # noqa: F401  (fixture)

PROMPTS = ["a watercolor painting of a fox", "anime girl with a sword", "neon city at night", "soft washes of colour"]
LIMIT = "LORACLE_MEMORY_SEARCH_MAX_VECTORS"


@pytest.fixture
def dense_reads(monkeypatch) -> dict[str, int]:
    """How many dense lists each path answered: the database's HNSW statements or the in-memory index."""
    counts = {"database": 0, "memory": 0}
    to_database, from_memory = retrieve_module.search_lists, memory_search.MemoryIndex.dense_lists

    def database(conn, model, queries, *args, **kwargs):
        counts["database"] += sum(q.vector is not None for q in queries)
        return to_database(conn, model, queries, *args, **kwargs)

    def memory(self, queries, allowed):
        counts["memory"] += len(queries)
        return from_memory(self, queries, allowed)

    monkeypatch.setattr(retrieve_module, "search_lists", database)
    monkeypatch.setattr(memory_search.MemoryIndex, "dense_lists", memory)
    return counts


def _ids(found: dict) -> dict[str, list[int]]:
    return {text: [h.adapter_id for h in hits] for text, hits in found.items()}


@pytest.mark.parametrize("strategy", ["dense", "fused", "rerank"])
def test_the_agents_search_from_memory_is_the_hnsw_search(db, embedder, catalog, monkeypatch, dense_reads, strategy) -> None:  # noqa: F811
    settings = Settings()
    monkeypatch.setenv(LIMIT, "0")  # off: the HNSW indexes
    expected = _ids(search_catalog(db, embedder, settings, PROMPTS, k=5, base_models=None, strategy=strategy))
    assert dense_reads == {"database": len(PROMPTS) * (1 if strategy == "dense" else 3), "memory": 0}
    monkeypatch.delenv(LIMIT)  # the default limit: 30 vectors fit
    got = _ids(search_catalog(db, embedder, settings, PROMPTS, k=5, base_models=None, strategy=strategy))
    assert dense_reads["database"] == len(PROMPTS) * (1 if strategy == "dense" else 3)  # no new HNSW list
    assert dense_reads["memory"] > 0
    assert got == expected
    assert all(got.values())


def test_an_import_through_another_connection_is_seen_by_the_next_search(tmp_path: Path, db, database_url, embedder, catalog,  # noqa: F811
                                                                           dense_reads) -> None:
    text = "an origami crane folded from paper"
    with db.connection() as conn:
        before = [h.name for h in retrieve(conn, embedder, text, strategy="dense", k=3)]
    assert "Origami Crane" not in before and dense_reads["memory"] == 1  # the index is loaded and cached
    other = connect(database_url, tmp_path / "unused-pgdata")  # another pool, as another process would
    try:
        crane = ("11", "Origami Crane", ["object", "origami"], ["origami crane"], "Paper origami cranes, folded.")
        report = import_catalog(other, write_catalog(tmp_path / "more.jsonl", rows=[*ADAPTERS, crane]), embedder)
        assert report.inserted == 1
    finally:
        other.close()
    with db.connection() as conn:
        after = [h.name for h in retrieve(conn, embedder, text, strategy="dense", k=3)]
    assert after[0] == "Origami Crane"
    assert dense_reads == {"database": 0, "memory": 2}


def test_above_the_limit_the_database_searches(db, embedder, catalog, monkeypatch, dense_reads) -> None:  # noqa: F811
    monkeypatch.setenv(LIMIT, "29")  # the catalog holds 30 vectors
    with db.connection() as conn:
        hits = retrieve(conn, embedder, PROMPTS[0], strategy="fused", k=5)
        assert memory_search.serving_index(conn, embedder.name) is None
    assert dense_reads == {"database": 3, "memory": 0}
    assert hits
    monkeypatch.setenv(LIMIT, "30")
    with db.connection() as conn:
        assert memory_search.serving_index(conn, embedder.name) is not None


def test_a_limit_that_is_not_a_number_is_named(monkeypatch) -> None:
    monkeypatch.setenv(LIMIT, "lots")
    with pytest.raises(ValueError, match=LIMIT):
        memory_search.max_vectors()
