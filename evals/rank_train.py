"""Training the learned reranker (`loracle rank train`): candidates, features, a model, its artifact.

Data: real prompts with the LoRAs their authors used (../shared/data/prompts/civitai_prompts.jsonl)
and, optionally, the fit half of the Stylus-labelled dev queries (../shared/data/queries/dev.jsonl).
Each file is split by a fixed hash of the query id (`heldout`): those queries are never trained on,
and `loracle eval retrieval --heldout` reports on exactly them. Candidates are what serving reranks:
the fused top 150 with the default filter. Queries none of whose labels is among the candidates
teach nothing about ordering and are skipped.

The model is a LightGBM binary classifier (picked or not), saved in LightGBM's text model format
inside the JSON artifact; no pickle anywhere. Its pick-prior features (tools/pick_prior.py: overall
and among the most similar training queries) are computed out-of-fold over the training queries, so no query's own labels leak into its features;
held-out queries and serving get the prior counted over all training queries.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loracle.db import Database
from loracle.db.search import DEFAULT_EF_SEARCH, SearchFilters
from loracle.db.vectors import best_similarities
from loracle.evals.metrics import ndcg_at, recall_at
from loracle.evals.queries import LabelledQuery, external_to_row_ids, load_queries
from loracle.tools.learned_rank import ARTIFACT_FORMAT, ARTIFACT_VERSION, LightGBMModel, save_artifact
from loracle.tools.pick_prior import DEFAULT_ALPHA, NEIGHBOURS, PickPrior
from loracle.tools.rank_features import DENSE_KINDS, FEATURE_VERSION, FEATURES, PRIOR_COLUMNS, build_features, card_keys, load_cards
from loracle.tools.retrieve import first_stage

SPLIT_SALT = "loracle-rank-v1:"
HELDOUT_SHARE = {"dev": 2, "civitai": 5}  # 1 in 2 dev queries, 1 in 5 Civitai prompts are held out
DEPTH = 150
BATCH = 32  # queries whose lists are fetched in one round trip
PRIOR_SALT = "loracle-prior-v1:"
PRIOR_FOLDS = 5


def query_source(query_id: str) -> str:
    return "civitai" if query_id.startswith("civitai-") else "dev"


def is_heldout(query_id: str) -> bool:
    """The fixed split: held-out queries are never trained on (nor used to calibrate thresholds)."""
    share = HELDOUT_SHARE[query_source(query_id)]
    return _bucket(SPLIT_SALT, query_id, share) == 0


def _bucket(salt: str, query_id: str, buckets: int) -> int:
    return int(hashlib.sha256((salt + query_id).encode()).hexdigest()[:8], 16) % buckets


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
    keys: list[str] = field(default_factory=list)  # the candidates' pick-prior keys
    picked_keys: list[str] = field(default_factory=list)  # the labels' keys, retrieved or not

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
        cards = load_cards(conn, sorted({i for c in items for i in [*c.ids, *c.relevant]}))
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            cosines = best_similarities(conn, model_name, [(c.vector, c.ids) for c in batch], DENSE_KINDS)
            for c, per_kind in zip(batch, cosines):
                c.features = build_features(c.text, c.ids, c.ranks, c.rrf_scores, per_kind, cards, c.lexical_scores)
                c.keys = card_keys(c.ids, cards)
                c.picked_keys = card_keys(sorted(c.relevant & cards.keys()), cards)


def count_prior(items: list[Candidates], alpha: float = DEFAULT_ALPHA) -> PickPrior:
    return PickPrior.count(((query_source(c.query_id), c.keys, c.picked_keys, c.vector) for c in items), alpha)


def prior_fold(query_id: str) -> int:
    return _bucket(PRIOR_SALT, query_id, PRIOR_FOLDS)


def fold_priors(train_items: list[Candidates], alpha: float = DEFAULT_ALPHA) -> list[PickPrior]:
    """Prior number f counts every training query outside fold f: the prior a query of fold f may see."""
    return [count_prior([c for c in train_items if prior_fold(c.query_id) != fold], alpha) for fold in range(PRIOR_FOLDS)]


def attach_prior(train_items: list[Candidates], held: list[Candidates], alpha: float = DEFAULT_ALPHA) -> tuple[PickPrior, list[PickPrior]]:
    """Fill the pick-prior columns: out-of-fold for training queries, over all training queries for the
    held-out ones. Returns the latter (for serving) and the fold priors (for cross-fitting)."""
    priors = fold_priors(train_items, alpha)
    for c in train_items:
        c.features[:, PRIOR_COLUMNS] = priors[prior_fold(c.query_id)].features(c.keys, c.vector)
    full = count_prior(train_items, alpha)
    for c in held:
        c.features[:, PRIOR_COLUMNS] = full.features(c.keys, c.vector)
    return full, priors


# Chosen by 5-fold cross-validation on the training split (R@10 of its dev queries, 5 fold seeds): with the
# neighbour features, 100 rounds .830, 150 .828, 300 .820 (fewer rounds overfit less); 20 neighbours .820,
# 10 .810, 40 .818 (at 300 rounds).
ROUNDS = 100
LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary", "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 40, "reg_lambda": 1.0,
    "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "verbose": -1, "n_jobs": 2,
}


def fit_lightgbm(x: np.ndarray, y: np.ndarray, *, rounds: int = ROUNDS, seed: int = 0, sample_weight: np.ndarray | None = None, **params):
    """A binary LightGBM booster (picked or not); `params` override LIGHTGBM_PARAMS."""
    import lightgbm

    settings = {**LIGHTGBM_PARAMS, **params, "n_estimators": rounds, "random_state": seed}
    return lightgbm.LGBMClassifier(**settings).fit(x.astype(np.float32), y, sample_weight=sample_weight).booster_


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
    rounds: int = ROUNDS,
    dev_weight: float = 2.0,
    prior_alpha: float = DEFAULT_ALPHA,
    progress: bool = False,
    log=print,
) -> tuple[dict[str, Any], list[tuple[LightGBMModel, PickPrior]]]:
    """Collect, featurise, fit on the non-held-out queries, report held-out metrics, write the artifact.
    Returns it and the cross-fitted (model, prior) per prior fold, which `calibrate_selection` needs."""
    started = time.perf_counter()
    filters = SearchFilters(exclude_tags=exclude_tags, exclude_blocklisted=True)
    queries = [q for path in files for q in load_queries(path)]
    items = collect_candidates(db, embedder, queries, filters, ef_search, progress)
    candidates_s = time.perf_counter() - started
    attach_features(db, embedder.name, items)
    collected_s = time.perf_counter() - started
    train_items = [c for c in items if not is_heldout(c.query_id) and c.labels.any()]
    held = [c for c in items if is_heldout(c.query_id)]
    prior, priors = attach_prior(train_items, held, prior_alpha)
    x = np.concatenate([c.features for c in train_items])
    y = np.concatenate([c.labels for c in train_items])
    log(f"{len(items)} labelled queries ({len(held)} held out); training on {len(train_items)} queries, "
        f"{len(y)} pairs, {int(y.sum())} positives; candidates in {candidates_s:.0f} s, features in {collected_s - candidates_s:.0f} s")
    fit_started = time.perf_counter()
    # Stylus-labelled dev queries may count more than Civitai prompts (whose authors' picks are noisier)
    weights = np.concatenate([np.full(len(c.ids), dev_weight if query_source(c.query_id) == "dev" else 1.0) for c in train_items])
    booster = fit_lightgbm(x, y, rounds=rounds, sample_weight=weights)
    fit_s = time.perf_counter() - fit_started
    # one model per prior fold without that fold's queries: their scores are what thresholds are calibrated on
    fold_of = np.concatenate([np.full(len(c.ids), prior_fold(c.query_id)) for c in train_items])
    cross_fitted = [(LightGBMModel(fit_lightgbm(x[fold_of != f], y[fold_of != f], rounds=rounds,
                                                sample_weight=weights[fold_of != f]).model_to_string()), priors[f])
                    for f in range(PRIOR_FOLDS)]
    evaluation = {}
    for source in ("civitai", "dev"):
        part = [c for c in held if query_source(c.query_id) == source]
        if part:
            scores = [booster.predict(c.features, raw_score=True) for c in part]
            evaluation[source] = {"fused": ranking_metrics(part, None), "learned": ranking_metrics(part, scores)}
    artifact = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "feature_version": FEATURE_VERSION,
        "features": list(FEATURES),
        "model": LightGBMModel.to_json(booster),
        "prior": prior.to_json(),
        "training": {
            "files": [p.name for p in files],
            "split": {"salt": SPLIT_SALT, "heldout_one_in": HELDOUT_SHARE},
            "queries": len(train_items), "pairs": int(len(y)), "positives": int(y.sum()), "dev_weight": dev_weight,
            "prior": f"pick prior over the training queries (alpha {prior_alpha}, {NEIGHBOURS} neighbours), {PRIOR_FOLDS} folds out-of-fold",
            "candidates": f"fused top {DEPTH}, default filter (exclude tags {exclude_tags}, blocklist)",
            "embedding_model": embedder.name,
            "estimator": "LightGBM binary",
            "params": {**LIGHTGBM_PARAMS, "rounds": rounds},
            "fit_seconds": round(fit_s, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
        },
        "heldout": evaluation,
        "selection": None,
    }
    save_artifact(artifact, out)
    return artifact, cross_fitted


def calibrate_selection(
    ctx, queries_path: Path, cross_fitted: list[tuple[LightGBMModel, PickPrior]], *, target_picks: float = 2.2,
    progress: bool = False, log=print,
) -> dict[str, Any]:
    """Thresholds for the offline planner on the learned scores, fitted on the non-held-out dev queries.

    Plans each query and finds its candidates as the agent does (strategy "learned"), once per query, scoring each with
    the model and prior of its fold that never saw it (`cross_fitted`, from `train`): the final model
    scores its own training labels higher than it will any new prompt's, so thresholds fitted on its
    scores came out too strict (1.45 picks per held-out prompt instead of 2.2). Then searches
    SelectionSettings for the best mean precision + recall whose mean picks per prompt stays within
    0.5 of `target_picks` (Stylus's composer: 2.2 adapters per COCO prompt).
    """
    from dataclasses import asdict
    from itertools import product

    from tqdm import tqdm

    from loracle.agent.candidates import find_candidates, offline_scores
    from loracle.agent.planner import SelectionSettings, plan_prompt, select_offline
    from loracle.evals.metrics import precision_recall
    from loracle.tools.learned_rank import scoring_with

    queries = [q for q in load_queries(queries_path) if not is_heldout(q.id)]
    with ctx.db.connection() as conn:
        row_ids = external_to_row_ids(conn)
    cases = []
    for query in tqdm(queries, desc="calibrate", disable=not progress, leave=False):
        relevant = {row_ids[i] for i in query.labels if i in row_ids}
        if not relevant:
            continue
        with scoring_with(*cross_fitted[prior_fold(query.id)]):
            candidates = find_candidates(ctx, plan_prompt(query.prompt.strip()))
        # the scores offline selection sees, with and without the whole prompt as a task: the grid reuses them
        cases.append(({whole: offline_scores(candidates, whole) for whole in (False, True)}, relevant))
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

    from loracle.evals.metrics import percentile
    from loracle.tools.learned_rank import rerank_learned
    from loracle.tools.rerank import rerank
    from loracle.tools.retrieve import _search

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
