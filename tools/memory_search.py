"""The first stage's dense lists, searched exactly in memory instead of through the HNSW indexes.

The catalog's vectors fit in memory many times over at the sizes this service meets (7K adapters x 4
kinds x 384 dims: 44 MB), and one matrix product ranks them all, where an HNSW list at ef_search 800 took
24-28 ms in the database (several per prompt). The lists are what the database's exact search returns:
the same stored fp16 vectors, the query cast to fp16 as the HNSW statement casts it, the same filter
predicate (db.search.passing_ids), the best of an adapter's vectors of a "+"-joined kind. Lexical and
neighbour lists still come from the database (a few ms each).

Serving (`serving_index`) holds one index per database and model in each process, loaded on first use
and reloaded when the catalog's version (db/migrations/013, raised by every write to the vectors, from
any process) moved; one small read per search checks it. A catalog of more than
`LORACLE_MEMORY_SEARCH_MAX_VECTORS` vectors (default 200,000: about 300 MB of float32) stays in the
database's HNSW indexes. Training (evals/) uses the same index through `tools.retrieve.lists_from`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import psycopg

from loracle.db.search import ListQuery, SearchFilters, passing_ids, search_lists
from loracle.db.vectors import catalog_version, count_vectors

KINDS = "full+refined+head+prompt"  # every kind a first-stage list or a reranker feature reads
RESCORED = 16  # adapters past a list's depth whose exact score may still lift them into it
MAX_FILTERS = 64  # filters whose passing adapters an index remembers
DEFAULT_MAX_VECTORS = 200_000


@dataclass
class CardVectors:
    """The catalog's stored vectors of some kinds, as arrays: what the map is trained against."""

    ids: np.ndarray  # adapter row ids
    vectors: np.ndarray  # (kinds, adapters, dims), 0 where the adapter has no vector of the kind
    present: np.ndarray  # (kinds, adapters)
    usable: np.ndarray  # (adapters,): not blocklisted and with some vector

    def index(self, adapter_ids: Sequence[int]) -> list[int]:
        position = {int(a): i for i, a in enumerate(self.ids)}
        return [position[a] for a in adapter_ids if a in position]


def load_card_vectors(conn: psycopg.Connection, model: str, kind: str) -> CardVectors:
    """Every adapter's vectors of the kinds in `kind` ("full+refined": two kinds, the best counts)."""
    kinds = kind.split("+")
    adapters = conn.execute("SELECT id, blocklisted FROM adapters ORDER BY id").fetchall()
    ids = np.array([a for a, _ in adapters], dtype=np.int64)
    position = {a: i for i, a in enumerate(ids)}
    # binary: five times faster to read than the text form at 7K adapters (what a reload costs a search)
    with conn.cursor(binary=True) as cursor:
        rows = cursor.execute("SELECT adapter_id, kind, embedding FROM adapter_embeddings WHERE model = %s AND kind = ANY(%s)",
                              (model, kinds)).fetchall()
    dims = len(rows[0][2].to_numpy()) if rows else 0
    vectors = np.zeros((len(kinds), len(ids), dims), dtype=np.float32)
    present = np.zeros((len(kinds), len(ids)), dtype=bool)
    for adapter_id, row_kind, vector in rows:
        if adapter_id not in position:  # imported between the two reads: the next version's
            continue
        k, i = kinds.index(row_kind), position[adapter_id]
        vectors[k, i], present[k, i] = vector.to_numpy(), True
    usable = present.any(0) & ~np.array([b for _, b in adapters], dtype=bool)
    return CardVectors(ids, vectors, present, usable)


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
        """Each dense query's top k adapters among `allowed` (a mask over the index's adapters), best first.
        One matrix product per kind finds each query's best k + RESCORED; their scores are then computed
        one adapter at a time, so a query's list and scores are the same whichever queries share its batch
        (a batched product rounds in an order that depends on the batch's size)."""
        out: list[list[tuple[int, float]]] = [[] for _ in queries]
        by_kind: dict[str, list[int]] = {}
        for i, query in enumerate(queries):
            by_kind.setdefault(query.kind, []).append(i)
        for kind, members in by_kind.items():
            # the database compares halfvec to halfvec: the query is rounded to fp16 first
            vectors = _unit(np.stack([queries[i].vector for i in members]).astype(np.float16).astype(np.float32))
            scores = np.where(allowed, self.best_cosines(vectors, kind), -np.inf)
            for i, vector, row in zip(members, vectors, scores):
                found = int(np.isfinite(row).sum())
                k, depth = min(queries[i].k, found), min(queries[i].k + RESCORED, found)
                near = np.sort(np.argpartition(-row, depth - 1)[:depth]) if depth else np.array([], dtype=np.int64)
                exact = self._exact_cosines(vector, near, kind)
                top = near[np.lexsort((self.cards.ids[near], -exact))[:k]]  # ties: the lower id first
                out[i] = [(int(self.cards.ids[j]), float(s)) for j, s in zip(top, exact[np.searchsorted(near, top)])]
        return out

    def _exact_cosines(self, vector: np.ndarray, rows: np.ndarray, kind: str) -> np.ndarray:
        """The best cosine over the kinds of `kind` for each of `rows`, summed in an order that depends on
        nothing else (einsum's own loop, not BLAS)."""
        best = np.full(len(rows), -np.inf, dtype=np.float32)
        for name in kind.split("+"):
            k = self.kinds.index(name)
            values = np.einsum("ij,j->i", self.cards.vectors[k, rows], vector)
            best = np.maximum(best, np.where(self.cards.present[k, rows], values, -np.inf))
        return best

    @cached_property
    def position(self) -> dict[int, int]:
        return {int(a): i for i, a in enumerate(self.cards.ids)}

    def similarities(self, requests: Sequence[tuple[np.ndarray, Sequence[int]]], kinds: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """db.vectors.best_similarities from memory: per request and kind, the cosine of the query to each
        listed adapter's vector (NaN where it has none, or where the adapter is newer than the index)."""
        out = []
        for query, ids in requests:
            rows = np.array([self.position.get(int(a), -1) for a in ids], dtype=np.int64)
            known = rows >= 0
            rows = np.where(known, rows, 0)
            query = _unit(np.asarray(query, dtype=np.float32))
            per_kind = {}
            for name in kinds:
                k = self.kinds.index(name)
                values = self.cards.vectors[k, rows] @ query
                per_kind[name] = np.where(known & self.cards.present[k, rows], values, np.nan).astype(np.float32)
            out.append(per_kind)
        return out

    def fetcher(
        self, conn: psycopg.Connection, model: str, filters: SearchFilters, ef_search: int, spare: Sequence[psycopg.Connection] = ()
    ) -> Callable[[list[ListQuery]], list[list[tuple[int, float]]]]:
        """A `fetch` for tools/retrieve.first_stage: dense lists from memory, the others from the database."""
        key = repr(sorted(filters.params().items()))
        if key not in self.allowed:  # which adapters the filters keep, read once per filter
            if len(self.allowed) >= MAX_FILTERS:  # requests may exclude ids of their own: keep the cache small
                self.allowed.clear()
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


def max_vectors() -> int:
    """The most vectors serving searches in memory (`LORACLE_MEMORY_SEARCH_MAX_VECTORS`; 0 turns it off)."""
    value = os.environ.get("LORACLE_MEMORY_SEARCH_MAX_VECTORS", "").strip()
    if not value:
        return DEFAULT_MAX_VECTORS
    try:
        return max(int(value), 0)
    except ValueError:
        raise ValueError(f"LORACLE_MEMORY_SEARCH_MAX_VECTORS must be a whole number, not {value!r}") from None


@dataclass
class _Loaded:
    version: int
    index: MemoryIndex | None  # None: the catalog holds more vectors than the limit


_LOADED: dict[tuple, _Loaded] = {}
_LOCK = threading.Lock()


def serving_index(conn: psycopg.Connection, model: str) -> MemoryIndex | None:
    """This process's in-memory index of the catalog `conn` reads, current as of now; None when the
    catalog is larger than `max_vectors()` (search the database's HNSW indexes then)."""
    limit = max_vectors()
    if limit == 0:
        return None
    key = (conn.info.host, conn.info.port, conn.info.dbname, model, limit)
    version = catalog_version(conn)  # before the vectors: a write after it can only make the next reload early
    loaded = _LOADED.get(key)
    if loaded is not None and loaded.version == version:
        return loaded.index
    with _LOCK:  # one load per process, not one per concurrent search
        loaded = _LOADED.get(key)
        if loaded is None or loaded.version != version:
            fits = count_vectors(conn, model, KINDS.split("+")) <= limit
            loaded = _LOADED[key] = _Loaded(version, MemoryIndex.load(conn, model) if fits else None)
    return loaded.index
