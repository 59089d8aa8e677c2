"""The retrieval suite: Recall@10/50/150/300 and nDCG@10 per strategy on a labelled queries file, in one run.

The dense strategy without any filter (Stylus's retriever, on MiniLM) is always first: the baseline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from loracle.db import Database
from loracle.db.search import DEFAULT_EF_SEARCH
from loracle.evals.metrics import ndcg_at, percentile, recall_at
from loracle.evals.queries import external_to_row_ids, load_queries
from loracle.tools.embedder import Embedder
from loracle.tools.retrieve import RERANK_DEPTH, SearchFilters, _search

KS = (10, 50, 150, 300)


@dataclass(frozen=True)
class Variant:
    """One row of the table. `refined=False` searches as if `loracle catalog refine` never ran (no
    refined-text list, no refined description in BM25), so "before" and "after" come from one run."""

    name: str
    strategy: str
    filtered: bool
    refined: bool = False


VARIANTS = (
    Variant("dense (baseline)", "dense", False),
    Variant("head", "head", False),
    Variant("lexical", "lexical", False),
    Variant("fused", "fused", False),
    Variant("fused + filter", "fused", True),
    Variant("rerank + filter", "rerank", True),
    # after `loracle catalog refine` (what retrieval does by default): the same with the refined text
    Variant("lexical + refined", "lexical", False, True),
    Variant("fused + refined", "fused", False, True),
    Variant("fused + refined + filter", "fused", True, True),
    Variant("rerank + refined + filter", "rerank", True, True),
    # the first stage with the lists learned from real choices (tools/learned_lists.py), and the learned
    # reranker (tools/learned_rank.py) on top of it, as served (over the default, refined lists), with the
    # filter and without it (the unfiltered ranker); left out when no artifacts exist
    Variant("trained + refined + filter", "trained", True, True),
    Variant("learned + refined + filter", "learned", True, True),
    Variant("trained + refined", "trained", False, True),
    Variant("learned + refined", "learned", False, True),
)
RERANKERS = ("rerank", "learned")  # they return only the candidates they re-scored (150 unless trained deeper)


def evaluate_retrieval(
    db: Database,
    embedder: Embedder,
    queries_path: Path,
    *,
    exclude_tags: list[str],
    variants: tuple[Variant, ...] = VARIANTS,
    limit: int | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
    connections: int = 2,
    progress: bool = False,
    heldout: bool = False,
    source: str = "civitai",
) -> dict:
    """Recall, nDCG and latency per strategy; each search spreads its ranked lists over `connections`
    database connections, as the agent does (settings.search_connections)."""
    queries = load_queries(queries_path)
    if heldout:  # only the queries the learned ranker never saw (its fixed hash split, evals/rank_train.py)
        from loracle.evals.rank_train import is_heldout

        queries = [q for q in queries if is_heldout(q.id)]
    queries = queries[:limit]
    with db.connection() as conn:
        row_ids = external_to_row_ids(conn, source)
    labelled = [(q, {row_ids[i] for i in q.labels if i in row_ids}) for q in queries]
    labelled = [(q, rel) for q, rel in labelled if rel]
    vectors = embedder.encode([q.prompt for q, _ in labelled])
    with db.connection() as conn:
        refined_rows = conn.execute("SELECT count(*) FROM adapters WHERE refined_description IS NOT NULL").fetchone()[0]
    results = {"queries": len(labelled), "file": str(queries_path) + (" (ranker's held-out split)" if heldout else ""),
               "refined_adapters": refined_rows, "strategies": []}
    from loracle.tools.learned_rank import available

    for variant in variants:
        if variant.strategy in ("trained", "learned") and not available():
            continue
        filters = SearchFilters(exclude_tags=exclude_tags, exclude_blocklisted=True) if variant.filtered else SearchFilters()
        recalls = {k: [] for k in KS}
        ndcgs, latencies = [], []
        with db.connections(connections) as (conn, *spare):
            for (query, relevant), vector in tqdm(
                list(zip(labelled, vectors)), desc=variant.name, disable=not progress, leave=False
            ):
                started = time.perf_counter()
                hits = _search(
                    conn, embedder, query.prompt, vector, variant.strategy, max(KS), filters, ef_search,
                    refined=variant.refined, spare=spare,
                )
                latencies.append((time.perf_counter() - started) * 1000)
                ranked = [h.adapter_id for h in hits]
                for k in KS:
                    recalls[k].append(recall_at(ranked, relevant, k))
                ndcgs.append(ndcg_at(ranked, relevant, 10))
        # a reranker's R@k past the candidates it re-scored would only repeat its R@depth
        depth = _reranked_depth(variant, filters)
        row = {"strategy": variant.name, **{f"R@{k}": float(np.mean(recalls[k])) for k in KS if k <= depth}}
        row["nDCG@10"] = float(np.mean(ndcgs))
        row["p50_ms"] = percentile(latencies, 50)
        results["strategies"].append(row)
    return results


def _reranked_depth(variant: Variant, filters: SearchFilters) -> int:
    if variant.strategy == "learned":
        from loracle.tools.learned_rank import ranker_for

        return ranker_for(filters).depth
    return RERANK_DEPTH if variant.strategy == "rerank" else max(KS)


def format_table(results: dict) -> str:
    lines = [f"{results['queries']} labelled queries from {results['file']}; "
             f"{results.get('refined_adapters', 0)} adapters refined (rows '+ refined' use their refined text)"]
    lines.append(f"{'strategy':<28}" + "".join(f"{f'R@{k}':>8}" for k in KS) + f"{'nDCG@10':>9}{'p50 ms':>9}")
    for row in results["strategies"]:
        recalls = "".join(f"{row[f'R@{k}']:>8.3f}" if f"R@{k}" in row else f"{'-':>8}" for k in KS)
        lines.append(f"{row['strategy']:<28}{recalls}{row['nDCG@10']:>9.3f}{row['p50_ms']:>9.1f}")
    return "\n".join(lines)
