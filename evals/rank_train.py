"""Training the learned reranker (`loracle rank train`): candidates, features, a model, its artifact.

Data: real prompts with the LoRAs their authors used (../shared/data/prompts/civitai_prompts.jsonl)
and, optionally, the fit half of the Stylus-labelled dev queries (../shared/data/queries/dev.jsonl).
Each file is split by a fixed hash of the query id (`heldout`): those queries are never trained on,
and `loracle eval retrieval --heldout` reports on exactly them.

Both stages are trained here. First the learned first-stage lists (evals/first_stage_train.py), once
per prior fold without that fold's prompts and once on every training prompt. Then the reranker, on
what serving reranks: the trained first stage's fused top `depth`, each training prompt's candidates
found by the lists of its fold (which never saw it), so the ranker learns how much to trust those lists
on prompts they were not fitted to. It is trained twice: with the default filter (ranker.json) and
without the character/celebrity filter (ranker-unfiltered.json). Queries none of whose labels is among
the candidates teach nothing about ordering and are skipped.

The model is a LightGBM binary classifier (picked or not), saved in LightGBM's text model format
inside the JSON artifact; no pickle anywhere. Its pick-prior features (tools/pick_prior.py: overall
and among the most similar training queries) are computed out-of-fold over the training queries, so no query's own labels leak into its features;
held-out queries and serving get the prior counted over all training queries.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from loracle.db import Database
from loracle.db.search import DEFAULT_EF_SEARCH, SearchFilters
from loracle.db.vectors import best_similarities
from loracle.evals.first_stage_train import Example, MapSettings, train_lists
from loracle.evals.metrics import ndcg_at, recall_at
from loracle.evals.queries import LabelledQuery, external_to_row_ids, load_queries
from loracle.tools.learned_lists import LearnedLists, load_learned_lists
from loracle.tools.learned_rank import ARTIFACT_FORMAT, ARTIFACT_VERSION, LightGBMModel, save_artifact, unfiltered_path
from loracle.tools.memory_search import MemoryIndex, load_card_vectors
from loracle.tools.pick_prior import DEFAULT_ALPHA, NEIGHBOURS, PickPrior
from loracle.tools.rank_features import DENSE_KINDS, FEATURE_VERSION, FEATURES, PRIOR_COLUMNS, build_features, card_keys, load_cards
from loracle.tools.retrieve import first_stage, lists_from

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
    adapted_scores: list[float] = field(default_factory=list)
    features: np.ndarray | None = field(default=None, repr=False)
    keys: list[str] = field(default_factory=list)  # the candidates' pick-prior keys
    picked_keys: list[str] = field(default_factory=list)  # the labels' keys, retrieved or not

    @property
    def labels(self) -> np.ndarray:
        return np.array([i in self.relevant for i in self.ids], dtype=np.int8)


def labelled_rows(db: Database, queries: list[LabelledQuery]) -> list[tuple[LabelledQuery, set[int]]]:
    """The queries with at least one label in the catalog, and those labels as row ids."""
    with db.connection() as conn:
        row_ids = external_to_row_ids(conn)
    labelled = [(q, {row_ids[i] for i in q.labels if i in row_ids}) for q in queries]
    return [(q, rel) for q, rel in labelled if rel]


def collect_candidates(
    db: Database, embedder, queries: list[LabelledQuery], filters: SearchFilters, ef_search: int = DEFAULT_EF_SEARCH,
    progress: bool = False, *, lists: Callable[[str], LearnedLists] | None = None, depth: int = DEPTH,
    vectors: dict[str, np.ndarray] | None = None, index: MemoryIndex | None = None,
) -> list[Candidates]:
    """The trained first stage's fused top `depth` per labelled query, with ranks, RRF scores and labels as
    row ids; `lists(query id)` gives the learned lists that find a query's candidates (by default the
    trained artifact's); `vectors` the queries' vectors where already embedded; `index` answers the
    dense lists from memory (exact search) instead of the database's HNSW indexes."""
    from tqdm import tqdm

    labelled = labelled_rows(db, queries)
    missing = [q.prompt for q, _ in labelled if vectors is None or q.id not in vectors]
    encoded = iter(embedder.encode(missing) if missing else [])
    vector_of = {q.id: vectors[q.id] if vectors is not None and q.id in vectors else next(encoded) for q, _ in labelled}
    lists = lists or (lambda _: load_learned_lists())
    groups: dict[int, list[tuple[LabelledQuery, set[int]]]] = {}
    for query, relevant in labelled:  # the prompts one set of lists searches for, fetched together
        groups.setdefault(id(lists(query.id)), []).append((query, relevant))
    batches = [group[i : i + BATCH] for group in groups.values() for i in range(0, len(group), BATCH)]
    out = []
    with db.connections(2) as (conn, *spare):  # the lists of a batch spread over two connections, as serving does
        fetch = index.fetcher(conn, embedder.name, filters, ef_search, spare) if index is not None else None
        for batch in tqdm(batches, desc="candidates", disable=not progress, leave=False):
            batch_vectors = np.stack([vector_of[q.id] for q, _ in batch])
            found = first_stage(conn, embedder, [q.prompt for q, _ in batch], batch_vectors, "learned", depth, filters,
                                ef_search, spare=spare, learned=lists(batch[0][0].id), depth=depth, fetch=fetch, keep=depth)
            for (query, relevant), vector, hits in zip(batch, batch_vectors, found):
                hits = hits[:depth]
                out.append(Candidates(query.id, query.prompt, vector, [h.adapter_id for h in hits],
                                      [h.evidence["ranks"] for h in hits], [h.score for h in hits], relevant,
                                      [h.evidence.get("lexical_score", 0.0) for h in hits],
                                      [h.evidence.get("adapted_score", 0.0) for h in hits]))
    order = {q.id: i for i, (q, _) in enumerate(labelled)}
    return sorted(out, key=lambda c: order[c.query_id])


def attach_features(db: Database, model_name: str, items: list[Candidates], index: MemoryIndex | None = None) -> None:
    """Features for every query's candidates, computed as the reranker computes them when serving
    (cosines in the database per query, or the same cosines from `index`; cards loaded once for all)."""
    with db.connection() as conn:
        cards = load_cards(conn, sorted({i for c in items for i in [*c.ids, *c.relevant]}))
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            requests = [(c.vector, c.ids) for c in batch]
            cosines = (index.similarities(requests, DENSE_KINDS) if index is not None
                       else best_similarities(conn, model_name, requests, DENSE_KINDS))
            for c, per_kind in zip(batch, cosines):
                c.features = build_features(c.text, c.ids, c.ranks, c.rrf_scores, per_kind, cards, c.lexical_scores,
                                            adapted_scores=c.adapted_scores)
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


# Chosen by 5-fold cross-validation on the training split over the trained first stage's candidates (R@10
# of every training query scored by the fold model that never saw it, mean over label sources), among
# 100-400 rounds, dev weights 1-4 and re-scoring 150 or 300 candidates: 300 deep put more picks among
# the candidates but ranked fewer of them in the top 10.
ROUNDS = 300
DEV_WEIGHT = 4.0
LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary", "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 40, "reg_lambda": 1.0,
    "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "verbose": -1,
    "n_jobs": 1,  # on a shared 2-core machine two threads took 3-4x longer than one (threads waiting on each other)
}


def fit_lightgbm(x: np.ndarray, y: np.ndarray, *, rounds: int = ROUNDS, seed: int = 0, sample_weight: np.ndarray | None = None, **params):
    """A binary LightGBM booster (picked or not); `params` override LIGHTGBM_PARAMS."""
    import lightgbm

    settings = {**LIGHTGBM_PARAMS, **params, "n_estimators": rounds, "random_state": seed}
    return lightgbm.LGBMClassifier(**settings).fit(x.astype(np.float32), y, sample_weight=sample_weight).booster_


def ranking_metrics(items: list[Candidates], scores: list[np.ndarray] | None) -> dict[str, float]:
    """Recall@10/50, nDCG@10 of the candidates ordered by `scores` (None = fused order), and the recall of
    all candidates (R@depth)."""
    r10, r50, nd, r_all = [], [], [], []
    for i, c in enumerate(items):
        order = np.arange(len(c.ids)) if scores is None else np.argsort(-scores[i], kind="stable")
        ranked = [c.ids[j] for j in order]
        r10.append(recall_at(ranked, c.relevant, 10))
        r50.append(recall_at(ranked, c.relevant, 50))
        nd.append(ndcg_at(ranked, c.relevant, 10))
        r_all.append(recall_at(ranked, c.relevant, len(ranked)))
    depth = max((len(c.ids) for c in items), default=0)
    return {"queries": len(items), "R@10": float(np.mean(r10)), "R@50": float(np.mean(r50)), "nDCG@10": float(np.mean(nd)),
            f"R@{depth}": float(np.mean(r_all))}


class CrossFit(NamedTuple):
    """A model, pick prior and learned lists that never saw one prior fold's queries, and which ranker
    variant they stand in for: `scoring_with(*cross_fit)` scores that fold's queries as new prompts."""

    model: LightGBMModel
    prior: PickPrior
    lists: LearnedLists
    filtered: bool


@dataclass
class TrainedRanker:
    path: Path
    artifact: dict[str, Any]
    cross_fitted: list[CrossFit]


def train_first_stage(
    db: Database, embedder, labelled: list[tuple[LabelledQuery, set[int]]], vectors: dict[str, np.ndarray],
    settings: MapSettings = MapSettings(), progress: bool = False, log=print,
) -> tuple[LearnedLists, list[LearnedLists]]:
    """The learned lists over every training query (for serving) and per prior fold without that fold (for
    cross-fitting the ranker's candidates and the planner's thresholds)."""
    from tqdm import tqdm

    started = time.perf_counter()
    with db.connection() as conn:
        cards = load_card_vectors(conn, embedder.name, settings.kind)
        keys = dict(conn.execute("SELECT id, source || ':' || external_id FROM adapters").fetchall())
    examples = {q.id: Example(vectors[q.id], tuple(sorted(rel)), tuple(keys[i] for i in sorted(rel)), query_source(q.id))
                for q, rel in labelled if not is_heldout(q.id)}
    subsets = [[e for qid, e in examples.items() if prior_fold(qid) != f] for f in range(PRIOR_FOLDS)] + [list(examples.values())]
    *folds, final = [train_lists(subset, cards, settings) for subset in tqdm(subsets, desc="first stage", disable=not progress, leave=False)]
    final.meta["fit_seconds"] = round(time.perf_counter() - started, 1)
    log(f"first stage: query map and neighbours from {len(examples)} training queries, {PRIOR_FOLDS} folds + final, "
        f"in {final.meta['fit_seconds']:.0f} s")
    return final, folds


def train(
    db: Database,
    embedder,
    files: list[Path],
    out: Path,
    *,
    exclude_tags: list[str],
    ef_search: int = DEFAULT_EF_SEARCH,
    rounds: int = ROUNDS,
    dev_weight: float = DEV_WEIGHT,
    prior_alpha: float = DEFAULT_ALPHA,
    depth: int = DEPTH,
    unfiltered: bool = True,
    map_settings: MapSettings = MapSettings(),
    progress: bool = False,
    log=print,
) -> list[TrainedRanker]:
    """Train the first stage, then the ranker on its candidates with the default filter (`out`) and, when
    `unfiltered` and the filter excludes tags, without it (`unfiltered_path(out)`); report held-out
    metrics; write the artifacts into `out`'s folder. Returns each ranker with its cross-fitted folds,
    which `calibrate_selection` needs."""
    started = time.perf_counter()
    queries = [q for path in files for q in load_queries(path)]
    labelled = labelled_rows(db, queries)
    vectors = dict(zip([q.id for q, _ in labelled], embedder.encode([q.prompt for q, _ in labelled])))
    lists, fold_lists = train_first_stage(db, embedder, labelled, vectors, map_settings, progress, log)
    lists.meta.update({"embedding_model": embedder.name, "files": [p.name for p in files],
                       "split": {"salt": SPLIT_SALT, "heldout_one_in": HELDOUT_SHARE}})
    lists.save(out.parent)  # the rankers record the map's hash; the held-out metrics follow below

    def lists_of(query_id: str) -> LearnedLists:
        return lists if is_heldout(query_id) else fold_lists[prior_fold(query_id)]

    variants = [(out, exclude_tags)] + ([(unfiltered_path(out), [])] if unfiltered and exclude_tags else [])
    with db.connection() as conn:
        index = MemoryIndex.load(conn, embedder.name)  # both variants' dense lists and cosines, from memory
    trained = []
    for path, tags in variants:
        trained.append(_train_ranker(db, embedder, queries, vectors, lists_of, path, files, index, exclude_tags=tags,
                                     ef_search=ef_search, rounds=rounds, dev_weight=dev_weight, prior_alpha=prior_alpha,
                                     depth=depth, filtered=path == out, first_stage=lists.meta["map_sha256"],
                                     fold_lists=fold_lists, progress=progress, log=log))
    lists.meta["heldout"] = {("filtered" if r.path == out else "unfiltered"): {s: m["first_stage"] for s, m in r.artifact["heldout"].items()}
                             for r in trained}
    lists.meta["total_seconds"] = round(time.perf_counter() - started, 1)
    lists.save(out.parent)
    return trained


def _train_ranker(
    db: Database, embedder, queries: list[LabelledQuery], vectors: dict[str, np.ndarray],
    lists_of: Callable[[str], LearnedLists], out: Path, files: list[Path], index: MemoryIndex, *, exclude_tags: list[str], ef_search: int,
    rounds: int, dev_weight: float, prior_alpha: float, depth: int, filtered: bool, first_stage: str,
    fold_lists: list[LearnedLists], progress: bool, log,
) -> TrainedRanker:
    started = time.perf_counter()
    filters = SearchFilters(exclude_tags=exclude_tags, exclude_blocklisted=True)
    items = collect_candidates(db, embedder, queries, filters, ef_search, progress, lists=lists_of, depth=depth, vectors=vectors,
                               index=index)
    candidates_s = time.perf_counter() - started
    attach_features(db, embedder.name, items, index)
    collected_s = time.perf_counter() - started
    train_items = [c for c in items if not is_heldout(c.query_id) and c.labels.any()]
    missed = [c for c in items if not is_heldout(c.query_id) and not c.labels.any()]  # scored in cross-validation only
    held = [c for c in items if is_heldout(c.query_id)]
    prior, priors = attach_prior(train_items, held + missed, prior_alpha)  # neither is counted in the prior
    x = np.concatenate([c.features for c in train_items])
    y = np.concatenate([c.labels for c in train_items])
    log(f"{out.name}: {len(items)} labelled queries ({len(held)} held out); training on {len(train_items)} queries, "
        f"{len(y)} pairs, {int(y.sum())} positives; candidates in {candidates_s:.0f} s, features in {collected_s - candidates_s:.0f} s")
    fit_started = time.perf_counter()
    # Stylus-labelled dev queries may count more than Civitai prompts (whose authors' picks are noisier)
    weights = np.concatenate([np.full(len(c.ids), dev_weight if query_source(c.query_id) == "dev" else 1.0) for c in train_items])
    booster = fit_lightgbm(x, y, rounds=rounds, sample_weight=weights)
    fit_s = time.perf_counter() - fit_started
    # one model per prior fold without that fold's queries: their scores are what thresholds are calibrated on
    fold_of = np.concatenate([np.full(len(c.ids), prior_fold(c.query_id)) for c in train_items])
    cross_fitted = [CrossFit(LightGBMModel(fit_lightgbm(x[fold_of != f], y[fold_of != f], rounds=rounds,
                                                        sample_weight=weights[fold_of != f]).model_to_string()),
                             priors[f], fold_lists[f], filtered)
                    for f in range(PRIOR_FOLDS)]
    evaluation, validation = {}, {}
    for source in ("civitai", "dev"):
        part = [c for c in held if query_source(c.query_id) == source]
        if part:
            scores = [booster.predict(c.features, raw_score=True) for c in part]
            evaluation[source] = {"first_stage": ranking_metrics(part, None), "learned": ranking_metrics(part, scores)}
        # every training query scored by the fold models that never saw it: how settings such as the depth are chosen
        part = [c for c in train_items + missed if query_source(c.query_id) == source]
        if part:
            scores = [cross_fitted[prior_fold(c.query_id)].model.raw(c.features) for c in part]
            validation[source] = {"first_stage": ranking_metrics(part, None), "learned": ranking_metrics(part, scores)}
    filter_text = f"exclude tags {exclude_tags}, blocklist" if exclude_tags else "blocklist only"
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
            "candidates": f"trained first stage's fused top {depth} ({filter_text}); training queries found by their fold's lists",
            "depth": depth,
            "first_stage": first_stage,
            "exclude_tags": exclude_tags,
            "embedding_model": embedder.name,
            "estimator": "LightGBM binary",
            "params": {**LIGHTGBM_PARAMS, "rounds": rounds},
            "fit_seconds": round(fit_s, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
        },
        "cross_validation": validation,
        "heldout": evaluation,
        "selection": None,
    }
    save_artifact(artifact, out)
    return TrainedRanker(out, artifact, cross_fitted)


def calibrate_selection(
    ctx, queries_path: Path, cross_fitted: list[CrossFit], *, target_picks: float = 2.2,
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
        index = MemoryIndex.load(conn, ctx.embedder.name)
    cases = []
    for query in tqdm(queries, desc="calibrate", disable=not progress, leave=False):
        relevant = {row_ids[i] for i in query.labels if i in row_ids}
        if not relevant:
            continue
        with scoring_with(*cross_fitted[prior_fold(query.id)]), lists_from(index):  # dense lists from memory, as in training
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
    """Milliseconds to rerank one prompt's candidates (features from the database + the model), p50/p95:
    the learned ranker its trained first stage's top `depth`, the hand-weighted one the fused top 150."""
    from loracle.evals.metrics import percentile
    from loracle.tools.learned_rank import ranker_for, rerank_learned
    from loracle.tools.rerank import rerank
    from loracle.tools.retrieve import RERANK_DEPTH

    filters = SearchFilters(exclude_tags=exclude_tags, exclude_blocklisted=True)
    ranker = ranker_for(filters)
    queries = load_queries(queries_path)[:n]
    vectors = embedder.encode([q.prompt for q in queries])
    # (first stage, how deep its lists are read as serving reads them, candidates re-scored, the reranker)
    runs = {"learned": ("trained", ranker.depth, ranker.depth, lambda *args: rerank_learned(*args, ranker=ranker)),
            "rerank (hand-weighted)": ("fused", None, RERANK_DEPTH, rerank)}
    timings: dict[str, list[float]] = {name: [] for name in runs}
    with db.connection() as conn:
        for query, vector in zip(queries, vectors):
            for name, (strategy, list_depth, depth, function) in runs.items():
                [hits] = first_stage(conn, embedder, [query.prompt], vector[None], strategy, depth, filters, ef_search,
                                     depth=list_depth)
                hits = hits[:depth]
                started = time.perf_counter()
                function(conn, embedder, query.prompt, vector, hits)
                timings[name].append((time.perf_counter() - started) * 1000)
    return {name: {"p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95), "prompts": len(v), "candidates": runs[name][2]}
            for name, v in timings.items()}
