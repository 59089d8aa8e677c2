"""Retrieval of candidate adapters for a prompt or for each task of a plan.

Strategies, cheapest first: `dense` (HNSW over the adapter's full text, Stylus's approach and the
baseline), `head` (name, tags, trigger words), `lexical` (BM25 over the full text), `fused` (reciprocal
rank fusion of the dense lists and the lexical list), `trained` (the fused lists and two lists learned
from real prompt -> LoRA choices, tools/learned_lists.py), `rerank` (fused, then re-scored by
tools/rerank.py with all of an adapter's evidence) and `learned` (trained, then re-scored by the model
trained on the same choices, tools/learned_rank.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import psycopg

from loracle.db.catalog import get_card_heads
from loracle.db.search import DEFAULT_EF_SEARCH, ListQuery, SearchFilters, search_lists
from loracle.db.vectors import best_similarities
from loracle.tools.blas_threads import one_blas_thread
from loracle.tools.embedder import Embedder
from loracle.tools.learned_lists import LearnedLists, load_learned_lists
from loracle.tools.memory_search import serving_index

STRATEGIES = ("dense", "head", "lexical", "fused", "trained", "rerank", "learned")
TRAINED = ("trained", "learned")  # the strategies whose first stage holds the learned lists
RRF_K = 30  # a small k lets each list's first ranks decide more; tuned with `loracle eval retrieval`
# How deep each fused list is read: deep enough that an adapter only one list ranks high still reaches the
# filtered top k. The learned ranker reads and re-scores the depth it was trained on (its artifact's).
FUSION_DEPTH = 300
RERANK_DEPTH = 150  # what the hand-weighted reranker re-scores
# (list name, weight) fused by `fused`; dense lists name a kind of stored vector, "lexical" is BM25.
FUSED_LISTS: tuple[tuple[str, float], ...] = (("full", 1.0), ("head", 1.0), ("prompt", 1.0), ("lexical", 1.0))
# After `loracle catalog refine`, the card-text list ranks each adapter by the better of its raw card
# vector and its refined-description vector (a noisy card loses to its cleaned description, not the other
# way round), and BM25 reads the refined description as a field of its own. `refined=False` turns both off:
# retrieval exactly as before refining (the eval's rows without "+ refined").
# The better of the two vectors is one search of the index over both kinds (tools/adapter_texts.py),
# reading up to two rows per adapter: the same list as two searches merged, at half the cost.
CARD_KINDS = "full+refined"
PROMPT_ROWS_PER_ADAPTER = 1  # the example-prompt kind holds one vector per adapter (tools/adapter_texts.py)

Fetch = Callable[[list[ListQuery]], list[list[tuple[int, float]]]]


class ListSource(Protocol):
    """Answers the first stage's lists instead of the database (training's exact in-memory lists)."""

    def fetcher(self, conn: psycopg.Connection, model: str, filters: SearchFilters, ef_search: int,
                spare: Sequence[psycopg.Connection] = ()) -> Fetch: ...


_LIST_SOURCE: ContextVar[ListSource | None] = ContextVar("loracle_list_source", default=None)


@contextmanager
def lists_from(source: ListSource) -> Iterator[None]:
    """Every first stage in this context reads its lists from `source`: training calibrates the planner
    through the agent's own search, which takes no `fetch` argument."""
    token = _LIST_SOURCE.set(source)
    try:
        yield
    finally:
        _LIST_SOURCE.reset(token)


__all__ = ["Hit", "SearchFilters", "STRATEGIES", "retrieve", "retrieve_for_tasks"]


@dataclass
class Hit:
    """One candidate adapter with its score and the evidence that put it there."""

    adapter_id: int
    score: float
    source: str = ""
    external_id: str = ""
    name: str = ""
    base_model: str | None = None
    tags: list[str] = field(default_factory=list)
    trigger_words: list[str] = field(default_factory=list)
    recommended_weight: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def explain(self) -> str:
        parts = [f"{name} #{rank}" for name, rank in sorted(self.evidence.get("ranks", {}).items(), key=lambda x: x[1])]
        if self.evidence.get("matched_terms"):
            parts.append("matched: " + ", ".join(self.evidence["matched_terms"]))
        return "; ".join(parts) or "—"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _list_query(name: str, text: str, query_vector: np.ndarray, depth: int, refined: bool) -> ListQuery:
    if name == "lexical":
        return ListQuery("lexical", depth, text=text, refined=refined)
    if name == "full" and refined:
        return ListQuery(CARD_KINDS, depth, vector=query_vector, per_adapter_rows=2)
    rows = PROMPT_ROWS_PER_ADAPTER if name == "prompt" else 1
    return ListQuery(name, depth, vector=query_vector, per_adapter_rows=rows)


def learned_queries(learned: LearnedLists, query_vector: np.ndarray, depth: int, refined: bool) -> dict[str, ListQuery]:
    """The trained first stage's lists for one text (those of non-zero weight): its adapted vector over the
    card vectors (without the refined ones when `refined` is off), and what the most similar training
    prompts picked."""
    queries = {}
    if learned.weights.get("adapted", 0.0):
        kinds = [kind for kind in learned.kind.split("+") if refined or kind != "refined"]
        queries["adapted"] = ListQuery("+".join(kinds), depth, vector=learned.adapt(query_vector), per_adapter_rows=len(kinds))
    if learned.weights.get("neighbours", 0.0):
        queries["neighbours"] = ListQuery("keys", depth, keys=tuple(learned.neighbour_picks(query_vector)))
    return queries


def rrf(lists: dict[str, list[tuple[int, float]]], weights: dict[str, float]) -> list[tuple[int, float, dict[str, int]]]:
    """Reciprocal rank fusion: sum of weight / (RRF_K + rank) over the lists an adapter appears in."""
    scores: dict[int, float] = defaultdict(float)
    ranks: dict[int, dict[str, int]] = defaultdict(dict)
    for name, items in lists.items():
        for rank, (adapter_id, _) in enumerate(items, start=1):
            scores[adapter_id] += weights.get(name, 1.0) / (RRF_K + rank)
            ranks[adapter_id][name] = rank
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(adapter_id, score, ranks[adapter_id]) for adapter_id, score in ordered]


def first_stage(
    conn: psycopg.Connection,
    embedder: Embedder,
    texts: list[str],
    query_vectors: np.ndarray,
    strategy: str,
    k: int,
    filters: SearchFilters,
    ef_search: int,
    fused_lists: tuple[tuple[str, float], ...] = FUSED_LISTS,
    refined: bool = True,
    spare: Sequence[psycopg.Connection] = (),
    learned: LearnedLists | None = None,
    depth: int | None = None,
    fetch: Fetch | None = None,
    keep: int | None = None,
) -> list[list[Hit]]:
    """Per text, one ranked list or the RRF of several (every strategy but `dense`/`head`/`lexical` starts
    fused; `trained` and `learned` add the learned lists of `learned`, by default the trained artifact's);
    all texts' lists are fetched in one round trip per connection (db.search.search_lists, which spreads
    them over `spare` connections too). With `refined`, the card-text list also reads the
    refined-description vectors and keeps each adapter's better one (CARD_KINDS). `depth` overrides how
    deep each fused list is read. `fetch` (or the source of `lists_from`, or else this process's in-memory
    index of a catalog small enough, tools/memory_search.py) answers the dense lists instead of the HNSW
    indexes. `keep` cuts each text's fused hits to its best `keep` (None: every adapter of every list;
    building them all cost more than the rest of the fusion)."""
    single = strategy in ("dense", "head", "lexical")
    names = ["full" if strategy == "dense" else strategy] if single else [name for name, _ in fused_lists]
    weights = dict(fused_lists)
    if strategy in TRAINED:
        learned = learned or load_learned_lists()
        weights.update(learned.weights)
    if single:
        depth = k
    elif depth is None:
        depth = max(k, FUSION_DEPTH)
    per_text = []
    for text, vector in zip(texts, query_vectors):
        lists = {name: _list_query(name, text, vector, depth, refined) for name in names}
        if strategy in TRAINED:
            lists.update(learned_queries(learned, vector, depth, refined))
        per_text.append(lists)
    queries = [query for lists in per_text for query in lists.values()]
    if fetch is None and (source := _LIST_SOURCE.get() or serving_index(conn, embedder.name)) is not None:
        fetch = source.fetcher(conn, embedder.name, filters, ef_search, spare)
    if fetch is None:
        fetched = iter(search_lists(conn, embedder.name, queries, filters, ef_search=ef_search, spare=spare))
    else:
        fetched = iter(fetch(queries))
    found = []
    for wanted in per_text:
        lists = {name: next(fetched) for name in wanted}
        if single:
            [(kind, items)] = lists.items()
            found.append([Hit(adapter_id, score, evidence={"ranks": {kind: rank}})
                          for rank, (adapter_id, score) in enumerate(items, start=1)])
            continue
        # the lexical list's BM25 and the adapted list's cosine: features of the learned reranker
        scores = {name: dict(lists.get(name, ())) for name in ("lexical", "adapted")}
        found.append([Hit(adapter_id, score, evidence={"ranks": ranks, **{f"{name}_score": round(values[adapter_id], 4)
                                                                          for name, values in scores.items() if adapter_id in values}})
                      for adapter_id, score, ranks in rrf(lists, weights)[:keep]])
    return found


def _search_many(
    conn: psycopg.Connection,
    embedder: Embedder,
    texts: list[str],
    query_vectors: np.ndarray,
    strategy: str,
    k: int,
    filters: SearchFilters,
    ef_search: int,
    fused_lists: tuple[tuple[str, float], ...] = FUSED_LISTS,
    refined: bool = True,
    spare: Sequence[psycopg.Connection] = (),
) -> list[list[Hit]]:
    """Top-k hits for several texts; the rerankers' database reads are batched: cards once for the union
    of all texts' candidates (they overlap), and every text's cosines in one round trip. The result for
    each text is exactly what searching it alone gives."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    with one_blas_thread():
        return _search_many_ranked(conn, embedder, texts, query_vectors, strategy, k, filters, ef_search, fused_lists, refined, spare)


def _search_many_ranked(
    conn: psycopg.Connection, embedder: Embedder, texts: list[str], query_vectors: np.ndarray, strategy: str, k: int,
    filters: SearchFilters, ef_search: int, fused_lists: tuple[tuple[str, float], ...], refined: bool,
    spare: Sequence[psycopg.Connection],
) -> list[list[Hit]]:
    ranker = None
    if strategy == "learned":  # the model trained with this filter, on candidates as deep as it re-scores
        from loracle.tools.learned_rank import ranker_for

        ranker = ranker_for(filters)
    # The hand-weighted reranker re-scores the fused top 150: for the agent's 8 candidates per task,
    # scoring a 300-deep fusion's whole union cost more than it changed.
    depth = max(k, ranker.depth if ranker else RERANK_DEPTH)
    found = first_stage(conn, embedder, texts, query_vectors, strategy, k, filters, ef_search, fused_lists, refined, spare,
                        depth=depth if ranker else None, keep=depth if strategy in ("rerank", "learned") else k)
    if strategy in ("rerank", "learned"):
        found = [hits[:depth] for hits in found]
        ids = list(dict.fromkeys(h.adapter_id for hits in found for h in hits))
        if strategy == "rerank":
            from loracle.tools.rerank import COSINE_KINDS, rerank

            heads = get_card_heads(conn, ids)
            cosines = _similarities(conn, embedder.name, _requests(query_vectors, found), COSINE_KINDS)
            found = [rerank(conn, embedder, t, v, hits, heads, c, refined=refined)
                     for t, v, hits, c in zip(texts, query_vectors, found, cosines)]
        else:  # the learned reranker (tools/learned_rank.py, `loracle rank train`)
            from loracle.tools.learned_rank import DENSE_KINDS, rerank_learned
            from loracle.tools.rank_features import load_cards

            infos = load_cards(conn, ids)
            cosines = _similarities(conn, embedder.name, _requests(query_vectors, found), DENSE_KINDS)
            found = [rerank_learned(conn, embedder, t, v, hits, c, infos, ranker)
                     for t, v, hits, c in zip(texts, query_vectors, found, cosines)]
    found = [hits[:k] for hits in found]
    # the hand-weighted reranker already read these cards (with the rest of its candidates)
    cards = heads if strategy == "rerank" else get_card_heads(conn, list({h.adapter_id for hits in found for h in hits}))
    for text, hits in zip(texts, found):
        _attach_cards(hits, text, cards)
    return found


def _similarities(conn: psycopg.Connection, model: str, requests: list[tuple[np.ndarray, list[int]]],
                  kinds: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """The candidates' cosines per kind: from this process's in-memory index when the catalog fits (as
    training computes its features), else in the database."""
    index = serving_index(conn, model)
    return index.similarities(requests, kinds) if index is not None else best_similarities(conn, model, requests, kinds)


def _requests(query_vectors: np.ndarray, found: list[list[Hit]]) -> list[tuple[np.ndarray, list[int]]]:
    return [(vector, [h.adapter_id for h in hits]) for vector, hits in zip(query_vectors, found)]


def _search(
    conn: psycopg.Connection,
    embedder: Embedder,
    text: str,
    query_vector: np.ndarray,
    strategy: str,
    k: int,
    filters: SearchFilters,
    ef_search: int,
    fused_lists: tuple[tuple[str, float], ...] = FUSED_LISTS,
    refined: bool = True,
    spare: Sequence[psycopg.Connection] = (),
) -> list[Hit]:
    return _search_many(conn, embedder, [text], np.asarray([query_vector]), strategy, k, filters, ef_search, fused_lists,
                        refined, spare)[0]


def _attach_cards(hits: list[Hit], text: str, cards: dict) -> None:
    words = set(text.lower().split())
    for hit in hits:
        card = cards[hit.adapter_id]
        hit.source, hit.external_id, hit.name = card["source"], card["external_id"], card["name"]
        hit.base_model, hit.tags, hit.trigger_words = card["base_model"], card["tags"], card["trigger_words"]
        hit.recommended_weight = card["recommended_weight"]
        matched = [t for t in [*card["trigger_words"], *card["tags"]] if t.lower() in words or t.lower() in text.lower()]
        if matched:
            hit.evidence["matched_terms"] = matched[:5]


def retrieve(
    conn: psycopg.Connection,
    embedder: Embedder,
    text: str,
    *,
    strategy: str = "fused",
    k: int = 150,
    filters: SearchFilters | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
    spare: Sequence[psycopg.Connection] = (),
) -> list[Hit]:
    """Top-k candidate adapters for one text (a whole prompt or one task); `spare` connections share the
    ranked lists' queries (db.search.search_lists)."""
    if not text.strip():
        raise ValueError("cannot search for an empty text")
    vector = embedder.encode([text])[0]
    return _search(conn, embedder, text, vector, strategy, k, filters or SearchFilters(), ef_search, spare=spare)


def retrieve_for_tasks(
    conn: psycopg.Connection,
    embedder: Embedder,
    tasks: list[str],
    *,
    strategy: str = "fused",
    k: int = 150,
    filters: SearchFilters | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
    spare: Sequence[psycopg.Connection] = (),
) -> dict[str, list[Hit]]:
    """Candidates per task (short phrases of a prompt), with the tasks embedded in one batch."""
    tasks = [t for t in dict.fromkeys(t.strip() for t in tasks) if t]
    vectors = embedder.encode(tasks)
    found = _search_many(conn, embedder, tasks, vectors, strategy, k, filters or SearchFilters(), ef_search, spare=spare)
    return dict(zip(tasks, found))
