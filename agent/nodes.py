"""The graph's nodes: small functions from state (and the run's context) to a state update.

plan -> retrieve -> select -> compose -> check_mix -> sample -> inspect -> respond, with
check_mix and inspect routing to retry (drop or down-weight what they blamed, new masks) at most
`max_retries` times. Progress goes to LangGraph's custom stream as small dict events.
"""

from __future__ import annotations

import random
import time
from typing import Any

from langgraph.runtime import Runtime
from PIL import Image

from loracle.agent.edits import read_follow_up, refinement_source
from loracle.agent.plan import ImageEdit, Plan
from loracle.agent.planner import SelectionSettings, negative_wishes, offline_ranking, select_offline, split_tasks
from loracle.agent.selector import LLMFailed, select_with_llm
from loracle.agent.state import AgentContext, AgentState
from loracle.db.catalog import find_adapters, get_adapters
from loracle.db.runs import add_image, known_conflicts, record_conflict
from loracle.db.search import SearchFilters
from loracle.generation.edit import check_edit_inputs, load_image
from loracle.generation.guidance import GuidanceSettings, GuideSpec
from loracle.generation.masks import ComposerSettings, Composition, Mix
from loracle.generation.skipping import SkipSettings
from loracle.tools.compose import DEFAULT_WEIGHT, adapter_file, compose_mixes
from loracle.tools.inspection import Finding, MixAdapter, check_kept_region, check_mix, inspect_images
from loracle.tools.retrieve import Hit, retrieve_for_tasks
from loracle.tools.sample import SampleSettings, sample

WHOLE_PROMPT = "(whole prompt)"


def _emit(runtime: Runtime[AgentContext], event: str, **data: Any) -> None:
    runtime.stream_writer({"event": event, **data})


def plan(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """A new plan from the prompt, or the previous plan edited by a follow-up turn."""
    message = state["message"].strip()
    history = list(state.get("history") or [])
    previous = Plan.model_validate(state["plan"]) if state.get("plan") and history else None
    if previous is not None:
        new_plan = read_follow_up(message, previous)
    else:
        tasks = split_tasks(message)
        new_plan = Plan(prompt=message, subject=tasks[0].phrase if tasks else "", tasks=tasks,
                        negative=", ".join(negative_wishes(message)))
    new_plan.edit = _image_edit(state, runtime.context, message, previous is not None)
    if new_plan.edits.keep_seed and state.get("seed") is not None and previous is not None:
        seed = state["seed"]
    else:
        seed = state.get("seed") if previous is None and state.get("seed") is not None else random.randrange(2**31)
    _emit(runtime, "plan", tasks=[t.phrase for t in new_plan.tasks], follow_up=previous is not None,
          edit=new_plan.edit.model_dump() if new_plan.edit else None)
    return {
        "plan": new_plan.model_dump(), "history": history + [message], "seed": seed, "attempt": 0, "dropped": [],
        "downweighted": {}, "attempts": [], "findings": [], "images": [], "nfe": 0, "timings": {},
        # this turn's image inputs now live in the plan; cleared so the next turn does not inherit them
        "input_image": None, "input_mask": None, "strength": None,
    }


def _image_edit(state: AgentState, ctx: AgentContext, message: str, follow_up: bool) -> ImageEdit | None:
    """This turn's input image: an upload (with an optional mask), or, for a refinement follow-up ("make
    it more X"), the previous turn's first image (or the one named) at the default edit strength."""
    settings, strength = ctx.settings, state.get("strength")
    if state.get("input_image"):
        image, mask = load_image(state["input_image"], "input image"), None
        if state.get("input_mask"):
            mask = load_image(state["input_mask"], "input mask")
        default = settings.inpaint_strength if mask is not None else settings.edit_strength
        strength = default if strength is None else strength
        check_edit_inputs(image, mask, strength, settings.mask_feather)
        return ImageEdit(image=str(state["input_image"]), mask=state.get("input_mask") or None, strength=strength)
    previous = state.get("images") or []
    index = refinement_source(message, len(previous)) if follow_up else None
    if index is None:
        return None
    strength = settings.edit_strength if strength is None else strength
    check_edit_inputs(None, None, strength, settings.mask_feather)
    return ImageEdit(image=str(ctx.images_dir / previous[index]["path"]), strength=strength, source="previous",
                     image_id=previous[index].get("id"))


def _card_candidate(hit: Hit, card: dict, adapter_dirs: list) -> dict:
    return {
        "adapter_id": hit.adapter_id, "ref": f"{hit.source}:{hit.external_id}", "name": hit.name,
        "tags": hit.tags, "trigger_words": hit.trigger_words, "base_model": hit.base_model,
        "weight": hit.recommended_weight, "score": round(hit.score, 4), "category": card.get("category"),
        "description": card.get("refined_description") or (card.get("description") or "")[:300],
        "file": adapter_file(card.get("local_path"), card.get("file_name"), adapter_dirs),
    }


def _matches_term(candidate: dict, terms: list[str]) -> bool:
    text = " ".join([candidate["name"], *candidate["tags"], *candidate["trigger_words"]]).lower()
    return any(term in text for term in terms)


def _search(state: AgentState, ctx: AgentContext, texts: list[str]) -> dict[str, list[dict]]:
    plan_ = Plan.model_validate(state["plan"])
    with ctx.db.connections(ctx.settings.search_connections) as (conn, *spare):
        excluded = [c["id"] for c in find_adapters(conn, [r.split(":", 1)[-1] for r in plan_.edits.excluded]).values()]
        filters = SearchFilters(base_models=ctx.base_models, exclude_tags=ctx.settings.exclude_tags,
                                exclude_blocklisted=True, exclude_ids=excluded)
        strategy, _ = offline_ranking(ctx.settings.ranker, ctx.settings.exclude_tags)
        hits = retrieve_for_tasks(conn, ctx.embedder, texts, strategy=strategy, k=ctx.settings.candidates_per_task,
                                  filters=filters, ef_search=ctx.settings.hnsw_ef_search, spare=spare)
        cards = get_adapters(conn, list({h.adapter_id for items in hits.values() for h in items}))
    terms = [t.lower() for t in plan_.edits.excluded_terms]
    return {
        text: [c for c in (_card_candidate(h, cards[h.adapter_id], ctx.adapter_dirs) for h in items) if not _matches_term(c, terms)]
        for text, items in hits.items()
    }


def retrieve(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Candidates per task and for the whole prompt (reranked, filtered for the engine's base model)."""
    started = time.perf_counter()
    plan_ = Plan.model_validate(state["plan"])
    texts = [t.phrase for t in plan_.tasks] + [plan_.prompt]
    found = _search(state, runtime.context, texts)
    candidates = {t.phrase: found.get(t.phrase, []) for t in plan_.tasks}
    candidates[WHOLE_PROMPT] = found.get(plan_.prompt, [])
    _emit(runtime, "candidates", counts={k: len(v) for k, v in candidates.items()})
    return {"candidates": candidates, "timings": {**state.get("timings", {}), "retrieve_s": time.perf_counter() - started}}


def _selection_tasks(candidates: dict[str, list[dict]], whole_prompt: bool) -> dict[str, list[dict]]:
    per_task = {task: items for task, items in candidates.items() if task != WHOLE_PROMPT}
    if not per_task or whole_prompt:  # a one-word prompt (or calibrated so): the whole prompt is a task
        per_task = {**per_task, WHOLE_PROMPT: candidates.get(WHOLE_PROMPT, [])}
    return per_task


def offline_scores(candidates: dict[str, list[dict]], whole_prompt: bool) -> dict[str, list[tuple[int, float]]]:
    """(adapter id, score) per task, as offline selection sees them (calibration reuses them per setting)."""
    return {task: [(c["adapter_id"], c["score"]) for c in items] for task, items in _selection_tasks(candidates, whole_prompt).items()}


def _offline_picks(candidates: dict[str, list[dict]], settings: SelectionSettings) -> dict[str, list[dict]]:
    per_task = _selection_tasks(candidates, settings.whole_prompt)
    scored = {task: [(c["adapter_id"], c["score"]) for c in items] for task, items in per_task.items()}
    chosen = select_offline(scored, settings)
    by_id = {c["adapter_id"]: c for items in per_task.values() for c in items}
    return {task: [dict(by_id[i], reason=f"score {by_id[i]['score']:.2f}") for i in ids] for task, ids in chosen.items()}


def select(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Choose 0-3 adapters per task: the LLM in one round trip, or the offline planner."""
    ctx = runtime.context
    started = time.perf_counter()
    plan_ = Plan.model_validate(state["plan"])
    candidates = dict(state["candidates"])
    planner, calls, update = "offline", 0, {}
    picks: dict[str, list[dict]] | None = None
    if ctx.llm is not None:
        tasks = [t.phrase for t in plan_.tasks]

        def search(task: str) -> list[dict]:
            return _search(state, ctx, [task]).get(task, [])

        try:
            result = select_with_llm(ctx.llm, plan_.prompt, tasks, candidates, search,
                                     history=state.get("history", [])[:-1], edits=plan_.edits.model_dump())
            calls = result.calls
            candidates.update(result.searched)
            by_id = {c["adapter_id"]: c for items in candidates.values() for c in items}
            picks = {
                choice.task: [dict(by_id[a.id], reason=a.reason) for a in choice.adapters]
                for choice in result.answer.tasks
            }
            edits = plan_.edits
            with ctx.db.connection() as conn:
                refs = {a["id"]: f"{a['source']}:{a['external_id']}" for a in get_adapters(conn, result.answer.pin + result.answer.exclude).values()}
            edits.pinned = list(dict.fromkeys(edits.pinned + [refs[i] for i in result.answer.pin if i in refs]))
            edits.excluded = list(dict.fromkeys(edits.excluded + [refs[i] for i in result.answer.exclude if i in refs]))
            edits.weight_scale.update({f"id:{k}": v for k, v in result.answer.reweight.items()})
            edits.keep_seed = edits.keep_seed or result.answer.keep_seed
            plan_.negative = result.answer.negative or plan_.negative
            update["plan"] = plan_.model_dump()
            planner = f"llm:{getattr(ctx.llm, 'model_name', type(ctx.llm).__name__)}"
            if result.dropped_ids:
                planner += f" (dropped invented ids {result.dropped_ids})"
        except LLMFailed as exc:
            planner = f"offline (the LLM failed: {exc})"
            calls = 1
    if picks is None:
        picks = _offline_picks(candidates, offline_ranking(ctx.settings.ranker, ctx.settings.exclude_tags)[1])
    picks = _apply_edits(picks, plan_, ctx)
    _emit(runtime, "picks", planner=planner, picks={t: [p["name"] for p in ps] for t, ps in picks.items()})
    timings = {**state.get("timings", {}), "select_s": time.perf_counter() - started}
    return {**update, "picks": picks, "planner": planner, "candidates": candidates,
            "llm_calls": state.get("llm_calls", 0) + calls, "timings": timings}


def _apply_edits(picks: dict[str, list[dict]], plan_: Plan, ctx: AgentContext) -> dict[str, list[dict]]:
    """Pinned adapters in, excluded ones out, weights scaled as the user asked; each adapter once."""
    edits = plan_.edits
    excluded = set(edits.excluded)
    terms = [t.lower() for t in edits.excluded_terms]
    seen: set[int] = set()
    result: dict[str, list[dict]] = {}
    for task, items in picks.items():
        kept = []
        for pick in items:
            if pick["ref"] in excluded or _matches_term(pick, terms) or pick["adapter_id"] in seen:
                continue
            seen.add(pick["adapter_id"])
            scale = edits.weight_scale.get(pick["ref"], 1.0) * edits.weight_scale.get(f"id:{pick['adapter_id']}", 1.0)
            for key, value in edits.weight_scale.items():
                if key.startswith("term:") and _matches_term(pick, [key[5:]]):
                    scale *= value
            kept.append(dict(pick, weight=round((pick.get("weight") or DEFAULT_WEIGHT) * scale, 3)))
        result[task] = kept
    if edits.pinned:
        with ctx.db.connection() as conn:
            cards = find_adapters(conn, [r.split(":", 1)[-1] for r in edits.pinned])
        pinned = []
        for card in cards.values():
            if card["id"] in seen:
                continue
            hit = Hit(card["id"], 1.0, card["source"], card["external_id"], card["name"], card["base_model"],
                      card["tags"], card["trigger_words"], card["recommended_weight"])
            pinned.append(dict(_card_candidate(hit, card, ctx.adapter_dirs), reason="pinned by the user"))
        if pinned:
            result["pinned"] = pinned
    return result


def compose(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """One mix per image from binary masks over each task's picks (seeded; new masks on each attempt)."""
    ctx = runtime.context
    dropped = set(state.get("dropped", []))
    picks = {t: [p for p in ps if p["adapter_id"] not in dropped] for t, ps in state["picks"].items()}
    scale = {p["ref"]: state.get("downweighted", {}).get(str(p["adapter_id"]), 1.0) for ps in picks.values() for p in ps}
    settings = ComposerSettings(scale=ctx.settings.composer_scale, max_active=ctx.settings.composer_max_active,
                                allow_all_off=False, append_triggers=ctx.settings.append_trigger_words)
    n_images = state.get("n_images") or ctx.settings.n_images
    composition = compose_mixes(picks, n_images, settings, seed=state["seed"] + state.get("attempt", 0), weight_scale=scale)
    by_file = {p["file"]: p["adapter_id"] for ps in picks.values() for p in ps if p.get("file")}
    mixes = [m.as_dict() for m in composition.mixes]
    mix_adapters = [sorted(by_file[f] for f in mix) for mix in mixes]
    _emit(runtime, "mixes", distinct=len({tuple(sorted(m.items())) for m in mixes}), images=len(mixes))
    return {"mixes": mixes, "mix_adapters": mix_adapters, "triggers": [list(m.triggers) for m in composition.mixes]}


def _mix_details(state: AgentState) -> dict[int, dict]:
    return {p["adapter_id"]: p for ps in state["picks"].values() for p in ps}


def check_mix_node(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Inspect each distinct mix before sampling; findings name the adapters to drop or down-weight."""
    ctx = runtime.context
    details = _mix_details(state)
    ids = sorted({i for mix in state["mix_adapters"] for i in mix})
    with ctx.db.connection() as conn:
        conflicts = known_conflicts(conn, ids)
    ref_to_id = {p["ref"]: i for i, p in details.items()}
    conflicts += [(ref_to_id[a], ref_to_id[b], reason) for a, b, reason in ctx.static_conflicts if a in ref_to_id and b in ref_to_id]
    findings: list[Finding] = []
    for mix, adapter_ids in {tuple(sorted(m.items())): a for m, a in zip(state["mixes"], state["mix_adapters"])}.items():
        weights = dict(mix)
        adapters = [
            MixAdapter(i, details[i]["name"], weights.get(details[i]["file"], 0.0), details[i].get("base_model"),
                       tuple(details[i].get("tags") or ()), details[i].get("category"))
            for i in adapter_ids
        ]
        for finding in check_mix(adapters, ctx.family, conflicts=conflicts):
            if finding.as_dict() not in [f.as_dict() for f in findings]:
                findings.append(finding)
    if findings:
        _emit(runtime, "inspection", stage="mix", findings=[f.message for f in findings])
    return {"findings": [f.as_dict() for f in findings]}


def sample_settings(ctx: AgentContext, engine) -> SampleSettings:
    """The sampler the settings ask for; guidance uses the weaker guide model when the engine has one."""
    settings = ctx.settings
    scale = settings.guidance_scale if settings.guidance_scale is not None else ctx.guidance_scale
    guide = GuideSpec(kind="model", model="guide") if "guide" in engine.guide_models else GuideSpec()
    return SampleSettings(
        steps=settings.steps, scheduler=settings.scheduler,
        guidance=GuidanceSettings(kind=settings.guidance, scale=scale, guide=guide),
        skipping=SkipSettings(threshold=settings.skip_threshold, max_skip=settings.max_skip),
    )


def sample_node(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Generate the images (one pipeline call per distinct mix) and record them."""
    ctx = runtime.context
    started = time.perf_counter()
    engine = ctx.engine_factory()
    plan_ = Plan.model_validate(state["plan"])
    settings = sample_settings(ctx, engine)
    composition = Composition([Mix.from_dict(m, tuple(t)) for m, t in zip(state["mixes"], state["triggers"])])
    seeds = [state["seed"] * 16 + i for i in range(len(state["mixes"]))]  # the same seeds on every attempt

    def progress(p) -> None:
        _emit(runtime, "progress", step=p.step, steps=p.steps)

    edit = plan_.edit
    image = load_image(edit.image, "input image") if edit else None
    mask = load_image(edit.mask, "input mask") if edit and edit.mask else None
    result, stored = sample(engine, plan_.prompt, composition, seeds, settings, ctx.images_dir,
                            negative_prompt=plan_.negative, on_progress=progress, cancel=ctx.cancel,
                            image=image, mask=mask, strength=edit.strength if edit else 0.8,
                            mask_feather=ctx.settings.mask_feather)
    images = []
    with ctx.db.connection() as conn:
        for image, adapters in zip(stored, state["mix_adapters"]):
            record = {"attempt": state.get("attempt", 0), "path": image.path, "sha256": image.sha256, "seed": image.seed,
                      "mix": image.mix, "nfe": image.nfe, "parameters": image.parameters}
            image_id = add_image(conn, state["run_id"], record, tenant=ctx.tenant)
            images.append({**record, "id": str(image_id), "adapters": adapters, "prompt": image.prompt})
    _emit(runtime, "images", paths=[i["path"] for i in images], nfe=sum(result.nfe))
    timings = {**state.get("timings", {}), "sample_s": state.get("timings", {}).get("sample_s", 0.0) + time.perf_counter() - started}
    return {"images": images, "nfe": state.get("nfe", 0) + sum(result.nfe), "timings": timings}


def inspect_node(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Check the images (and prompt fit, with a judge); blame the adapters of the failing ones."""
    ctx = runtime.context
    images = []
    for record in state["images"]:
        with Image.open(ctx.images_dir / record["path"]) as im:
            images.append(im.convert("RGB"))
    edit = Plan.model_validate(state["plan"]).edit
    findings = inspect_images(images, [r["adapters"] for r in state["images"]], [r["prompt"] for r in state["images"]],
                              ctx.judge, check_duplicates=edit is None)
    if edit is not None and edit.mask:
        findings += check_kept_region(images, load_image(edit.image, "input image"), load_image(edit.mask, "input mask"),
                                      ctx.settings.inpaint_keep_error, ctx.settings.mask_feather)
    if findings:
        _emit(runtime, "inspection", stage="images", findings=[f.message for f in findings])
    return {"findings": [f.as_dict() for f in findings]}


def should_retry(state: AgentState, runtime: Runtime[AgentContext]) -> bool:
    blamed = any(f["blamed"] and f["action"] != "none" for f in state.get("findings", []))
    return blamed and state.get("attempt", 0) < runtime.context.settings.max_retries


def after_check(state: AgentState, runtime: Runtime[AgentContext]) -> str:
    return "retry" if should_retry(state, runtime) else "sample"


def after_inspect(state: AgentState, runtime: Runtime[AgentContext]) -> str:
    return "retry" if should_retry(state, runtime) else "respond"


def retry(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """Record the failed attempt, drop or down-weight what was blamed, remember conflicting pairs."""
    ctx = runtime.context
    dropped = list(state.get("dropped", []))
    downweighted = dict(state.get("downweighted", {}))
    with ctx.db.connection() as conn:
        for finding in state["findings"]:
            for adapter_id in finding["blamed"]:
                if finding["action"] == "drop" and adapter_id not in dropped:
                    dropped.append(adapter_id)
                elif finding["action"] == "downweight":
                    downweighted[str(adapter_id)] = downweighted.get(str(adapter_id), 1.0) * 0.6
                for mix in state["mix_adapters"]:
                    if adapter_id in mix and finding["check"] in ("exclusive", "images", "known_conflict"):
                        for other in mix:
                            if other != adapter_id:
                                record_conflict(conn, adapter_id, other, finding["check"])
    attempt = {"attempt": state.get("attempt", 0), "mixes": state["mixes"], "findings": state["findings"],
               "images": [i["path"] for i in state.get("images", [])]}
    _emit(runtime, "retry", attempt=attempt["attempt"] + 1, dropped=dropped)
    return {"attempts": state.get("attempts", []) + [attempt], "attempt": state.get("attempt", 0) + 1,
            "dropped": dropped, "downweighted": downweighted, "images": []}


def respond(state: AgentState, runtime: Runtime[AgentContext]) -> dict:
    """A short report of what was planned, picked and made."""
    plan_ = Plan.model_validate(state["plan"])
    dropped = set(state.get("dropped", []))
    lines = [f"Planner: {state.get('planner', 'offline')}. Tasks: " + "; ".join(t.phrase for t in plan_.tasks) + "."]
    if plan_.edit is not None:
        what = "the uploaded image" if plan_.edit.source == "upload" else "the previous result"
        how = "inpainted the masked region of" if plan_.edit.mode == "inpaint" else "image-to-image from"
        lines.append(f"Edit: {how} {what} at strength {plan_.edit.strength:g}.")
    for task, picks in state.get("picks", {}).items():
        for pick in picks:
            status = " (dropped after inspection)" if pick["adapter_id"] in dropped else ("" if pick.get("file") else " (file not available locally)")
            lines.append(f"- {task}: {pick['name']} [{pick['ref']}] weight {pick.get('weight') or DEFAULT_WEIGHT:g}{status}")
    if not any(state.get("picks", {}).values()):
        lines.append("- no adapter fit the prompt well enough; used the base model alone")
    if state.get("attempts"):
        lines.append(f"Retried {len(state['attempts'])} time(s): " + "; ".join(
            f["message"] for a in state["attempts"] for f in a["findings"])[:500])
    unresolved = [f["message"] for f in state.get("findings", [])]
    if unresolved:
        lines.append("Still flagged: " + "; ".join(unresolved)[:300])
    lines.append(f"{len(state.get('images', []))} image(s), {state.get('nfe', 0)} model evaluations.")
    answer = "\n".join(lines)
    _emit(runtime, "done", answer=answer)
    return {"answer": answer}
