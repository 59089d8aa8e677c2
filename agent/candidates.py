"""Candidates per task: what the catalog offers for each task of a plan, and how offline selection scores them.

`find_candidates` is what the graph's retrieve node runs; ranker training (evals/rank_train.py) calls it and
`offline_scores` directly, so its thresholds are fitted on exactly what the offline planner will see.
"""

from __future__ import annotations

from pathlib import Path

from loracle.agent.catalog import search_catalog
from loracle.agent.plan import Candidate, Edits, Pick, Plan
from loracle.agent.planner import SelectionSettings, offline_ranking, select_offline
from loracle.agent.state import AgentContext
from loracle.db.catalog import find_adapters, get_adapters
from loracle.tools.compose import adapter_file
from loracle.tools.retrieve import Hit

WHOLE_PROMPT = "(whole prompt)"


def candidate_from_card(hit: Hit, card: dict, adapter_dirs: list[Path]) -> Candidate:
    return Candidate(
        adapter_id=hit.adapter_id, ref=f"{hit.source}:{hit.external_id}", name=hit.name, tags=hit.tags,
        trigger_words=hit.trigger_words, base_model=hit.base_model, weight=hit.recommended_weight,
        score=round(hit.score, 4), category=card.get("category"),
        description=card.get("refined_description") or (card.get("description") or "")[:300],
        file=adapter_file(card.get("local_path"), card.get("file_name"), adapter_dirs),
    )


def search_candidates(ctx: AgentContext, edits: Edits, texts: list[str]) -> dict[str, list[Candidate]]:
    """Reranked candidates per text, for the engine's base models, without what the user excluded."""
    with ctx.db.connection() as conn:
        excluded = [c["id"] for c in find_adapters(conn, [r.split(":", 1)[-1] for r in edits.excluded]).values()]
    hits = search_catalog(ctx.db, ctx.embedder, ctx.settings, texts, k=ctx.settings.candidates_per_task,
                          base_models=ctx.base_models, strategy=offline_ranking(ctx.settings.ranker, ctx.settings.exclude_tags, ctx.db)[0], exclude_ids=excluded)
    with ctx.db.connection() as conn:
        cards = get_adapters(conn, list({h.adapter_id for items in hits.values() for h in items}))
    terms = [t.lower() for t in edits.excluded_terms]
    return {
        text: [c for c in (candidate_from_card(h, cards[h.adapter_id], ctx.adapter_dirs) for h in items) if not c.matches_any(terms)]
        for text, items in hits.items()
    }


def find_candidates(ctx: AgentContext, plan: Plan) -> dict[str, list[Candidate]]:
    """Candidates for each task of the plan and, under `WHOLE_PROMPT`, for the whole prompt."""
    queries = {t.phrase: adapter_query(ctx, t.phrase) for t in plan.tasks}
    found = search_candidates(ctx, plan.edits, [*queries.values(), plan.prompt])
    candidates = {phrase: found.get(query, []) for phrase, query in queries.items()}
    candidates[WHOLE_PROMPT] = found.get(plan.prompt, [])
    return candidates


def adapter_query(ctx: AgentContext, phrase: str) -> str:
    """What an adapter must serve for a task: on a narrow base model, the task less the subject the base draws
    itself ("thin five" -> "thin"). The subject's words only blur the query: the learned ranker scored the
    thin-stroke adapter 0.10 for "thin five" and 0.53 for "thin four", and "a thin five" got no adapter."""
    domain = ctx.domain
    if domain is None or not domain.covers(phrase):
        return phrase
    return domain.without_subject(phrase) or phrase


def pinned_candidates(ctx: AgentContext, refs: list[str]) -> list[Candidate]:
    """The adapters the user pinned, as candidates (score 1), whatever retrieval found."""
    if not refs:
        return []
    with ctx.db.connection() as conn:
        cards = find_adapters(conn, [r.split(":", 1)[-1] for r in refs])
    return [
        candidate_from_card(Hit(card["id"], 1.0, card["source"], card["external_id"], card["name"], card["base_model"],
                                card["tags"], card["trigger_words"], card["recommended_weight"]), card, ctx.adapter_dirs)
        for card in cards.values()
    ]


def selection_tasks(candidates: dict[str, list[Candidate]], whole_prompt: bool) -> dict[str, list[Candidate]]:
    """The tasks selection chooses for; the whole prompt is one of them for a one-word prompt (no other
    task) or when the thresholds were calibrated with it."""
    per_task = {task: items for task, items in candidates.items() if task != WHOLE_PROMPT}
    if not per_task or whole_prompt:
        per_task = {**per_task, WHOLE_PROMPT: candidates.get(WHOLE_PROMPT, [])}
    return per_task


def offline_scores(candidates: dict[str, list[Candidate]], whole_prompt: bool) -> dict[str, list[tuple[int, float]]]:
    """(adapter id, score) per task, as offline selection sees them."""
    return {task: [(c.adapter_id, c.score) for c in items] for task, items in selection_tasks(candidates, whole_prompt).items()}


def offline_picks(candidates: dict[str, list[Candidate]], settings: SelectionSettings) -> dict[str, list[Pick]]:
    """The offline planner's choice: per task, the candidates whose scores clear the thresholds."""
    chosen = select_offline(offline_scores(candidates, settings.whole_prompt), settings)
    by_id = {c.adapter_id: c for items in selection_tasks(candidates, settings.whole_prompt).values() for c in items}
    return {task: [Pick(**by_id[i].model_dump(), reason=f"score {by_id[i].score:.2f}") for i in ids] for task, ids in chosen.items()}
