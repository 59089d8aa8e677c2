"""Retrieval latency and HNSW recall, on the imported catalog and on a synthetic 100K-adapter copy of it.

    python -m loracle.evals.bench_retrieval --queries ../shared/data/queries/dev.jsonl [--synthetic 100000]

Prints, side by side: query-embedding time, per-strategy search time (p50/p95, top-150, at the settings'
ef_search and search connections, as the agent searches), and the recall of the HNSW index against exact
search at several ef_search values with the time per list.
The synthetic catalog lives in its own database (`loracle_bench`) and is built by copying every
adapter, each copy's vectors mixed with another adapter's (see MIX), so the ranking problem keeps a
realistic shape. Drop that database to rebuild it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import psycopg
import torch
from psycopg import sql

from loracle.agent.settings import get_settings
from loracle.db import connect
from loracle.db.catalog import vacuum_catalog
from loracle.db.search import SearchFilters, _dense_statement, _set_hnsw, dense_search
from loracle.db.vectors import ensure_hnsw_index, index_name
from loracle.evals.metrics import percentile
from loracle.evals.queries import load_queries
from loracle.tools.adapter_texts import INDEXED_KINDS, TEXT_KINDS
from loracle.tools.embedder import MINILM, get_embedder
from loracle.tools.retrieve import _search

KINDS = tuple(kind.name for kind in TEXT_KINDS)


def build_synthetic(url: str, size: int) -> str:
    """Create (or reuse) database loracle_bench holding `size` adapters derived from the real catalog.

    Adapters are built once; each kind of vector is copied (and its HNSW index built) once the real
    catalog has that kind complete, so a build started before `catalog refine` picks "refined" up later.
    """
    info = psycopg.conninfo.conninfo_to_dict(url)
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'loracle_bench'").fetchone():
            conn.execute("CREATE DATABASE loracle_bench")
        source_counts = dict(conn.execute("SELECT kind, count(*) FROM adapter_embeddings GROUP BY kind").fetchall())
    bench_url = psycopg.conninfo.make_conninfo(**{**info, "dbname": "loracle_bench"})
    bench = connect(bench_url, get_settings().pgdata_dir)
    with bench.connection() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS dblink")
        if conn.execute("SELECT count(*) FROM adapters").fetchone()[0] < size:
            _copy_adapters(conn, url, size)
        have = dict(conn.execute("SELECT kind, count(*) FROM adapter_embeddings GROUP BY kind").fetchall())
        real = conn.execute("SELECT count(*) FROM adapters WHERE source <> 'synthetic'").fetchone()[0]
        copies = size / max(real, 1)
        for kind in KINDS:
            if source_counts.get(kind, 0) and have.get(kind, 0) < source_counts[kind] * copies * 0.99:
                _copy_vectors(conn, url, kind)
        for kind in INDEXED_KINDS:  # built if missing, rebuilt when the build parameters changed
            started = time.perf_counter()
            ensure_hnsw_index(conn, MINILM, kind, 384)
            if (seconds := time.perf_counter() - started) > 1:
                print(f"  index {kind!r}: {seconds:.0f} s", flush=True)
        vacuum_catalog(conn)  # statistics and the visibility map (index-only scans)
    bench.close()
    return bench_url


def _copy_adapters(conn: psycopg.Connection, url: str, size: int) -> None:
    print(f"building {size} synthetic adapters (one time; minutes)...", flush=True)
    started = time.perf_counter()
    conn.execute("TRUNCATE adapters CASCADE")
    columns = (
        "source, external_id, name, base_model, tags, trigger_words, description, refined_description, "
        "example_prompts, blocklisted, content_hash"
    )
    # The per-row BM25 upkeep (migration 005's triggers) updates one statistics row per adapter; inside one
    # 100K-row statement every update walks all the earlier versions of that row. The import commits in
    # batches and never meets this; here the triggers are off and the terms are indexed set-based below.
    conn.execute("ALTER TABLE adapters DISABLE TRIGGER USER")
    try:
        conn.execute(
            f"INSERT INTO adapters ({columns}) SELECT * FROM dblink(%s, 'SELECT {columns} FROM adapters') "
            "AS t(source text, external_id text, name text, base_model text, tags text[], trigger_words text[], "
            "description text, refined_description text, example_prompts text[], blocklisted boolean, content_hash text)",
            (url,),
        )
        real = conn.execute("SELECT count(*) FROM adapters").fetchone()[0]
        copies = -(-size // real)
        conn.execute(
            f"INSERT INTO adapters ({columns}) SELECT 'synthetic', external_id || '-' || g, name || ' ' || g, "
            "base_model, tags, trigger_words, description, refined_description, example_prompts, blocklisted, content_hash "
            "FROM adapters, generate_series(1, %s) g WHERE source <> 'synthetic' LIMIT %s",
            (copies - 1, size - real),
        )
    finally:
        conn.execute("ALTER TABLE adapters ENABLE TRIGGER USER")
    conn.execute("SELECT loracle_index_terms(id, search_text) FROM adapters")
    conn.execute(
        "UPDATE lexical_stats SET docs = s.docs, total_len = s.total_len, total_len_c = s.total_len_c FROM ("
        " SELECT count(*) AS docs, coalesce(sum(loracle_tsvector_len(search_text)), 0) AS total_len,"
        " coalesce(sum(loracle_tsvector_len_c(search_text)), 0) AS total_len_c FROM adapters) s"
    )
    print(f"  adapters and their BM25 terms: {time.perf_counter() - started:.0f} s", flush=True)


# A synthetic adapter's vector: 0.7 of its origin's plus 0.3 of a partner's (a real adapter picked by a fixed
# hash of the copy), re-normalised: copies of one adapter differ from each other (cosine ~0.8) as new
# adapters on a known topic would. Near-copies (the origin plus small noise, cosine ~0.9 between copies)
# made every query's top 150 ~11 tight clusters of 14, a worst case of HNSW that no real catalog has.
MIX = 0.3


def _copy_vectors(conn: psycopg.Connection, url: str, kind: str) -> None:
    """Copy one kind of vector to the synthetic adapters (see MIX)."""
    print(f"copying {kind!r} vectors to the synthetic adapters...", flush=True)
    started = time.perf_counter()
    conn.execute("DELETE FROM adapter_embeddings WHERE kind = %s", (kind,))
    conn.execute("DROP TABLE IF EXISTS vectors")
    conn.execute(
        "CREATE TEMP TABLE vectors AS SELECT * FROM dblink(%s, %s) "
        "AS t(external_id text, model text, kind text, position smallint, text_hash text, embedding text)",
        (url, "SELECT a.external_id, e.model, e.kind, e.position, e.text_hash, e.embedding::text "
              f"FROM adapter_embeddings e JOIN adapters a ON a.id = e.adapter_id WHERE e.kind = '{kind}'"),
    )
    conn.execute(
        "WITH origin AS (SELECT external_id, row_number() OVER (ORDER BY id) - 1 AS rn, count(*) OVER () AS n"
        "                FROM adapters WHERE source <> 'synthetic'),"
        " copy AS (SELECT id, split_part(external_id, '-', 1) AS origin,"
        "          nullif(split_part(external_id, '-', 2), '')::bigint AS g FROM adapters)"
        " INSERT INTO adapter_embeddings (adapter_id, model, kind, position, text_hash, embedding)"
        " SELECT c.id, v.model, v.kind, v.position, v.text_hash,"
        "  CASE WHEN c.g IS NULL OR p.embedding IS NULL THEN v.embedding::halfvec"
        "   ELSE l2_normalize(v.embedding::vector * array_fill(%(keep)s::real, ARRAY[384])::vector"
        "                     + p.embedding::vector * array_fill(%(mix)s::real, ARRAY[384])::vector)::halfvec END"
        " FROM copy c JOIN vectors v ON v.external_id = c.origin JOIN origin o ON o.external_id = c.origin"
        " LEFT JOIN origin partner ON partner.rn = (o.rn * 7919 + coalesce(c.g, 0) * 104729) %% o.n"
        " LEFT JOIN vectors p ON p.external_id = partner.external_id AND p.position = v.position",
        {"keep": 1 - MIX, "mix": MIX},
    )
    print(f"  {kind}: {time.perf_counter() - started:.0f} s", flush=True)


def measure(url: str, label: str, prompts: list[str], vectors: np.ndarray, embedder, ef_search: int,
            connections: int) -> None:
    db = connect(url, get_settings().pgdata_dir)
    filters = SearchFilters(exclude_tags=["character", "celebrity"], exclude_blocklisted=True)
    with db.connections(connections) as (conn, *spare):
        count = conn.execute("SELECT count(*) FROM adapters").fetchone()[0]
        print(f"\n== {label}: {count} adapters, {len(prompts)} queries, top-150, ef_search {ef_search}, "
              f"{1 + len(spare)} connection(s) ==")
        print(f"{'strategy':<10}{'p50 ms':>12}{'p95 ms':>12}")
        for strategy in ("dense", "lexical", "fused", "rerank", "learned"):
            search = lambda p, v: _search(conn, embedder, p, v, strategy, 150, filters, ef_search, spare=spare)  # noqa: E731
            for prompt, vector in zip(prompts[:5], vectors[:5]):  # warm caches
                search(prompt, vector)
            times = []
            for prompt, vector in zip(prompts, vectors):
                started = time.perf_counter()
                search(prompt, vector)
                times.append((time.perf_counter() - started) * 1000)
            print(f"{strategy:<10}{percentile(times, 50):>12.1f}{percentile(times, 95):>12.1f}", flush=True)
        efs = sorted({200, 400, ef_search})
        print(f"\nHNSW recall@150 against exact search ({min(len(prompts), 50)} queries); p50 ms of one top-150 list at each ef;"
              "\n* where the planner scanned every row instead of the index (it costs the two; recall is then 1)")
        print(f"{'kind':<13}" + "".join(f"{'ef=' + str(ef):>10}{'p50 ms':>8}" for ef in efs) + f"{'exact ms':>10}")
        for kind in INDEXED_KINDS:
            rows = len(kind.split("+"))  # up to one row per kind and adapter, as tools/retrieve.py reads them
            top = lambda v, **how: {a for a, _ in dense_search(conn, embedder.name, kind, v, 150, filters,  # noqa: E731
                                                             per_adapter_rows=rows, **how)}
            started = time.perf_counter()
            exact = [top(v, exact=True) for v in vectors[:50]]
            exact_ms = (time.perf_counter() - started) * 1000 / len(exact)
            if not any(exact):
                continue  # no vectors of this kind
            cells = ""
            for ef in efs:
                found, times = [], []
                for v in vectors[:50]:
                    started = time.perf_counter()
                    found.append(top(v, ef_search=ef))
                    times.append((time.perf_counter() - started) * 1000)
                ms = percentile(times, 50)
                recall = np.mean([len(truth & got) / max(len(truth), 1) for truth, got in zip(exact, found)])
                mark = "" if uses_hnsw(conn, embedder.name, kind, vectors[0], filters, ef, rows) else "*"
                cells += f"{recall:>10.3f}{ms:>7.1f}{mark:1}"
            print(f"{kind:<13}{cells}{exact_ms:>10.1f}", flush=True)
    db.close()


def uses_hnsw(conn: psycopg.Connection, model: str, kind: str, vector: np.ndarray, filters: SearchFilters, ef: int,
              rows: int) -> bool:
    """Whether the planner reads the HNSW index for this list at this ef (else it scans the rows exactly);
    its choice follows the catalog's size and the ef, not the query, so one query's plan tells."""
    statement, params = _dense_statement(model, kind, vector, 150, filters, rows)
    with conn.transaction():
        _set_hnsw(conn, ef)
        plan = conn.execute(sql.SQL("EXPLAIN ") + statement, params).fetchall()
    return any(index_name(model, kind) in line for (line,) in plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", required=True)
    parser.add_argument("--n", type=int, default=200, help="how many queries to time")
    parser.add_argument("--synthetic", type=int, default=0, help="also measure on a synthetic catalog of this size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = get_settings()
    db = connect(settings.database_url, settings.pgdata_dir)
    url = db.url
    db.close()
    embedder = get_embedder(settings.embedding_model)
    prompts = [q.prompt for q in load_queries(__import__("pathlib").Path(args.queries))][: args.n]
    embedder.encode(prompts[:5])
    single = []
    for prompt in prompts[:100]:
        started = time.perf_counter()
        embedder.encode([prompt])
        single.append((time.perf_counter() - started) * 1000)
    print(f"query embedding (1 thread): p50 {percentile(single, 50):.1f} ms, p95 {percentile(single, 95):.1f} ms")
    vectors = embedder.encode(prompts)
    ef, connections = settings.hnsw_ef_search, settings.search_connections
    measure(url, "imported catalog", prompts, vectors, embedder, ef, connections)
    if args.synthetic:
        measure(build_synthetic(url, args.synthetic), "synthetic catalog", prompts, vectors, embedder, ef, connections)


if __name__ == "__main__":
    main()
