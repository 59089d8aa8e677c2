"""Training the learned reranker (`loracle rank train`): candidates, features, a model, its artifact.

Data: real prompts with the LoRAs their authors used (../shared/data/prompts/civitai_prompts.jsonl)
and, optionally, the fit half of the Stylus-labelled dev queries (../shared/data/queries/dev.jsonl).
Each file is split by a fixed hash of the query id (`heldout`): those queries are never trained on,
and `loracle eval retrieval --heldout` reports on exactly them. Candidates are what serving reranks:
the fused top 150 with the default filter. Queries none of whose labels is among the candidates
teach nothing about ordering and are skipped.

The model is sklearn's HistGradientBoostingClassifier (binary: picked or not), exported to JSON
node arrays (tools/learned_rank.py walks them); no pickle anywhere.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from db import Database
from db.embeddings import best_similarities
from db.search import DEFAULT_EF_SEARCH, SearchFilters
from evals.metrics import ndcg_at, recall_at
from evals.queries import LabelledQuery, external_to_row_ids, load_queries
from tools.learned_rank import ARTIFACT_FORMAT, ARTIFACT_VERSION, save_artifact
from tools.rank_features import DENSE_KINDS, FEATURE_VERSION, FEATURES, build_features, load_cards
from tools.retrieve import first_stage

SPLIT_SALT = "loracle-rank-v1:"
HELDOUT_SHARE = {"dev": 2, "civitai": 5}  # 1 in 2 dev queries, 1 in 5 Civitai prompts are held out
DEPTH = 150
BATCH = 32  # queries whose lists are fetched in one round trip


def query_source(query_id: str) -> str:
    return "civitai" if query_id.startswith("civitai-") else "dev"


def is_heldout(query_id: str) -> bool:
    """The fixed split: held-out queries are never trained on (nor used to calibrate thresholds)."""
    share = HELDOUT_SHARE[query_source(query_id)]
    return int(hashlib.sha256((SPLIT_SALT + query_id).encode()).hexdigest()[:8], 16) % share == 0


@dataclass
class Candidates:
    query_id: str
    text: str
    vector: np.ndarray
    ids: list[int]
    ranks: list[dict[str, int]]
    rrf_scores: list[float]
    relevant: set[int]
    lexical_scores: list[float] = field(default_factory=list)
    features: np.ndarray | None = field(default=None, repr=False)

    @property
    def labels(self) -> np.ndarray:
        return np.array([i in self.relevant for i in self.ids], dtype=np.int8)


def collect_candidates(
    db: Database, embedder, queries: list[LabelledQuery], filters: SearchFilters, ef_search: int = DEFAULT_EF_SEARCH, progress: bool = False
) -> list[Candidates]:
    """The fused top 150 per labelled query, with ranks, RRF scores and labels as row ids."""
    from tqdm import tqdm

    with db.connection() as conn:
        row_ids = external_to_row_ids(conn)
    labelled = [(q, {row_ids[i] for i in q.labels if i in row_ids}) for q in queries]
    labelled = [(q, rel) for q, rel in labelled if rel]
    vectors = embedder.encode([q.prompt for q, _ in labelled])
    out = []
    with db.connection() as conn:
        for start in tqdm(range(0, len(labelled), BATCH), desc="candidates", disable=not progress, leave=False):
            batch = labelled[start : start + BATCH]
            found = first_stage(conn, embedder, [q.prompt for q, _ in batch], vectors[start : start + BATCH], "learned", DEPTH,
                                filters, ef_search)  # the learned strategy's own first stage (lists DEPTH deep)
            for (query, relevant), vector, hits in zip(batch, vectors[start : start + BATCH], found):
                hits = hits[:DEPTH]
                out.append(Candidates(query.id, query.prompt, vector, [h.adapter_id for h in hits],
                                      [h.evidence["ranks"] for h in hits], [h.score for h in hits], relevant,
                                      [h.evidence.get("lexical_score", 0.0) for h in hits]))
    return out


def attach_features(db: Database, model_name: str, items: list[Candidates]) -> None:
    """Features for every query's candidates, computed as the reranker computes them when serving
    (cosines in the database per query, cards loaded once for all)."""
    with db.connection() as conn:
        cards = load_cards(conn, sorted({i for c in items for i in c.ids}))
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            cosines = best_similarities(conn, model_name, [(c.vector, c.ids) for c in batch], DENSE_KINDS)
            for c, per_kind in zip(batch, cosines):
                c.features = build_features(c.text, c.ids, c.ranks, c.rrf_scores, per_kind, cards, c.lexical_scores)


def export_hgb(model) -> dict[str, Any]:
    """A fitted binary HistGradientBoostingClassifier as plain node arrays."""
    trees = []
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        if np.any(nodes["is_categorical"]):
            raise ValueError("categorical splits are not exported")
        trees.append({
            "feature": nodes["feature_idx"].astype(int).tolist(),
            "threshold": [float(v) for v in nodes["num_threshold"]],
            "missing_left": nodes["missing_go_to_left"].astype(bool).tolist(),
            "left": nodes["left"].astype(int).tolist(),
            "right": nodes["right"].astype(int).tolist(),
            "leaf": nodes["is_leaf"].astype(bool).tolist(),
            "value": [round(float(v), 7) for v in nodes["value"]],
            "depth": int(nodes["depth"].max()) + 1,
        })
    return {"type": "gbdt", "baseline": float(np.ravel(model._baseline_prediction)[0]), "trees": trees}


def fit_hgb(x: np.ndarray, y: np.ndarray, *, max_iter: int = 300, seed: int = 0, sample_weight: np.ndarray | None = None):
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=max_iter, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=40, l2_regularization=1.0,
        early_stopping=False, random_state=seed,
    )
    return model.fit(x.astype(np.float64), y, sample_weight=sample_weight)


def ranking_metrics(items: list[Candidates], scores: list[np.ndarray] | None) -> dict[str, float]:
    """Recall@10/50 and nDCG@10 of the candidates ordered by `scores` (None = fused order)."""
    r10, r50, nd = [], [], []
    for i, c in enumerate(items):
        order = np.arange(len(c.ids)) if scores is None else np.argsort(-scores[i], kind="stable")
        ranked = [c.ids[j] for j in order]
        r10.append(recall_at(ranked, c.relevant, 10))
        r50.append(recall_at(ranked, c.relevant, 50))
        nd.append(ndcg_at(ranked, c.relevant, 10))
    return {"queries": len(items), "R@10": float(np.mean(r10)), "R@50": float(np.mean(r50)), "nDCG@10": float(np.mean(nd))}


def train(
    db: Database,
    embedder,
    files: list[Path],
    out: Path,
    *,
    exclude_tags: list[str],
    ef_search: int = DEFAULT_EF_SEARCH,
    max_iter: int = 300,
    dev_weight: float = 1.0,
    progress: bool = False,
    log=print,
) -> dict[str, Any]:
    """Collect, featurise, fit on the non-held-out queries, report held-out metrics, write the artifact."""
    started = time.perf_counter()
    filters = SearchFilters(exclude_tags=exclude_tags, exclude_blocklisted=True)
    queries = [q for path in files for q in load_queries(path)]
    items = collect_candidates(db, embedder, queries, filters, ef_search, progress)
    candidates_s = time.perf_counter() - started
    attach_features(db, embedder.name, items)
    collected_s = time.perf_counter() - started
    train_items = [c for c in items if not is_heldout(c.query_id) and c.labels.any()]
    held = [c for c in items if is_heldout(c.query_id)]
    x = np.concatenate([c.features for c in train_items])
    y = np.concatenate([c.labels for c in train_items])
    log(f"{len(items)} labelled queries ({len(held)} held out); training on {len(train_items)} queries, "
        f"{len(y)} pairs, {int(y.sum())} positives; candidates in {candidates_s:.0f} s, features in {collected_s - candidates_s:.0f} s")
    fit_started = time.perf_counter()
    # Stylus-labelled dev queries may count more than Civitai prompts (whose authors' picks are noisier)
    weights = np.concatenate([np.full(len(c.ids), dev_weight if query_source(c.query_id) == "dev" else 1.0) for c in train_items])
    model = fit_hgb(x, y, max_iter=max_iter, sample_weight=weights)
    fit_s = time.perf_counter() - fit_started
    evaluation = {}
    for source in ("civitai", "dev"):
        part = [c for c in held if query_source(c.query_id) == source]
        if part:
            scores = [model.decision_function(c.features.astype(np.float64)) for c in part]
            evaluation[source] = {"fused": ranking_metrics(part, None), "learned": ranking_metrics(part, scores)}
    artifact = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "feature_version": FEATURE_VERSION,
        "features": list(FEATURES),
        "model": export_hgb(model),
        "training": {
            "files": [p.name for p in files],
            "split": {"salt": SPLIT_SALT, "heldout_one_in": HELDOUT_SHARE},
            "queries": len(train_items), "pairs": int(len(y)), "positives": int(y.sum()), "dev_weight": dev_weight,
            "candidates": f"fused top {DEPTH}, default filter (exclude tags {exclude_tags}, blocklist)",
            "embedding_model": embedder.name,
            "estimator": "sklearn HistGradientBoostingClassifier",
            "params": {k: v for k, v in model.get_params().items() if isinstance(v, (int, float, str, bool, type(None)))},
            "fit_seconds": round(fit_s, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
        },
        "heldout": evaluation,
        "selection": None,
    }
    save_artifact(artifact, out)
    return artifact


def calibrate_selection(ctx, queries_path: Path, *, target_picks: float = 2.2, progress: bool = False, log=print) -> dict[str, Any]:
    """Thresholds for the offline planner on the learned scores, fitted on the non-held-out dev queries.

    Runs the graph's own plan and retrieve nodes (strategy "learned") once per query, then searches
    SelectionSettings for the best mean precision + recall whose mean picks per prompt stays within
    0.5 of `target_picks` (Stylus's composer: 2.2 adapters per COCO prompt).
    """
    from dataclasses import asdict
    from itertools import product

    from langgraph.runtime import Runtime
    from tqdm import tqdm

    from agent import nodes
    from agent.planner import SelectionSettings, select_offline
    from evals.metrics import precision_recall

    queries = [q for q in load_queries(queries_path) if not is_heldout(q.id)]
    with ctx.db.connection() as conn:
        row_ids = external_to_row_ids(conn)
    runtime = Runtime(context=ctx)
    cases = []
    for query in tqdm(queries, desc="calibrate", disable=not progress, leave=False):
        relevant = {row_ids[i] for i in query.labels if i in row_ids}
        if not relevant:
            continue
        state: dict = {"message": query.prompt, "seed": 0, "n_images": 4}
        state.update(nodes.plan(state, runtime))
        state.update(nodes.retrieve(state, runtime))
        # the scores offline selection sees, with and without the whole prompt as a task: the grid reuses them
        cases.append(({whole: nodes.offline_scores(state["candidates"], whole) for whole in (False, True)}, relevant))
    grid = product((0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4), (0.0, 0.3, 0.5, 0.7, 0.85), (1, 2, 3), (2, 3, 4, 6), (False, True))
    best: tuple[float, dict] | None = None
    for min_score, relative, per_task, total, whole in grid:
        settings = SelectionSettings(min_score=min_score, relative=relative, max_per_task=per_task, max_total=total, whole_prompt=whole)
        prs, picks = [], []
        for scored, relevant in cases:
            picked = [i for ids in select_offline(scored[whole], settings).values() for i in ids]
            prs.append(precision_recall(picked, relevant))
            picks.append(len(picked))
        precision, recall, mean_picks = float(np.mean([p for p, _ in prs])), float(np.mean([r for _, r in prs])), float(np.mean(picks))
        if abs(mean_picks - target_picks) > 0.5:
            continue
        objective = precision + recall
        if best is None or objective > best[0]:
            best = (objective, {"settings": asdict(settings), "precision": precision, "recall": recall, "mean_picks": mean_picks})
    if best is None:
        raise ValueError("no threshold setting reached the target number of picks")
    log(f"calibrated on {len(cases)} dev (fit half) queries: {best[1]}")
    return {**best[1], "queries": len(cases), "file": queries_path.name, "target_picks": target_picks}


def bench_rerank(db: Database, embedder, queries_path: Path, *, exclude_tags: list[str], n: int = 100, ef_search: int = DEFAULT_EF_SEARCH) -> dict[str, Any]:
    """Milliseconds to rerank one prompt's fused top 150 (features from the database + the model), p50/p95."""
    import copy

    from evals.metrics import percentile
    from tools.learned_rank import rerank_learned
    from tools.rerank import rerank
    from tools.retrieve import _search

    filters = SearchFilters(exclude_tags=exclude_tags, exclude_blocklisted=True)
    queries = load_queries(queries_path)[:n]
    vectors = embedder.encode([q.prompt for q in queries])
    timings: dict[str, list[float]] = {"learned": [], "rerank (hand-weighted)": []}
    with db.connection() as conn:
        for query, vector in zip(queries, vectors):
            hits = _search(conn, embedder, query.prompt, vector, "fused", DEPTH, filters, ef_search)
            for name, function in (("learned", rerank_learned), ("rerank (hand-weighted)", rerank)):
                copied = copy.deepcopy(hits)
                started = time.perf_counter()
                function(conn, embedder, query.prompt, vector, copied)
                timings[name].append((time.perf_counter() - started) * 1000)
    return {name: {"p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95), "prompts": len(v), "candidates": DEPTH}
            for name, v in timings.items()}
