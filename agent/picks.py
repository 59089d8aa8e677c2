"""The adapters picked per task: the LLM composer's choice when a chat model is configured (the offline
planner's when there is none or it fails), with the user's edits applied on top."""

from __future__ import annotations

from dataclasses import dataclass, replace

from loracle.agent.candidates import WHOLE_PROMPT, offline_picks, pinned_candidates, search_candidates
from loracle.agent.edits import without_term
from loracle.agent.plan import Candidate, Edits, Pick, Plan
from loracle.agent.planner import offline_ranking
from loracle.agent.selector import LLMFailed, SubmitSelection, select_with_llm
from loracle.agent.state import AgentContext
from loracle.db.catalog import get_adapters
from loracle.tools.compose import DEFAULT_WEIGHT
from loracle.tools.relevance import covers, relevance_floor, uncovered_floor


@dataclass
class Choice:
    """What selection decided, and on what: the plan (with edits the LLM read from the conversation) and the
    candidates (with those of tasks the LLM searched for itself)."""

    picks: dict[str, list[Pick]]
    planner: str  # who chose, as the reply and the run record say it
    plan: Plan
    candidates: dict[str, list[Candidate]]
    llm_calls: int = 0


def choose_adapters(ctx: AgentContext, plan: Plan, candidates: dict[str, list[Candidate]], history: list[str]) -> Choice:
    """0-3 adapters per task: the LLM in one round trip, or the offline planner (also when the LLM fails,
    and the planner's name says so); then the user's edits. `history`: the thread's earlier messages."""
    if ctx.llm is None:
        choice = _choose_offline(ctx, plan, candidates, "offline")
    else:
        try:
            choice = _choose_with_llm(ctx, plan, candidates, history)
        except LLMFailed as exc:
            choice = _choose_offline(ctx, plan, candidates, f"offline (the LLM failed: {exc})", llm_calls=1)
    choice.picks = apply_edits(choice.picks, choice.plan.edits, pinned_candidates(ctx, choice.plan.edits.pinned))
    choice.plan = without_excluded_triggers(choice.plan, choice.candidates, choice.picks)
    return choice


def without_excluded_triggers(plan: Plan, candidates: dict[str, list[Candidate]], picks: dict[str, list[Pick]]) -> Plan:
    """The plan's text without the trigger words of adapters the user excluded ("drop the bold look" takes
    "boldface" out too), unless a kept pick shares them."""
    terms = [t.lower() for t in plan.edits.excluded_terms]
    if not terms and not plan.edits.excluded:
        return plan
    kept = {w.lower() for ps in picks.values() for p in ps for w in p.trigger_words}
    words = {w for cs in candidates.values() for c in cs if c.ref in plan.edits.excluded or c.matches_any(terms)
             for w in c.trigger_words if w.lower() not in kept}
    prompt = plan.prompt
    for word in sorted(words):
        prompt = without_term(prompt, word)
    return plan if prompt == plan.prompt else plan.model_copy(update={"prompt": prompt})


def _choose_offline(ctx: AgentContext, plan: Plan, candidates: dict[str, list[Candidate]], planner: str,
                    llm_calls: int = 0) -> Choice:
    settings = offline_ranking(ctx.settings.ranker, ctx.settings.exclude_tags, ctx.db)[1]
    floor = relevance_floor(ctx.family)
    if floor is not None:  # nothing below the catalog's relevance floor serves a task, however it ranks
        settings = replace(settings, min_score=max(settings.min_score, floor))
    picks = without_uncovering(offline_picks(candidates, settings), uncovered_floor(ctx.family), plan.prompt)
    picks = without_rival_candidates(picks, ctx.static_conflicts)
    return Choice(picks, planner, plan, candidates, llm_calls)


def without_uncovering(picks: dict[str, list[Pick]], floor: float | None, prompt: str) -> dict[str, list[Pick]]:
    """Per task, only the picks whose card holds the task's words, unless they clear the higher `floor`: a score
    alone lets "braided ponytail" through to a thin-stroke style (tools/relevance.py)."""
    if floor is None:
        return picks
    return {task: [p for p in items if p.score >= floor or covers(prompt if task == WHOLE_PROMPT else task, p.card_text())]
            for task, items in picks.items()}


def without_rival_candidates(picks: dict[str, list[Pick]], conflicts: list[tuple[str, str, str]]) -> dict[str, list[Pick]]:
    """Per task, of two candidates that undo each other (a known conflict: "thin" and "bold" both set the
    stroke weight) only one kept: sharing the task's weight, they cancel out. The one whose name, tags or
    trigger words hold a word of the task wins, else the better-ranked one (the ranker alone put Boldface
    above Hairline for "thin three")."""
    rivals = {frozenset((a, b)) for a, b, _ in conflicts}
    result: dict[str, list[Pick]] = {}
    for task, items in picks.items():
        words = [w for w in task.lower().split() if len(w) > 2]
        kept: list[Pick] = []
        for pick in sorted(items, key=lambda p: not p.matches_any(words)):  # stable: rank order otherwise
            if not any(frozenset((pick.ref, k.ref)) in rivals for k in kept):
                kept.append(pick)
        result[task] = [p for p in items if p in kept]
    return result


def _choose_with_llm(ctx: AgentContext, plan: Plan, candidates: dict[str, list[Candidate]], history: list[str]) -> Choice:
    result = select_with_llm(ctx.llm, plan.prompt, [t.phrase for t in plan.tasks], candidates,
                             lambda task: search_candidates(ctx, plan.edits, [task]).get(task, []),
                             history=history, edits=plan.edits.model_dump())
    candidates = {**candidates, **result.searched}
    by_id = {c.adapter_id: c for items in candidates.values() for c in items}
    picks = {choice.task: [Pick(**by_id[a.id].model_dump(), reason=a.reason) for a in choice.adapters]
             for choice in result.answer.tasks}
    with ctx.db.connection() as conn:
        cards = get_adapters(conn, result.answer.pin + result.answer.exclude)
    refs = {a["id"]: f"{a['source']}:{a['external_id']}" for a in cards.values()}
    planner = f"llm:{getattr(ctx.llm, 'model_name', type(ctx.llm).__name__)}"
    if result.dropped_ids:
        planner += f" (dropped invented ids {result.dropped_ids})"
    return Choice(picks, planner, with_llm_edits(plan, result.answer, refs), candidates, result.calls)


def with_llm_edits(plan: Plan, answer: SubmitSelection, refs: dict[int, str]) -> Plan:
    """The plan with the edits the LLM read from the conversation (pins, exclusions, reweights by adapter id)."""
    edits = plan.edits.model_copy(deep=True)
    edits.pinned = list(dict.fromkeys(edits.pinned + [refs[i] for i in answer.pin if i in refs]))
    edits.excluded = list(dict.fromkeys(edits.excluded + [refs[i] for i in answer.exclude if i in refs]))
    edits.weight_scale.update({f"id:{k}": v for k, v in answer.reweight.items()})
    edits.keep_seed = edits.keep_seed or answer.keep_seed
    return plan.model_copy(update={"edits": edits, "negative": answer.negative or plan.negative})


def apply_edits(picks: dict[str, list[Pick]], edits: Edits, pinned: list[Candidate]) -> dict[str, list[Pick]]:
    """Excluded adapters out, weights scaled as the user asked, each adapter once; pinned ones in (as task
    "pinned") unless already picked."""
    excluded = set(edits.excluded)
    terms = [t.lower() for t in edits.excluded_terms]
    seen: set[int] = set()
    result: dict[str, list[Pick]] = {}
    for task, items in picks.items():
        kept = []
        for pick in items:
            if pick.ref in excluded or pick.matches_any(terms) or pick.adapter_id in seen:
                continue
            seen.add(pick.adapter_id)
            scale = edits.weight_scale.get(pick.ref, 1.0) * edits.weight_scale.get(f"id:{pick.adapter_id}", 1.0)
            for key, value in edits.weight_scale.items():
                if key.startswith("term:") and pick.matches_any([key[5:]]):
                    scale *= value
            kept.append(pick.model_copy(update={"weight": round((pick.weight or DEFAULT_WEIGHT) * scale, 3)}))
        result[task] = kept
    pinned_picks = [Pick(**c.model_dump(), reason="pinned by the user") for c in pinned if c.adapter_id not in seen]
    if pinned_picks:
        result["pinned"] = pinned_picks
    return result
