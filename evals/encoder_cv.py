"""Cross-validation of a contrastively fine-tuned MiniLM as a first-stage list (#27), on the training split only.

    LORACLE_HOME=... python -m loracle.evals.encoder_cv [--variant query] [--variant both] [--folds 5]

(a database with ../shared/data/catalog/civitai_loras.jsonl imported). Held-out queries are never read.

Per prior fold (the folds `loracle rank cv` uses), a peft LoRA on the attention and feed-forward layers of
MiniLM's last layer (55K values; the 90 MB model is never copied) is trained on the other folds' prompt ->
picked adapter pairs. The five layers below stay frozen and run once per text: tuning all six cost 13-35 s
per batch of 32 prompts on this shared 2-core machine, too slow for six trainings per `loracle rank train`.
Two variants:
- "query": only the query side is tuned; the catalog keeps its stored card vectors (serving would re-embed
  nothing). With the card side fixed, the softmax runs over every catalog card, so each prompt's negatives
  are all adapters it did not pick: the in-batch and hard negatives of MultipleNegativesRankingLoss are a
  subset of them.
- "both": one tuned encoder embeds prompts and card texts (MultipleNegativesRankingLoss: in-batch negatives
  plus one hard negative per prompt, drawn from the top of its unlearned fused list); the catalog's card
  texts are then re-embedded with it (timed).
The fold's prompts are encoded with the tuned encoder and its "tuned" list (the card vectors, 300 deep)
is fused with today's trained first stage (the four unlearned lists, the adapted and neighbours lists
trained without the fold) as an extra list, or in place of the adapted or the card-text list.
Printed per setting: R@10 and R@300 of the fusion (every list 300 deep), R@150 of the reranker's
candidates (every list 150 deep), per label source, as `loracle rank cv` prints them.

"Worth it" was fixed before the first run: wire the encoder into serving only if a setting lifts dev R@150
(the reranker's candidates) by at least 0.5 point over today's trained first stage without lowering
Civitai R@150 by more than 0.2 point, and (variant "both") its training plus re-embedding fits the
10-minute `loracle rank train` budget.

Measured (2026-12-05, 7,169-card catalog, 1,507 training prompts, settings as below: LoRA rank 8 on the last
layer, 2 epochs, lr 1e-3, temperature 0.05; R@10 / R@150 / R@300, dev then Civitai):

| 5 folds, `--variant query` | dev | Civitai |
|---|---|---|
| today's trained first stage | .751 / .973 / .984 | .399 / .520 / .544 |
| + tuned list | .747 / .961 / .979 | .403 / .522 / .546 |
| tuned list for the adapted list | .738 / .961 / .985 | .399 / .516 / .538 |
| tuned list for the card-text list | .749 / .964 / .982 | .419 / .523 / .548 |
| card-text list alone | .547 / .846 / .895 | .175 / .326 / .376 |
| tuned list alone | .634 / .882 / .926 | .324 / .427 / .460 |

Folds 0-1 only (`--folds 2`), where the adapted list alone is .500 / .774 / .835 on dev and .334 / .440 / .474
on Civitai, the query-side tuned list alone .630 / .877 / .946 and .329 / .432 / .463: as one list the
tuned encoder beats the linear query map on dev and matches it on Civitai, but beside the lists of today's
trained first stage it adds nothing (today's .985 dev R@150; + tuned .971, + tuned at half weight .981).

| folds 0-1, `--variant both` | dev | Civitai |
|---|---|---|
| today's trained first stage | .741 / .985 / .995 | .413 / .522 / .536 |
| + tuned list | .741 / .985 / .985 | .426 / .526 / .541 |
| tuned list for the adapted list | .746 / .981 / .992 | .414 / .521 / .542 |
| tuned list for the card-text list | .766 / .980 / .995 | .447 / .527 / .547 |
| card-text list alone | .564 / .847 / .892 | .172 / .324 / .373 |
| tuned list alone | .626 / .916 / .936 | .364 / .473 / .495 |

Tuning both sides makes the best single list here (dev R@150 .916, Civitai .473), and in place of the
card-text list it lifts the first stage's R@10 (dev +2.5, Civitai +3.4 points), but the reranker's candidates
(R@150) do not gain: dev -0.5 point, Civitai +0.5. No setting of either variant met the bar. Time per fold
at load 5-9: query side 80-303 s of training; both sides 326-829 s of training plus 82-250 s re-embedding
the 7,169 card texts (after 429 s running the frozen layers over them once), where `loracle rank train`
would train six times (five folds and the final model) within its 10 minutes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import numpy as np

from loracle.db.search import ListQuery
from loracle.evals.first_stage_cv import BASE, KS, TrainingSplit, _fused, _search_learned, first_stage_recalls, training_split
from loracle.evals.first_stage_train import train_lists
from loracle.evals.rank_train import PRIOR_FOLDS, query_source
from loracle.tools.adapter_texts import full_text
from loracle.tools.learned_lists import LearnedLists
from loracle.tools.memory_search import MemoryIndex
from loracle.tools.retrieve import CARD_KINDS, FUSED_LISTS, FUSION_DEPTH


@dataclass(frozen=True)
class EncoderSettings:
    """How the encoder is tuned; the query side reads prompts up to 128 tokens (the card text's cap)."""

    both_sides: bool = False
    rank: int = 8
    alpha: int = 16
    epochs: int = 2
    batch: int = 32
    learning_rate: float = 1e-3
    temperature: float = 0.05
    dev_weight: float = 2.0  # as the query map weighs the Stylus-labelled prompts
    hard_pool: int = 10  # "both": the hard negative is drawn from the top of the fused list, past the picks
    max_tokens: int = 128
    top_layers: int = 1  # the LoRA's layers, counted from the top: the rest is frozen and run once per text
    seed: int = 0


def _autocast():
    import torch

    from loracle.tools.embedder import _cpu_has_bf16

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=_cpu_has_bf16())


def tuned_model(settings: EncoderSettings):
    """A fresh MiniLM with a LoRA on every attention and feed-forward linear layer of its last `top_layers`
    layers; only the LoRA trains."""
    from peft import LoraConfig, inject_adapter_in_model

    from loracle.tools.embedder import load_minilm

    model = load_minilm()
    bert = model[0].auto_model
    first = len(bert.encoder.layer) - settings.top_layers
    tuned = "|".join(str(i) for i in range(first, len(bert.encoder.layer)))
    # peft directly: transformers' add_adapter asks for a newer peft than the one pinned here
    inject_adapter_in_model(LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0,
                                       target_modules=rf".*encoder\.layer\.({tuned})\..*(query|key|value|dense)"), bert)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = "lora_" in name
    model.max_seq_length = settings.max_tokens
    return model


def lower_states(model, texts: list[str], settings: EncoderSettings, batch: int = 64) -> list:
    """Each text's hidden states (tokens x dims, bfloat16) where the tuned layers begin: the layers below never
    change, so they run once per text for every fold and epoch (a full MiniLM step per batch cost 13-35 s here)."""
    import torch

    bert = model[0].auto_model
    first = len(bert.encoder.layer) - settings.top_layers
    model.max_seq_length = settings.max_tokens
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
    states: list = [None] * len(texts)
    with torch.no_grad(), _autocast():
        for start in range(0, len(order), batch):
            members = order[start : start + batch]
            features = model.tokenize([texts[i] for i in members])
            out = bert(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                       token_type_ids=features.get("token_type_ids"), output_hidden_states=True)
            for row, i in enumerate(members):
                states[i] = out.hidden_states[first][row, : int(features["attention_mask"][row].sum())].to(torch.bfloat16)
    return states


def top_embed(model, states: list, settings: EncoderSettings):
    """Unit vectors from the tuned layers over cached lower states (gradients when the caller allows them)."""
    import torch

    bert = model[0].auto_model
    first = len(bert.encoder.layer) - settings.top_layers
    lengths = torch.tensor([len(s) for s in states])
    hidden = torch.nn.utils.rnn.pad_sequence([s.float() for s in states], batch_first=True)
    mask = (torch.arange(hidden.shape[1])[None] < lengths[:, None]).long()
    extended = bert._create_attention_masks(attention_mask=mask, encoder_attention_mask=None, embedding_output=hidden,
                                            encoder_hidden_states=None, cache=None, position_ids=None)[0]
    with _autocast():
        for layer in bert.encoder.layer[first:]:
            hidden = layer(hidden, attention_mask=extended)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    hidden = hidden.float() * mask[..., None]
    return torch.nn.functional.normalize(hidden.sum(1) / lengths[:, None], dim=-1)  # MiniLM's mean pooling


def encode(model, states: list, settings: EncoderSettings, batch: int = 128) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([top_embed(model, states[i : i + batch], settings).numpy() for i in range(0, len(states), batch)])


def train_encoder(split: TrainingSplit, members: np.ndarray, query_states: list, card_states: list | None,
                  settings: EncoderSettings):
    """The LoRA-tuned MiniLM trained on the prompts `members` (their picks as positions in the index), from the
    prompts' (and, for both sides, the cards') cached lower states."""
    import torch

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = tuned_model(settings)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    cards = split.index.cards
    position = split.index.position
    picks = [[position[a] for a in split.labelled[i][1] if a in position and cards.usable[position[a]]] for i in members]
    members = np.array([i for i, p in zip(members, picks) if p])
    picks = [p for p in picks if p]
    weights = np.array([settings.dev_weight if query_source(split.labelled[i][0].id) == "dev" else 1.0 for i in members])
    full = split.index.kinds.index("full")
    fixed = torch.from_numpy(np.where(cards.present[full, :, None], cards.vectors[full], 0.0)).float()
    usable = torch.from_numpy(cards.usable)
    model.train()
    for _ in range(settings.epochs):
        order = rng.permutation(len(members))
        for start in range(0, len(order), settings.batch):
            batch = order[start : start + settings.batch]
            queries = top_embed(model, [query_states[members[j]] for j in batch], settings)
            if settings.both_sides:
                loss = _both_sides_loss(model, split, members, picks, batch, queries, card_states, settings, rng)
            else:
                loss = _query_side_loss(queries, [picks[j] for j in batch], fixed, usable, settings.temperature)
            batch_weights = torch.from_numpy(weights[batch]).float()
            loss = (loss * batch_weights).sum() / batch_weights.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model


def _query_side_loss(queries, picks: list[list[int]], cards, usable, temperature: float):
    """Per prompt, the mean over its picks of -log softmax of the pick against every card it did not pick."""
    import torch

    logits = (queries @ cards.T / temperature).masked_fill(~usable, float("-inf"))
    picked = torch.zeros_like(logits, dtype=torch.bool)
    for row, own in enumerate(picks):
        picked[row, own] = True
    others = torch.logsumexp(logits.masked_fill(picked, float("-inf")), dim=1, keepdim=True)
    per_pick = logits - torch.logaddexp(others, logits)  # log p of each pick against the non-picks
    return -torch.where(picked, per_pick, 0.0).sum(1) / picked.sum(1)  # where: unusable cards' -inf * 0 is NaN


def _both_sides_loss(model, split: TrainingSplit, members, picks, batch, queries, card_states, settings, rng):
    """MultipleNegativesRankingLoss: one pick per prompt against the batch's other cards and hard negatives."""
    import torch

    position = split.index.position
    positives = [int(rng.choice(picks[j])) for j in batch]
    hard = []
    for j in batch:
        fused = _fused(split.base_lists[members[j]], dict(FUSED_LISTS))
        pool = [position[a] for a in fused if a in position and position[a] not in picks[j]][: settings.hard_pool]
        hard.append(int(rng.choice(pool)) if pool else int(rng.integers(len(card_states))))
    columns = positives + hard
    card_vectors = top_embed(model, [card_states[c] for c in columns], settings)
    logits = queries @ card_vectors.T / settings.temperature
    own = torch.tensor([[c in picks[j] and k != row for k, c in enumerate(columns)] for row, j in enumerate(batch)])
    logits = logits.masked_fill(own, float("-inf"))  # another pick of the same prompt is no negative
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)), reduction="none")


def reembedded_index(index: MemoryIndex, model, card_states: list, settings: EncoderSettings) -> MemoryIndex:
    """The index with every card text's vector from the tuned encoder (the other kinds unchanged)."""
    full = index.kinds.index("full")
    vectors = index.cards.vectors.copy()
    vectors[full] = encode(model, card_states, settings)
    return MemoryIndex(replace(index.cards, vectors=vectors), index.kinds)


def card_texts_of(db, index: MemoryIndex) -> list[str]:
    """Each indexed adapter's card text, in the index's order, as the import embeds it."""
    import psycopg

    with db.connection() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        rows = {r["id"]: r for r in cursor.execute("SELECT id, name, tags, trigger_words, description FROM adapters")}
    return [full_text(rows[int(a)])[0] for a in index.cards.ids]


def _search(db, model_name: str, index: MemoryIndex, split: TrainingSplit, vectors: np.ndarray, ef_search: int):
    queries = [ListQuery(CARD_KINDS, FUSION_DEPTH, vector=v, per_adapter_rows=2) for v in vectors]
    with db.connections(2) as (conn, *spare):
        return index.fetcher(conn, model_name, split.filters, ef_search, spare)(queries)


FUSIONS: dict[str, tuple[tuple[str, ...], float]] = {  # name: the lists it leaves out, the tuned list's weight
    "today's trained": (("tuned",), 0.0),
    "+ tuned": ((), 1.0),
    "+ tuned x0.5": ((), 0.5),
    "tuned for adapted": (("adapted",), 1.0),
    "tuned for full": (("full",), 1.0),
    "tuned alone": (("full", "head", "prompt", "lexical", "adapted", "neighbours"), 1.0),
    "full alone": (("tuned", "head", "prompt", "lexical", "adapted", "neighbours"), 0.0),
    "adapted alone": (("tuned", "full", "head", "prompt", "lexical", "neighbours"), 0.0),
}


def cross_validate(db, embedder, files, variants: list[EncoderSettings], *, exclude_tags: list[str], ef_search: int,
                   folds: int = PRIOR_FOLDS, log=print) -> dict[tuple[str, str, str], dict[str, float]]:
    """Mean recalls per (variant, fusion, label source) over the first `folds` folds' prompts, printed too;
    variant "-" for the fusions without the tuned list."""
    from loracle.tools.memory_search import load_card_vectors

    split = training_split(db, embedder, files, exclude_tags=exclude_tags, ef_search=ef_search)
    with db.connection() as conn:
        cards = load_card_vectors(conn, embedder.name, BASE.kind)
    card_texts = card_texts_of(db, split.index)
    started = time.perf_counter()
    frozen = tuned_model(variants[0])  # its lower layers are every variant's (all tune the same top layers)
    query_states = lower_states(frozen, [q.prompt for q, _ in split.labelled], variants[0])
    card_states = lower_states(frozen, card_texts, variants[0]) if any(v.both_sides for v in variants) else None
    log(f"{len(split.labelled)} training prompts, {len(card_texts)} cards; lower layers run once in {time.perf_counter() - started:.0f} s")
    recalls: dict[tuple[str, str, str], list[list[float]]] = {}
    for fold in range(folds):
        train = np.flatnonzero(split.folds != fold)
        held = np.flatnonzero(split.folds == fold)
        trained = train_lists([split.examples[i] for i in train], cards, BASE)
        lists = LearnedLists(trained.query_map, trained.neighbours, BASE.kind, BASE.neighbours, BASE.fusion_weights())
        learned = _search_learned(db, embedder, lists, split.vectors[held], split.filters, ef_search, split.index)
        for number, settings in enumerate(variants):
            variant = "both" if settings.both_sides else "query"
            started = time.perf_counter()
            model = train_encoder(split, train, query_states, card_states, settings)
            log(f"fold {fold} {variant}: trained on {len(train)} prompts in {time.perf_counter() - started:.0f} s")
            index = split.index
            if settings.both_sides:
                started = time.perf_counter()
                index = reembedded_index(split.index, model, card_states, settings)
                log(f"fold {fold} {variant}: re-embedded {len(card_texts)} card texts in {time.perf_counter() - started:.0f} s")
            vectors = encode(model, [query_states[i] for i in held], settings)
            tuned = _search(db, embedder.name, index, split, vectors, ef_search)
            for i, extra, found in zip(held, learned, tuned):
                every = {**split.base_lists[i], **extra, "tuned": found}
                for name, (left_out, tuned_weight) in FUSIONS.items():
                    if "tuned" in left_out and number:
                        continue  # the same for every variant: counted once
                    kept = {n: items for n, items in every.items() if n not in left_out}
                    weights = {**dict(FUSED_LISTS), **BASE.fusion_weights(), "tuned": tuned_weight}
                    key = ("-" if "tuned" in left_out else variant, name, query_source(split.labelled[i][0].id))
                    recalls.setdefault(key, []).append(first_stage_recalls(kept, weights, split.labelled[i][1]))
    table = {key: dict(zip((f"R@{k}" for k in KS), np.mean(r, axis=0))) for key, r in sorted(recalls.items())}
    for (variant, name, source), row in table.items():
        log(f"{variant:<5} {name:<18} {source:<7}  " + " ".join(f"{metric} {value:.3f}" for metric, value in row.items()))
    return table


def main() -> None:
    from pathlib import Path

    from loracle.agent.settings import get_settings
    from loracle.cli.context import open_database
    from loracle.tools.embedder import get_embedder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", action="append", type=Path)
    parser.add_argument("--variant", action="append", choices=["query", "both"])
    parser.add_argument("--folds", type=int, default=PRIOR_FOLDS)
    parser.add_argument("--epochs", type=int, default=EncoderSettings.epochs)
    args = parser.parse_args()
    files = args.queries or [Path("../shared/data/prompts/civitai_prompts.jsonl"), Path("../shared/data/queries/dev.jsonl")]
    variants = [EncoderSettings(both_sides=v == "both", epochs=args.epochs) for v in args.variant or ["query"]]
    settings = get_settings()
    with open_database(settings) as db:
        cross_validate(db, get_embedder(settings.embedding_model), files, variants, exclude_tags=settings.exclude_tags,
                       ef_search=settings.hnsw_ef_search, folds=args.folds)


if __name__ == "__main__":
    main()
