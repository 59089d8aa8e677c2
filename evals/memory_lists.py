"""Training's dense lists, searched exactly in memory instead of through the HNSW indexes.

`loracle rank train` and `loracle rank cv` fetch the first stage's lists for a few thousand training
prompts, per fold and per filter: in the database the dense lists (card, head, example-prompt and
adapted vectors) were nearly all of that time (about 30 ms each on a busy 2-core machine), while the
catalog's vectors fit in memory many times over (7K adapters x 4 kinds x 384 dims: 44 MB) and one
matrix product ranks them all. The lists are what the database's exact search returns: the same
stored fp16 vectors, the query cast to fp16 as the HNSW statement casts it, the same filter predicate
(db.search.passing_ids), the best of an adapter's vectors of a "+"-joined kind. At ef_search 800
the HNSW lists serving reads agree with them (the test and `python -m loracle.evals.memory_lists`
measure it). Lexical and neighbour lists still come from the database (a few ms each).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg

from loracle.db.search import ListQuery, SearchFilters, passing_ids, search_lists
from loracle.evals.first_stage_train import CardVectors, load_card_vectors

KINDS = "full+refined+head+prompt"  # every kind a first-stage list or a reranker feature reads


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class MemoryIndex:
    """The catalog's stored vectors of every kind, unit length, as one array."""

    cards: CardVectors
    kinds: tuple[str, ...]
    allowed: dict[str, np.ndarray] = field(default_factory=dict)  # per filter, the adapters it keeps

    @classmethod
    def load(cls, conn: psycopg.Connection, model: str) -> MemoryIndex:
        cards = load_card_vectors(conn, model, KINDS)
        cards.vectors = _unit(cards.vectors)
        return cls(cards, tuple(KINDS.split("+")))

    def best_cosines(self, queries: np.ndarray, kind: str) -> np.ndarray:
        """(queries, adapters): the best cosine over the kinds of `kind` ("a+b"), -inf where an adapter has none."""
        queries = _unit(np.asarray(queries, dtype=np.float32))
        best = np.full((len(queries), len(self.cards.ids)), -np.inf, dtype=np.float32)
        for name in kind.split("+"):
            k = self.kinds.index(name)
            best = np.maximum(best, np.where(self.cards.present[k], queries @ self.cards.vectors[k].T, -np.inf))
        return best

    def dense_lists(self, queries: Sequence[ListQuery], allowed: np.ndarray) -> list[list[tuple[int, float]]]:
        """Each dense query's top k adapters among `allowed` (a mask over the index's adapters), best first."""
        out: list[list[tuple[int, float]]] = [[] for _ in queries]
        by_kind: dict[str, list[int]] = {}
        for i, query in enumerate(queries):
            by_kind.setdefault(query.kind, []).append(i)
        for kind, members in by_kind.items():
            # the database compares halfvec to halfvec: the query is rounded to fp16 first
            vectors = np.stack([queries[i].vector for i in members]).astype(np.float16).astype(np.float32)
            scores = np.where(allowed, self.best_cosines(vectors, kind), -np.inf)
            for i, row in zip(members, scores):
                k = min(queries[i].k, int(np.isfinite(row).sum()))
                top = np.argpartition(-row, k - 1)[:k] if k else np.array([], dtype=np.int64)
                top = top[np.argsort(-row[top], kind="stable")]
                out[i] = [(int(self.cards.ids[j]), float(row[j])) for j in top]
        return out

    def similarities(self, requests: Sequence[tuple[np.ndarray, Sequence[int]]], kinds: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """db.vectors.best_similarities from memory: per request and kind, the cosine of the query to each
        listed adapter's vector (NaN where it has none)."""
        position = {int(a): i for i, a in enumerate(self.cards.ids)}
        out = []
        for query, ids in requests:
            rows = np.array([position[int(a)] for a in ids], dtype=np.int64)
            query = _unit(np.asarray(query, dtype=np.float32))
            per_kind = {}
            for name in kinds:
                k = self.kinds.index(name)
                values = self.cards.vectors[k, rows] @ query
                per_kind[name] = np.where(self.cards.present[k, rows], values, np.nan).astype(np.float32)
            out.append(per_kind)
        return out

    def fetcher(
        self, conn: psycopg.Connection, model: str, filters: SearchFilters, ef_search: int, spare: Sequence[psycopg.Connection] = ()
    ) -> Callable[[list[ListQuery]], list[list[tuple[int, float]]]]:
        """A `fetch` for tools/retrieve.first_stage: dense lists from memory, the others from the database."""
        key = repr(sorted(filters.params().items()))
        if key not in self.allowed:  # which adapters the filters keep, read once per filter
            self.allowed[key] = np.isin(self.cards.ids, passing_ids(conn, filters))
        allowed = self.allowed[key]

        def fetch(queries: list[ListQuery]) -> list[list[tuple[int, float]]]:
            dense = [i for i, q in enumerate(queries) if q.vector is not None]
            other = [i for i, q in enumerate(queries) if q.vector is None]
            out: list[list[tuple[int, float]]] = [[] for _ in queries]
            for i, items in zip(dense, self.dense_lists([queries[i] for i in dense], allowed)):
                out[i] = items
            if other:
                fetched = search_lists(conn, model, [queries[i] for i in other], filters, ef_search=ef_search, spare=spare)
                for i, items in zip(other, fetched):
                    out[i] = items
            return out

        return fetch


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
