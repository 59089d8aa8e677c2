"""The graph's nodes: each takes the typed state (and the run's context), asks a tool or an agent helper for
one thing, and returns a state update.

plan -> retrieve -> select -> compose -> check_mix -> sample -> inspect -> respond, with
check_mix and inspect routing to retry (strengthen a missing style, redraw a wrong subject, drop or down-weight
what they blamed) at most `max_retries` times. Progress goes to LangGraph's custom stream as small dict events.
"""

from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from loracle.agent.answer import write_answer
from loracle.agent.candidates import find_candidates
from loracle.agent.checks import apply_findings, fill_slots, image_findings, kept_count, kept_slots, mix_findings, remember_conflicts
from loracle.agent.edits import merge_edits, read_follow_up, turn_seed
from loracle.agent.image_input import edit_images, turn_image_edit
from loracle.agent.image_records import record_images
from loracle.agent.lora_tags import resolve_tags
from loracle.agent.picks import choose_adapters
from loracle.agent.plan import Plan
from loracle.agent.planner import plan_prompt, strip_prompt_syntax
from loracle.agent.quarantine import quarantine_pick, usable_picks
from loracle.agent.sampler_settings import composer_settings, image_seeds, sample_settings
from loracle.agent.state import AgentContext, AgentState, Attempt, Repair
from loracle.generation.adapters import AdapterError
from loracle.generation.masks import Composition, Mix
from loracle.tools.compose import compose_mixes
from loracle.tools.inspection import Finding
from loracle.tools.sample import sample as sample_images


def _emit(runtime: Runtime[AgentContext], event: str, **data: Any) -> None:
    runtime.stream_writer({"event": event, **data})


def _add_time(timings: dict[str, float], key: str, started: float) -> dict[str, float]:
    return {**timings, key: timings.get(key, 0.0) + time.perf_counter() - started}


def plan(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """A new plan from the prompt, or the previous plan edited by a follow-up turn."""
    ctx = runtime.context
    message = state.message.strip()
    follow_up = state.plan is not None and bool(state.history)
    new_plan = read_follow_up(message, state.plan) if follow_up else plan_prompt(message)
    new_plan.edit = turn_image_edit(state, ctx.settings, ctx.images, follow_up)
    new_plan.notes = domain_notes(ctx, new_plan)
    if state.edits is not None:
        new_plan.edits = merge_edits(new_plan.edits, state.edits)
    _emit(runtime, "plan", tasks=[t.phrase for t in new_plan.tasks], follow_up=follow_up,
          edit=new_plan.edit.model_dump() if new_plan.edit else None)
    # A seed the turn asked for is used as given (reusing an image's seed); otherwise the plan decides.
    seed = state.requested_seed if state.requested_seed is not None else turn_seed(state.seed, new_plan, follow_up)
    return {
        "plan": new_plan, "history": [*state.history, message], "seed": seed, "requested_seed": None,
        "attempt": 0, "dropped": [], "downweighted": {}, "repair": Repair(), "attempts": [], "kept": [], "findings": [],
        "skipped": [], "images": [], "nfe": 0, "timings": {}, "sampler_replica": None,
        # this turn's image inputs now live in the plan; cleared so the next turn does not inherit them
        "input_image": None, "input_mask": None, "strength": None, "edits": None,
    }


def domain_notes(ctx: AgentContext, plan: Plan) -> list[str]:
    """A plain note when the base model cannot draw what the prompt asks for (the digits world: no digit named)."""
    domain = ctx.domain
    if domain is None or domain.covers(strip_prompt_syntax(plan.prompt)):
        return []
    return [f"The base model draws {domain.name} only and the prompt names none, so the images show {domain.name} "
            "of its own choosing; the rest of the prompt could not be drawn."]


def retrieve(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Candidates per task and for the whole prompt (reranked, filtered for the engine's base model)."""
    started = time.perf_counter()
    plan = resolve_tags(runtime.context, state.plan)
    candidates = find_candidates(runtime.context, plan)
    _emit(runtime, "candidates", counts={k: len(v) for k, v in candidates.items()})
    return {"plan": plan, "candidates": candidates, "timings": _add_time(state.timings, "retrieve_s", started)}


def select(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Choose 0-3 adapters per task: the LLM in one round trip, or the offline planner."""
    started = time.perf_counter()
    choice = choose_adapters(runtime.context, state.plan, state.candidates, state.history[:-1])
    _emit(runtime, "picks", planner=choice.planner, picks={t: [p.name for p in ps] for t, ps in choice.picks.items()},
          adapters={t: [{"name": p.name, "ref": p.ref, "weight": p.weight, "reason": p.reason} for p in ps]
                    for t, ps in choice.picks.items()})
    return {"plan": choice.plan, "picks": choice.picks, "planner": choice.planner, "candidates": choice.candidates,
            "llm_calls": state.llm_calls + choice.llm_calls, "timings": _add_time(state.timings, "select_s", started)}


def compose(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """One mix per image from binary masks over each task's picks (seeded; new masks on each attempt). Picks whose
    files cannot be used are skipped and quarantined first (agent/quarantine.py)."""
    ctx = runtime.context
    picks = {t: [p for p in ps if p.adapter_id not in state.dropped] for t, ps in state.picks.items()}
    picks, skipped = usable_picks(ctx, picks)
    if skipped:
        _emit(runtime, "inspection", stage="catalog", findings=[f.message for f in skipped])
    scale = {p.ref: state.downweighted.get(str(p.adapter_id), 1.0) * state.repair.boost.get(str(p.adapter_id), 1.0)
             for ps in picks.values() for p in ps}
    n_images = (state.n_images or ctx.settings.n_images) - kept_count(state.kept)
    composition = compose_mixes(picks, n_images, composer_settings(ctx.settings),
                                seed=state.seed + state.attempt, weight_scale=scale)
    by_file = {p.file: p.adapter_id for ps in picks.values() for p in ps if p.file}
    mixes = [m.as_dict() for m in composition.mixes]
    _emit(runtime, "mixes", distinct=len({tuple(sorted(m.items())) for m in mixes}), images=len(mixes))
    return {"mixes": mixes, "mix_adapters": [sorted(by_file[f] for f in mix) for mix in mixes],
            "triggers": [list(m.triggers) for m in composition.mixes], "skipped": merge_findings(state.skipped, skipped),
            "dropped": [*state.dropped, *(i for f in skipped for i in f.blamed)]}


def merge_findings(old: list[Finding], new: list[Finding]) -> list[Finding]:
    return old + [f for f in new if f not in old]


def check_mix(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Inspect each distinct mix before sampling; findings name the adapters to drop or down-weight."""
    boosted = {int(a) for a, factor in state.repair.boost.items() if factor > 1}
    findings = mix_findings(runtime.context, state.picks, state.mixes, state.mix_adapters, state.plan.edits.pinned, boosted)
    if findings:
        _emit(runtime, "inspection", stage="mix", findings=[f.message for f in findings])
    kept = [f"{f.message}." for f in findings if f.action == "none" and f"{f.message}." not in state.plan.notes]
    plan = state.plan.model_copy(update={"notes": [*state.plan.notes, *kept]}) if kept else state.plan
    return {"findings": findings, "plan": plan}


def sample(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Generate the images (one pipeline call per distinct mix) and record them. An adapter the engine cannot
    load is skipped and quarantined, and the images are made without it."""
    ctx, edit = runtime.context, state.plan.edit
    started = time.perf_counter()
    engine = ctx.engine_factory()
    mixes, triggers, skipped = state.mixes, state.triggers, []
    picks = {p.file: p for ps in state.picks.values() for p in ps if p.file}
    image, mask = edit_images(edit, ctx.images)
    negative = ", ".join(n for n in (ctx.sampling.negative_prompt, state.plan.negative) if n)
    while True:
        composition = Composition([Mix.from_dict(m, tuple(t)) for m, t in zip(mixes, triggers)])
        try:
            result, stored = sample_images(
                engine, state.plan.prompt, composition, image_seeds(state.seed, len(mixes), state.attempt, kept_count(state.kept)),
                sample_settings(ctx, engine, state.repair), ctx.images, negative_prompt=negative, cancel=ctx.cancel,
                on_progress=lambda p: _emit(runtime, "progress", step=p.step, steps=p.steps),
                image=image, mask=mask, strength=edit.strength if edit else 0.8, mask_feather=ctx.settings.mask_feather,
                output_size=ctx.sampling.output_size, owner=ctx.owner,
            )
            break
        except AdapterError as exc:
            bad = picks.pop(exc.ref, None) if exc.ref else None
            if bad is None:  # not a catalog pick (a <lora:> tag in the prompt): the request's own problem
                raise
            skipped.append(quarantine_pick(ctx, bad, f"the engine could not load it ({exc})"))
            _emit(runtime, "inspection", stage="catalog", findings=[skipped[-1].message])
            mixes = [{f: w for f, w in m.items() if f != exc.ref} for m in mixes]
            triggers = [[t for t in ts if t not in bad.trigger_words] for ts in triggers]
    mix_adapters = [sorted(picks[f].adapter_id for f in m) for m in mixes] if skipped else state.mix_adapters
    images = record_images(ctx, state.run_id, state.attempt, stored, mix_adapters, triggers, state.repair.adapter_guidance)
    _emit(runtime, "images", paths=[i.path for i in images], nfe=sum(result.nfe))
    timings = _add_time(state.timings, "sample_s", started)
    if "sampler_retries" in result.timings:  # on Ray: a sampler replica died and another one finished the request
        timings["sampler_retries"] = timings.get("sampler_retries", 0.0) + result.timings["sampler_retries"]
    update = {"images": fill_slots(state.kept, images), "nfe": state.nfe + sum(result.nfe), "timings": timings,
              "sampler_replica": result.served_by}
    if skipped:
        update.update(mixes=mixes, triggers=triggers, mix_adapters=mix_adapters,
                      skipped=merge_findings(state.skipped, skipped),
                      dropped=[*state.dropped, *(i for f in skipped for i in f.blamed)])
    return update


def inspect(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Check the images (and prompt fit, with a judge); blame the adapters of the failing ones."""
    findings = image_findings(runtime.context, state.images, state.plan.edit, state.picks)
    if findings:
        _emit(runtime, "inspection", stage="images", findings=[f.message for f in findings])
    return {"findings": findings}


def should_retry(state: AgentState, runtime: Runtime[AgentContext]) -> bool:
    actionable = any(f.action in ("resample", "suspect") or (f.blamed and f.action != "none") for f in state.findings)
    return actionable and state.attempt < runtime.context.settings.max_retries


def after_check(state: AgentState, runtime: Runtime[AgentContext]) -> str:
    return "retry" if should_retry(state, runtime) else "sample"


def after_inspect(state: AgentState, runtime: Runtime[AgentContext]) -> str:
    return "retry" if should_retry(state, runtime) else "respond"


def retry(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Record the failed attempt; keep the images that passed, strengthen what the judge did not see, drop or
    down-weight what was blamed, remember conflicting pairs. Only the images that failed are drawn again."""
    names = {p.adapter_id: p.name for ps in state.picks.values() for p in ps}
    dropped, downweighted, repair = apply_findings(state.findings, state.dropped, state.downweighted, state.repair, names)
    remember_conflicts(runtime.context, state.findings)
    attempt = Attempt(attempt=state.attempt, mixes=state.mixes, findings=state.findings, images=[i.path for i in state.images])
    _emit(runtime, "retry", attempt=attempt.attempt + 1, dropped=dropped)
    return {"attempts": [*state.attempts, attempt], "attempt": state.attempt + 1, "dropped": dropped,
            "downweighted": downweighted, "repair": repair, "images": [],
            "kept": kept_slots(state.images, state.findings) if state.images else state.kept}


def respond(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """A short report of what was planned, picked and made."""
    answer = write_answer(state, runtime.context)
    _emit(runtime, "done", answer=answer)
    return {"answer": answer}
