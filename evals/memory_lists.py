"""How far the in-memory dense lists (tools/memory_search.py, which serving and training read) agree
with the HNSW lists at serving's ef_search: `python -m loracle.evals.memory_lists`."""

from __future__ import annotations

import numpy as np
import psycopg

from loracle.db.search import ListQuery, SearchFilters, search_lists
from loracle.tools.memory_search import MemoryIndex


def agreement(conn: psycopg.Connection, model: str, queries: list[ListQuery], filters: SearchFilters, ef_search: int,
              index: MemoryIndex) -> dict[str, float]:
    """Per dense kind, the mean share of the database's list that the in-memory list holds too."""
    dense = [q for q in queries if q.vector is not None]
    from_db = search_lists(conn, model, dense, filters, ef_search=ef_search)
    from_memory = index.fetcher(conn, model, filters, ef_search)(dense)
    shares: dict[str, list[float]] = {}
    for query, a, b in zip(dense, from_db, from_memory):
        shares.setdefault(query.kind, []).append(len({i for i, _ in a} & {i for i, _ in b}) / max(len(a), 1))
    return {kind: float(np.mean(v)) for kind, v in shares.items()}


def main(n: int = 64) -> None:
    """Print how far the in-memory lists agree with the HNSW lists, for the first n dev prompts."""
    from pathlib import Path

    from loracle.agent.settings import get_settings
    from loracle.cli.context import open_database
    from loracle.evals.queries import load_queries
    from loracle.tools.embedder import get_embedder
    from loracle.tools.learned_lists import load_learned_lists
    from loracle.tools.retrieve import FUSED_LISTS, _list_query, learned_queries

    settings = get_settings()
    embedder = get_embedder(settings.embedding_model)
    prompts = [q.prompt for q in load_queries(Path("../shared/data/queries/dev.jsonl"))[:n]]
    learned = load_learned_lists()
    queries = [q for text, vector in zip(prompts, embedder.encode(prompts))
               for q in [*(_list_query(name, text, vector, 150, True) for name, _ in FUSED_LISTS),
                         *learned_queries(learned, vector, 150, True).values()]]
    with open_database(settings) as db, db.connection() as conn:
        index = MemoryIndex.load(conn, embedder.name)
        for tags in (settings.exclude_tags, []):
            filters = SearchFilters(exclude_tags=tags, exclude_blocklisted=True)
            shares = agreement(conn, embedder.name, queries, filters, settings.hnsw_ef_search, index)
            print(f"exclude tags {tags}: " + ", ".join(f"{kind} {share:.4f}" for kind, share in shares.items()))


if __name__ == "__main__":
    main()
