"""Training the first stage's learned lists (tools/learned_lists.py) from real prompt -> adapter choices.

The query map is W = I + M (dims x dims), trained so that normalise(q W) is nearer the card vectors of
the adapters people picked for q than those of others: a softmax of each pick against negatives, at
temperature `temperature`, where the negatives are every adapter some training prompt picked (in-batch
negatives), `random_negatives` adapters drawn afresh each step, and the `hard_negatives` adapters
nearest the raw query that it did not pick. An L2 penalty on M keeps the map near MiniLM's own space.
Full-batch Adam over every training prompt; catalog vectors are read once from the database.

The neighbours list keeps every training prompt's vector (int8) and picks. Both parts are trained per
fold (without that fold's prompts) for cross-fitting and once on every training prompt for serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from loracle.tools.learned_lists import LearnedLists
from loracle.tools.memory_search import CardVectors
from loracle.tools.pick_prior import SourceCounts


@dataclass(frozen=True)
class MapSettings:
    """How the query map is trained and how its lists fuse, chosen by 5-fold cross-validation on the
    training split only (`loracle rank cv` for the kind, neighbours and weights; the map's own settings
    by the same folds): the card vectors as the adapted list's target, 20 neighbours, the learned lists at
    weight 1; 30 steps over 512 random negatives matched twice as many at half the training time. The
    unlearned card-text ("full") and head lists keep weight 1 in the trained fusion: at half weight the
    ranker's candidates gained on the Civitai prompts (R@150 .531 -> .540) but lost on dev (.968 -> .965),
    and the learned ranker's cross-validated R@10 on dev fell (.794 -> .783)."""

    kind: str = "full+refined"
    penalty: float = 1e-3
    temperature: float = 0.05
    steps: int = 30
    learning_rate: float = 6e-3
    dev_weight: float = 2.0
    random_negatives: int = 512
    hard_negatives: int = 32
    neighbours: int = 20
    adapted_weight: float = 1.0
    neighbours_weight: float = 1.0
    card_weight: float = 1.0
    head_weight: float = 1.0
    seed: int = 0

    def fusion_weights(self) -> dict[str, float]:
        """The weights in the trained fusion of the learned lists and of the unlearned lists they reweigh."""
        return {"adapted": self.adapted_weight, "neighbours": self.neighbours_weight, "full": self.card_weight,
                "head": self.head_weight}


@dataclass(frozen=True)
class Example:
    """One training prompt: its MiniLM vector, what it picked (row ids and catalog keys), its label source."""

    vector: np.ndarray
    picked: tuple[int, ...]
    picked_keys: tuple[str, ...]
    source: str


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def train_query_map(examples: Sequence[Example], cards: CardVectors, settings: MapSettings) -> np.ndarray:
    """W (dims x dims) for `normalise(normalise(q) @ W)`; the identity when there is nothing to learn from."""
    import torch

    dims = cards.vectors.shape[-1]
    pairs = [(j, p) for j, e in enumerate(examples) for p in cards.index(e.picked) if cards.usable[p]]
    if not pairs or settings.steps == 0:
        return np.eye(dims, dtype=np.float32)
    # one thread: these small products spent most of their time waiting between two threads on a busy
    # machine (20x slower measured here)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_map(examples, cards, settings, pairs)
    finally:
        torch.set_num_threads(threads)


def _fit_map(examples: Sequence[Example], cards: CardVectors, settings: MapSettings, pairs: list[tuple[int, int]]) -> np.ndarray:
    import torch

    dims = cards.vectors.shape[-1]
    generator = torch.Generator().manual_seed(settings.seed)
    queries = torch.from_numpy(_unit(np.stack([e.vector for e in examples]).astype(np.float32)))
    vectors, present = torch.from_numpy(cards.vectors), torch.from_numpy(cards.present)
    pool = torch.from_numpy(np.flatnonzero(cards.usable))
    rows = torch.tensor([j for j, _ in pairs])
    positives = torch.tensor([p for _, p in pairs])
    weights = torch.tensor([settings.dev_weight if examples[j].source == "dev" else 1.0 for j, _ in pairs])
    picked_all = torch.unique(positives)

    def best_cosine(q: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, pattern: str) -> torch.Tensor:
        """The best cosine over kinds (the first axis of `v` and `valid`), missing vectors counting -2."""
        return torch.einsum(pattern, q, v).masked_fill(~valid, -2.0).amax(0)

    # hard negatives: the adapters nearest each raw query that it did not pick, and their vectors, fixed
    with torch.no_grad():
        raw = best_cosine(queries, vectors[:, pool], present[:, None, pool], "nd,mkd->mnk")
        in_pool = torch.full((len(cards.ids),), -1, dtype=torch.long)
        in_pool[pool] = torch.arange(len(pool))
        own = in_pool[positives]
        raw[rows[own >= 0], own[own >= 0]] = -3.0
        hard = pool[raw.topk(min(settings.hard_negatives, len(pool) - 1), dim=1).indices]  # (queries, hard)
    hard_vectors, hard_present = vectors[:, hard], present[:, hard]
    positive_vectors, positive_present = vectors[:, positives], present[:, positives]

    delta = torch.zeros(dims, dims, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=settings.learning_rate)
    every_pair = torch.arange(len(pairs))
    for _ in range(settings.steps):
        mapped = queries + queries @ delta
        mapped = mapped / mapped.norm(dim=1, keepdim=True)
        drawn = pool[torch.randperm(len(pool), generator=generator)[: settings.random_negatives]]
        shared = torch.unique(torch.cat([picked_all, drawn]))  # sorted; holds every pick once
        to_shared = best_cosine(mapped, vectors[:, shared], present[:, None, shared], "nd,mkd->mnk")[rows]
        to_shared[every_pair, torch.searchsorted(shared, positives)] = -2.0  # the pick is not its own negative
        to_hard = best_cosine(mapped, hard_vectors, hard_present, "nd,mnkd->mnk")[rows]
        positive = best_cosine(mapped[rows], positive_vectors, positive_present, "pd,mpd->mp")
        logits = torch.cat([to_shared, to_hard, positive[:, None]], 1) / settings.temperature
        log_p = logits[:, -1] - torch.logsumexp(logits, 1)
        loss = -(weights * log_p).sum() / weights.sum() + settings.penalty * (delta ** 2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (np.eye(dims, dtype=np.float32) + delta.detach().numpy()).astype(np.float32)


def neighbours_of(examples: Sequence[Example]) -> SourceCounts:
    counts = SourceCounts()
    for e in examples:
        counts.queries += 1
        if e.picked_keys:
            counts.add(e.picked_keys, e.vector)
    return counts


def train_lists(examples: Sequence[Example], cards: CardVectors, settings: MapSettings) -> LearnedLists:
    """The query map and the neighbours' picks of these training prompts, with how they fuse."""
    return LearnedLists(
        train_query_map(examples, cards, settings), neighbours_of(examples), settings.kind, settings.neighbours,
        settings.fusion_weights(),
        {"settings": asdict(settings), "prompts": len(examples)},
    )
