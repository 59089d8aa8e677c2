"""Cross-validation of the learned first stage's settings on the training split only
(`loracle rank cv --queries civitai_prompts.jsonl --queries dev.jsonl`).

Held-out queries (evals/rank_train.is_heldout) are never read. The training queries are split by the
prior folds; for each setting and fold, the learned lists are trained without the fold and searched
for its queries exactly as serving searches them (tools/retrieve.learned_queries, db.search), then
fused with the four unlearned lists (fetched once, with the default filter, 300 deep). Prints R@10,
R@150 and R@300 per label source for every setting, the number of settings tried, and the winner:
the best mean over sources of R@150 (the candidates the reranker gets), R@10 breaking near-ties.
R@10 and R@300 are the trained strategy's (every list read 300 deep); R@150 fuses the lists read 150 deep,
as serving reads them for the learned ranker (rank_train.DEPTH): cutting the lists moves what reaches
the top 150. This objective is the first stage's; the learned ranker's cross-validated R@10 (`loracle rank
train`) has the last word: half-weight card-text and head lists won here (mean R@150 .750 -> .753: Civitai
+.009, dev -.003) but lowered that R@10 (dev .794 -> .783, Civitai .493 -> .492), so they stay at 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from loracle.evals.first_stage_train import Example, MapSettings, train_lists
from loracle.evals.metrics import recall_at
from loracle.evals.queries import LabelledQuery, load_queries
from loracle.evals.rank_train import BATCH, DEPTH, PRIOR_FOLDS, is_heldout, labelled_rows, prior_fold, query_source
from loracle.tools.learned_lists import LearnedLists
from loracle.tools.memory_search import MemoryIndex, load_card_vectors
from loracle.tools.retrieve import FUSED_LISTS, FUSION_DEPTH, SearchFilters, first_stage, learned_queries, rrf

KS = (10, DEPTH, FUSION_DEPTH)
BASE = MapSettings()
# The settings tried: the adapted list alone per kind of card vector, the neighbours list alone per count,
# both together at several fusion weights (weight 0 leaves a list out), and the unlearned card-text and head
# lists at full or half weight beside them.
GRID: tuple[MapSettings, ...] = (
    *(replace(BASE, kind=kind, neighbours_weight=0.0) for kind in ("head", "full+refined", "prompt")),
    *(replace(BASE, neighbours=n, adapted_weight=0.0) for n in (20, 50, 100)),
    *(replace(BASE, adapted_weight=a, neighbours_weight=n) for a, n in ((1.0, 1.0), (2.0, 1.0), (1.0, 2.0), (1.0, 0.5), (2.0, 2.0))),
    *(replace(BASE, card_weight=c, head_weight=h) for c, h in ((0.5, 0.5), (0.5, 1.0), (1.0, 0.5))),
)
MAP_FIELDS = ("kind", "penalty", "temperature", "steps", "learning_rate", "dev_weight", "random_negatives", "hard_negatives", "seed")


@dataclass
class TrainingSplit:
    """The training split's labelled queries with what every fold's training reads: their MiniLM vectors,
    the four unlearned lists (300 deep, default filter), their examples and prior folds, the dense index."""

    labelled: list[tuple[LabelledQuery, set[int]]]
    vectors: np.ndarray
    base_lists: list[dict[str, list[tuple[int, float]]]]
    examples: list[Example]
    folds: np.ndarray
    filters: SearchFilters
    index: MemoryIndex


def training_split(db, embedder, files: list[Path], *, exclude_tags: list[str], ef_search: int) -> TrainingSplit:
    """Everything a fold's training and search need, read once; held-out queries are never read."""
    filters = SearchFilters(exclude_tags=exclude_tags, exclude_blocklisted=True)
    labelled = [(q, rel) for q, rel in labelled_rows(db, [q for f in files for q in load_queries(f)]) if not is_heldout(q.id)]
    vectors = embedder.encode([q.prompt for q, _ in labelled])
    texts = [q.prompt for q, _ in labelled]
    with db.connections(2) as (conn, *spare):
        index = MemoryIndex.load(conn, embedder.name)  # dense lists from memory, as `loracle rank train` reads them
        fetch = index.fetcher(conn, embedder.name, filters, ef_search, spare)
        base = [hits for start in tqdm(range(0, len(texts), BATCH), desc="unlearned lists", leave=False)
                for hits in first_stage(conn, embedder, texts[start : start + BATCH], vectors[start : start + BATCH], "fused",
                                        FUSION_DEPTH, filters, ef_search, spare=spare, fetch=fetch)]
        keys = dict(conn.execute("SELECT id, source || ':' || external_id FROM adapters").fetchall())
    examples = [Example(v, tuple(sorted(rel)), tuple(keys[i] for i in sorted(rel)), query_source(q.id)) for (q, rel), v in zip(labelled, vectors)]
    folds = np.array([prior_fold(q.id) for q, _ in labelled])
    return TrainingSplit(labelled, vectors, [_lists_of(hits) for hits in base], examples, folds, filters, index)


def cross_validate(db, embedder, files: list[Path], grid: tuple[MapSettings, ...] = GRID, *, exclude_tags: list[str],
                   ef_search: int, log=print) -> list[dict]:
    split = training_split(db, embedder, files, exclude_tags=exclude_tags, ef_search=ef_search)
    labelled, vectors, base_lists, examples, folds = split.labelled, split.vectors, split.base_lists, split.examples, split.folds
    filters, index = split.filters, split.index
    with db.connection() as conn:
        cards = {kind: load_card_vectors(conn, embedder.name, kind) for kind in dict.fromkeys(s.kind for s in grid)}
    maps: dict[tuple, list[LearnedLists]] = {}
    rows = []
    for settings in grid:
        started = time.perf_counter()
        map_key = tuple(getattr(settings, name) for name in MAP_FIELDS)
        if map_key not in maps:
            maps[map_key] = [train_lists([e for e, f in zip(examples, folds) if f != fold], cards[settings.kind], settings)
                             for fold in range(PRIOR_FOLDS)]
        recalls: dict[str, list[list[float]]] = {"dev": [], "civitai": []}
        for fold, trained in enumerate(maps[map_key]):
            lists = LearnedLists(trained.query_map, trained.neighbours, settings.kind, settings.neighbours,
                                 settings.fusion_weights())
            members = np.flatnonzero(folds == fold)
            learned = _search_learned(db, embedder, lists, vectors[members], filters, ef_search, index)
            weights = {**dict(FUSED_LISTS), **lists.weights}
            for i, extra in zip(members, learned):
                recalls[query_source(labelled[i][0].id)].append(
                    first_stage_recalls({**base_lists[i], **extra}, weights, labelled[i][1]))
        row = {"settings": settings, "seconds": time.perf_counter() - started,
               **{source: dict(zip((f"R@{k}" for k in KS), np.mean(r, axis=0))) for source, r in recalls.items() if r}}
        rows.append(row)
        log(format_row(row))
    return rows


def _fused(lists: dict[str, list[tuple[int, float]]], weights: dict[str, float]) -> list[int]:
    return [adapter_id for adapter_id, _, _ in rrf(lists, weights)]


def first_stage_recalls(lists: dict[str, list[tuple[int, float]]], weights: dict[str, float], relevant: set[int]) -> list[float]:
    """R@10, R@150, R@300 (KS) of one query's fused lists: R@10 and R@300 of the trained strategy, every list read
    FUSION_DEPTH deep; R@150 of the learned ranker's candidates, each list read only as deep as the ranker
    re-scores (DEPTH), as serving reads them."""
    served = _fused(lists, weights)
    reranked = _fused({name: items[:DEPTH] for name, items in lists.items()}, weights)
    return [recall_at(served, relevant, 10), recall_at(reranked, relevant, DEPTH), recall_at(served, relevant, FUSION_DEPTH)]


def _lists_of(hits: list) -> dict[str, list[tuple[int, float]]]:
    """The fused lists back from the hits' ranks (every item of every list is among the fused hits)."""
    lists: dict[str, list[tuple[int, int]]] = {name: [] for name, _ in FUSED_LISTS}
    for hit in hits:
        for name, rank in hit.evidence["ranks"].items():
            lists[name].append((rank, hit.adapter_id))
    return {name: [(adapter_id, 0.0) for _, adapter_id in sorted(items)] for name, items in lists.items()}


def _search_learned(db, embedder, lists: LearnedLists, vectors: np.ndarray, filters: SearchFilters, ef_search: int,
                    index: MemoryIndex) -> list[dict]:
    wanted = [learned_queries(lists, v, FUSION_DEPTH, refined=True) for v in vectors]
    with db.connections(2) as (conn, *spare):
        fetched = iter(index.fetcher(conn, embedder.name, filters, ef_search, spare)([q for w in wanted for q in w.values()]))
    return [{name: next(fetched) for name in w} for w in wanted]


def objective(row: dict) -> tuple[float, float]:
    sources = [s for s in ("dev", "civitai") if s in row]
    return (round(float(np.mean([row[s]["R@150"] for s in sources])), 3), float(np.mean([row[s]["R@10"] for s in sources])))


def format_row(row: dict) -> str:
    s = row["settings"]
    name = (f"{s.kind if s.adapted_weight else '-':<13} adapted x{s.adapted_weight:<4} neighbours "
            f"{s.neighbours if s.neighbours_weight else '-':>3} x{s.neighbours_weight:<4} full x{s.card_weight:<4} head x{s.head_weight:<4}")
    cells = "".join(f"  {source} " + " ".join(f"{row[source][f'R@{k}']:.3f}" for k in KS) for source in ("dev", "civitai") if source in row)
    return f"{name}{cells}  ({row['seconds']:.0f} s)"
