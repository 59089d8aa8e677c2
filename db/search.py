"""Search queries over the catalog: dense (HNSW over one kind of vector) and lexical (full text).

Every query takes the same filters, bound as parameters; results are (adapter id, score) lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import psycopg
from pgvector import HalfVector
from psycopg import sql

from loracle.db.vectors import kind_predicate


@dataclass(frozen=True)
class SearchFilters:
    """Which adapters may be returned. Defaults keep everything."""

    base_models: list[str] | None = None
    exclude_tags: list[str] = field(default_factory=list)
    exclude_blocklisted: bool = False
    exclude_ids: list[int] = field(default_factory=list)

    def params(self) -> dict[str, object]:
        return {
            "base_models": self.base_models,
            "exclude_tags": [t.lower() for t in self.exclude_tags],
            "exclude_blocklisted": self.exclude_blocklisted,
            "exclude_ids": self.exclude_ids,
        }


# hnsw.ef_search: how many entries the HNSW search keeps; each list reads 150 deep after the filters, so
# it is set high enough that the lists match exact search almost always, from the bundled catalogs to
# 100K adapters. `python -m loracle.evals.bench_retrieval` measures that recall per size (and marks where
# the planner scans every row instead of the index).
DEFAULT_EF_SEARCH = 800

_FILTER_SQL = (
    # a missing base model counts as '' (unknown), so a filter that lists '' keeps it too
    "(%(base_models)s::text[] IS NULL OR a.base_model = ANY(%(base_models)s::text[])"
    " OR (a.base_model IS NULL AND '' = ANY(%(base_models)s::text[]))) "
    "AND NOT (a.tags && %(exclude_tags)s::text[]) "
    "AND NOT (%(exclude_blocklisted)s AND a.blocklisted) "
    "AND NOT (a.id = ANY(%(exclude_ids)s::bigint[]))"
)


def _dense_statement(
    model: str, kind: str, query: np.ndarray, k: int, filters: SearchFilters, per_adapter_rows: int = 1
) -> tuple[sql.Composed, dict[str, object]]:
    dims = int(query.shape[0])
    distance = sql.SQL("(e.embedding::halfvec({dims}) <=> %(query)s::halfvec({dims}))").format(dims=sql.Literal(dims))
    statement = sql.SQL(
        "WITH hits AS MATERIALIZED ("
        " SELECT e.adapter_id, {distance} AS distance FROM adapter_embeddings e"
        " JOIN adapters a ON a.id = e.adapter_id"
        " WHERE e.model = {model} AND {kind} AND {filters}"
        " ORDER BY {distance} LIMIT %(limit)s)"
        " SELECT adapter_id, min(distance) AS distance FROM hits GROUP BY adapter_id"
        " ORDER BY distance LIMIT %(k)s"
    ).format(distance=distance, filters=sql.SQL(_FILTER_SQL), model=sql.Literal(model), kind=kind_predicate(kind, "e"))
    # model and kind are inlined (safely quoted) so the planner can match the partial HNSW index even
    # when psycopg switches to a prepared, generic plan.
    params: dict[str, object] = {"query": HalfVector(query), "limit": k * per_adapter_rows, "k": k}
    params.update(filters.params())
    return statement, params


def passing_ids(conn: psycopg.Connection, filters: SearchFilters) -> list[int]:
    """The ids of every adapter the filters keep (the same predicate every search applies)."""
    rows = conn.execute(f"SELECT a.id FROM adapters a WHERE {_FILTER_SQL} ORDER BY a.id", filters.params()).fetchall()
    return [adapter_id for (adapter_id,) in rows]


def _dense_rows(rows: list) -> list[tuple[int, float]]:
    return [(adapter_id, 1.0 - float(dist)) for adapter_id, dist in rows]


def _set_hnsw(conn: psycopg.Connection, ef_search: int) -> None:
    conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(int(ef_search))))
    conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")


def dense_search(
    conn: psycopg.Connection,
    model: str,
    kind: str,
    query: np.ndarray,
    k: int,
    filters: SearchFilters,
    *,
    ef_search: int = DEFAULT_EF_SEARCH,
    exact: bool = False,
    per_adapter_rows: int = 1,
) -> list[tuple[int, float]]:
    """Top-k adapters by cosine similarity of one kind of vector (best row per adapter).

    Uses the (model, kind) HNSW index with pgvector's iterative scan, so filters do not starve the
    result; `exact=True` scans every row instead (the ground truth for index recall).
    `per_adapter_rows` > 1 over-fetches for kinds with several vectors per adapter (example prompts).
    """
    statement, params = _dense_statement(model, kind, query, k, filters, per_adapter_rows)
    with conn.transaction():
        if exact:
            conn.execute("SET LOCAL enable_indexscan = off")
        else:
            _set_hnsw(conn, ef_search)
        rows = conn.execute(statement, params).fetchall()
    return _dense_rows(rows)


# BM25 (Robertson/Sparck Jones IDF, k1, b) over adapter_terms (migrations 005, 007). Field weights per
# tsvector class: name + trigger words (A), tags (B), refined description (C), description (D).
BM25_K1 = 1.2
BM25_B = 0.75
# The refined description repeats the name, tags and trigger words: a low weight keeps them from counting
# twice (tools/retrieve.py's refined lists).
BM25_FIELD_WEIGHTS = {"a": 1.0, "b": 1.0, "c": 0.25, "d": 1.0}


def lexical_search(
    conn: psycopg.Connection, text: str, k: int, filters: SearchFilters, *, refined: bool = True,
    weights: dict[str, float] | None = None,
) -> list[tuple[int, float]]:
    """Top-k adapters by BM25 over the query's (stemmed, stop-word-free) words.

    IDF and the average length come from term statistics kept in step with the catalog by triggers,
    so rare words outweigh common ones (ts_rank_cd has no IDF; BM25 fused better on dev).
    `refined=False` scores every document without its refined description (class C), exactly as
    before `loracle catalog refine` ran: term frequencies, document frequencies and lengths alike.
    """
    statement, params = _lexical_statement(text, k, filters, refined=refined, weights=weights)
    return _score_rows(conn.execute(statement, params).fetchall())


def _score_rows(rows: list) -> list[tuple[int, float]]:
    return [(adapter_id, float(score)) for adapter_id, score in rows]


def _lexical_statement(
    text: str, k: int, filters: SearchFilters, *, refined: bool = True, weights: dict[str, float] | None = None
) -> tuple[str, dict[str, object]]:
    # Postings are read term by term through the primary key (term, adapter_id), never by a scan.
    statement = (
        "WITH q AS (SELECT DISTINCT lexeme AS term FROM unnest(to_tsvector('english', %(text)s))),"
        " s AS (SELECT greatest(docs, 1)::float8 AS n,"
        "       greatest((total_len - %(drop_c)s * total_len_c) / greatest(docs, 1), 1) AS avgdl FROM lexical_stats),"
        " p AS MATERIALIZED (SELECT t.term, t.adapter_id, t.doc_len - %(drop_c)s * t.len_c AS doc_len,"
        "       %(wa)s * t.tf_a + %(wb)s * t.tf_b + %(wc)s * t.tf_c + %(wd)s * t.tf_d AS tf,"
        "       t.tf_a + t.tf_b + (1 - %(drop_c)s) * t.tf_c + t.tf_d AS raw_tf"
        "       FROM q CROSS JOIN LATERAL (SELECT * FROM adapter_terms x WHERE x.term = q.term) t),"
        " df AS (SELECT term, count(*)::float8 AS df FROM p WHERE raw_tf > 0 GROUP BY term),"
        " scored AS MATERIALIZED ("
        "  SELECT p.adapter_id, sum(ln(1 + (s.n - df.df + 0.5) / (df.df + 0.5))"
        "         * p.tf * (%(k1)s + 1) / (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.doc_len / s.avgdl))) AS score"
        "  FROM p JOIN df USING (term) CROSS JOIN s WHERE p.tf > 0 GROUP BY p.adapter_id"
        "  ORDER BY score DESC, p.adapter_id)"
        # filtered best first, stopping at k: a common word matches most of a 100K catalog, and filtering
        # every match before sorting was half the time of such a query
        " SELECT sc.adapter_id, sc.score FROM scored sc"
        f" WHERE EXISTS (SELECT FROM adapters a WHERE a.id = sc.adapter_id AND {_FILTER_SQL})"
        " ORDER BY sc.score DESC, sc.adapter_id LIMIT %(k)s"
    )
    weights = {**BM25_FIELD_WEIGHTS, **(weights or {})}
    if not refined:
        weights["c"] = 0.0
    params: dict[str, object] = {
        "text": text, "k": k, "k1": BM25_K1, "b": BM25_B, "drop_c": 0.0 if refined else 1.0,
        "wa": weights["a"], "wb": weights["b"], "wc": weights["c"], "wd": weights["d"],
    }
    params.update(filters.params())
    return statement, params


def _keys_statement(keys: Sequence[tuple[str, float]], k: int, filters: SearchFilters) -> tuple[str, dict[str, object]]:
    # a ranked list computed outside the database ("source:external_id", score), kept in its order, filtered here
    statement = (
        "SELECT a.id, x.score FROM unnest(%(sources)s::text[], %(external_ids)s::text[], %(scores)s::float8[])"
        " WITH ORDINALITY AS x(source, external_id, score, position)"
        " JOIN adapters a ON a.source = x.source AND a.external_id = x.external_id"
        f" WHERE {_FILTER_SQL} ORDER BY x.position LIMIT %(k)s"
    )
    split = [key.split(":", 1) for key, _ in keys]
    params: dict[str, object] = {"sources": [s for s, _ in split], "external_ids": [e for _, e in split],
                                 "scores": [float(score) for _, score in keys], "k": k}
    params.update(filters.params())
    return statement, params


def keyed_search(conn: psycopg.Connection, keys: Sequence[tuple[str, float]], k: int, filters: SearchFilters) -> list[tuple[int, float]]:
    """The first k adapters of a ranked list of ("source:external_id", score) that exist and pass the filters."""
    statement, params = _keys_statement(keys, k, filters)
    return _score_rows(conn.execute(statement, params).fetchall())


@dataclass(frozen=True)
class ListQuery:
    """One ranked list to fetch: `kind` is a stored vector kind or kinds ("full+refined", with `vector`),
    "lexical" (with `text`) or "keys" (with `keys`, a ranked list of catalog keys to filter)."""

    kind: str
    k: int
    vector: np.ndarray | None = None
    text: str = ""
    per_adapter_rows: int = 1
    refined: bool = True  # lexical only: BM25 with the refined description (see lexical_search)
    keys: tuple[tuple[str, float], ...] = ()


def search_lists(
    conn: psycopg.Connection, model: str, queries: list[ListQuery], filters: SearchFilters, *, ef_search: int = DEFAULT_EF_SEARCH,
    spare: Sequence[psycopg.Connection] = (),
) -> list[list[tuple[int, float]]]:
    """Several dense and lexical lists, each connection's share in one round trip (psycopg's pipeline
    mode), returned in `queries` order.

    The statements and settings are exactly those of `dense_search` and `lexical_search`, so each list
    is what they return one by one; only the waiting between them is gone (a prompt's tasks need a
    dozen or more lists). With `spare` connections the lists are dealt out between them and `conn` and
    fetched in parallel threads: PostgreSQL runs each connection in its own process, so on 2 cores a
    prompt's 20 lists take about 55% of the time they take on one connection."""
    conns = [conn, *spare][: max(len(queries), 1)]
    if len(conns) == 1:
        return _fetch_lists(conn, model, queries, filters, ef_search)
    shares = [queries[i :: len(conns)] for i in range(len(conns))]
    with ThreadPoolExecutor(len(conns)) as pool:
        fetched = list(pool.map(lambda c, share: _fetch_lists(c, model, share, filters, ef_search), conns, shares))
    out: list[list[tuple[int, float]]] = [[] for _ in queries]
    for i, lists in enumerate(fetched):
        out[i :: len(conns)] = lists
    return out


def _fetch_lists(
    conn: psycopg.Connection, model: str, queries: list[ListQuery], filters: SearchFilters, ef_search: int
) -> list[list[tuple[int, float]]]:
    statements = [_statement(model, q, filters) for q in queries]
    with conn.pipeline(), conn.transaction():
        _set_hnsw(conn, ef_search)
        cursors = [conn.execute(statement, params) for statement, params in statements]
        rows = [cursor.fetchall() for cursor in cursors]
    return [_dense_rows(r) if q.vector is not None else _score_rows(r) for q, r in zip(queries, rows)]


def _statement(model: str, query: ListQuery, filters: SearchFilters) -> tuple[str | sql.Composed, dict[str, object]]:
    if query.kind == "lexical":
        return _lexical_statement(query.text, query.k, filters, refined=query.refined)
    if query.kind == "keys":
        return _keys_statement(query.keys, query.k, filters)
    return _dense_statement(model, query.kind, query.vector, query.k, filters, query.per_adapter_rows)
