"""Training's in-memory dense lists against the database's own searches, on the tiny catalog of test_catalog_db."""

from __future__ import annotations

import numpy as np

from loracle.db.search import SearchFilters, search_lists
from loracle.db.vectors import best_similarities
from loracle.tools.memory_search import MemoryIndex
from loracle.tools.rank_features import DENSE_KINDS
from loracle.tools.retrieve import FUSED_LISTS, _list_query, first_stage, lists_from, retrieve
from tests.integration.test_catalog_db import catalog  # noqa: F401  (fixture)

PROMPTS = ["a watercolor painting of a fox", "anime girl with a sword", "soft washes of colour"]


def test_dense_lists_and_cosines_from_memory_are_the_databases(db, embedder, catalog) -> None:  # noqa: F811
    vectors = embedder.encode(PROMPTS)
    queries = [_list_query(name, text, vector, 5, True) for text, vector in zip(PROMPTS, vectors) for name, _ in FUSED_LISTS]
    with db.connection() as conn:
        index = MemoryIndex.load(conn, embedder.name)
        for filters in (SearchFilters(), SearchFilters(exclude_tags=["character"], exclude_blocklisted=True)):
            expected = search_lists(conn, embedder.name, queries, filters, ef_search=800)
            got = index.fetcher(conn, embedder.name, filters, 800)(queries)
            for query, want, have in zip(queries, expected, got):
                assert [i for i, _ in have] == [i for i, _ in want], query.kind  # same adapters, same order
                assert np.allclose([s for _, s in have], [s for _, s in want], atol=2e-3)  # cosines (fp16 rounding apart)
        requests = [(v, [h.adapter_id for h in hits]) for v, hits in
                    zip(vectors, first_stage(conn, embedder, PROMPTS, vectors, "fused", 10, SearchFilters(), 800))]
        for want, have in zip(best_similarities(conn, embedder.name, requests, DENSE_KINDS), index.similarities(requests, DENSE_KINDS)):
            for kind in DENSE_KINDS:
                assert np.array_equal(np.isnan(want[kind]), np.isnan(have[kind]))  # the same adapters lack a vector
                assert np.allclose(np.nan_to_num(want[kind]), np.nan_to_num(have[kind]), atol=1e-4)


def test_lists_from_routes_every_first_stage_through_its_source(db, embedder, catalog) -> None:  # noqa: F811
    class Counting:
        def __init__(self, index: MemoryIndex) -> None:
            self.index, self.calls = index, 0

        def fetcher(self, *args, **kwargs):
            self.calls += 1
            return self.index.fetcher(*args, **kwargs)

    with db.connection() as conn:
        source = Counting(MemoryIndex.load(conn, embedder.name))
        expected = retrieve(conn, embedder, PROMPTS[0], strategy="fused", k=5)
        with lists_from(source):
            got = retrieve(conn, embedder, PROMPTS[0], strategy="fused", k=5)
        after = retrieve(conn, embedder, PROMPTS[0], strategy="fused", k=5)
    assert source.calls == 1  # inside the context only
    assert [h.adapter_id for h in got] == [h.adapter_id for h in expected] == [h.adapter_id for h in after]


def test_keep_cuts_the_fused_hits_to_the_best(db, embedder, catalog) -> None:  # noqa: F811
    vectors = embedder.encode(PROMPTS)
    with db.connection() as conn:
        every = first_stage(conn, embedder, PROMPTS, vectors, "fused", 10, SearchFilters(), 800)
        kept = first_stage(conn, embedder, PROMPTS, vectors, "fused", 10, SearchFilters(), 800, keep=3)
    assert all(len(hits) > 3 for hits in every)
    assert [[(h.adapter_id, h.score) for h in hits] for hits in kept] == [[(h.adapter_id, h.score) for h in hits[:3]] for hits in every]
