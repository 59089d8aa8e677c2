"""The reply to a turn: what was planned and picked, what each image was made with (exactly what its PNG
parameters say), what was repaired or dropped and why, and in plain words what could not be honoured."""

from __future__ import annotations

from pathlib import Path

from loracle.agent.state import AgentContext, AgentState
from loracle.tools.compose import DEFAULT_WEIGHT


def _adapter_label(ref: str, names: dict[str, str]) -> str:
    stem = Path(ref).stem if ("/" in ref or "\\" in ref or ref.endswith(".safetensors")) else ref
    name = names.get(stem)
    return f"{name} ({stem})" if name and name != stem else stem


def made_with(state: AgentState, method: str) -> list[str]:
    """One line per distinct recipe among the delivered images: adapters and weights, the composition method,
    adapter guidance, the trigger words appended and the text sampled, each as that image was sampled (a retry
    keeps images of earlier attempts next to redrawn ones)."""
    names = {Path(p.file).stem: p.name for ps in state.picks.values() for p in ps if p.file}
    recipes: dict[tuple, list[int]] = {}
    for i, image in enumerate(state.images):
        recipe = (tuple(sorted(image.mix.items())), tuple(image.triggers), image.adapter_guidance, image.prompt)
        recipes.setdefault(recipe, []).append(i + 1)
    lines = []
    for (mix, triggers, guidance, prompt), numbers in recipes.items():
        guided = f", adapter guidance {guidance:g}" if guidance > 1 else ""
        adapters = ", ".join(f"{_adapter_label(ref, names)} at {w:g}" for ref, w in mix) or "no adapter"
        words = f"; trigger words: {', '.join(triggers)}" if triggers else ""
        which = "Image" if len(numbers) == 1 else "Images"
        lines.append(f'{which} {", ".join(map(str, numbers))}: {adapters}; method {method}{guided}{words}; sampled text "{prompt}".')
    return lines


def unserved_tasks(state: AgentState, ctx: AgentContext | None) -> list[str]:
    """Tasks no adapter serves, said plainly: the base model draws it, or nothing in the catalog fits it."""
    lines = []
    for task in state.plan.tasks:
        if state.picks.get(task.phrase):
            continue
        domain = ctx.domain if ctx is not None else None
        if domain is not None and domain.covers(task.phrase) and not domain.without_subject(task.phrase):
            lines.append(f"- {task.phrase}: drawn by the base model itself (no adapter needed)")
        else:
            lines.append(f"- {task.phrase}: no adapter in the catalog fits it well enough, so nothing was added for it")
    return lines


def write_answer(state: AgentState, ctx: AgentContext | None = None) -> str:
    plan = state.plan
    dropped = set(state.dropped)
    skipped = {i for f in state.skipped for i in f.blamed}
    lines = [f"Planner: {state.planner}. Tasks: " + "; ".join(t.phrase for t in plan.tasks) + "."]
    lines += plan.notes
    if plan.edit is not None:
        what = "the uploaded image" if plan.edit.source == "upload" else "the previous result"
        how = "inpainted the masked region of" if plan.edit.mode == "inpaint" else "image-to-image from"
        lines.append(f"Edit: {how} {what} at strength {plan.edit.strength:g}.")
    for task, picks in state.picks.items():
        for pick in picks:
            status = (" (skipped)" if pick.adapter_id in skipped else " (dropped after inspection)" if pick.adapter_id in dropped
                      else "" if pick.file else " (file not available locally)")
            lines.append(f"- {task}: {pick.name} ({pick.ref}), weight {pick.weight or DEFAULT_WEIGHT:g}{status}")
    unserved = unserved_tasks(state, ctx)
    lines += unserved
    if not any(state.picks.values()) and not unserved and not any(image.mix for image in state.images):
        lines.append("- no adapter fit the prompt well enough; used the base model alone")
    if state.attempts:
        lines.append(f"Retried {len(state.attempts)} time(s): " + "; ".join(
            f.message for a in state.attempts for f in a.findings)[:500])
    lines += [f"Repair: {step}." for step in state.repair.steps]
    if state.skipped:
        lines.append("Skipped: " + "; ".join(f.message for f in state.skipped)[:500])
    unresolved = [f.message for f in state.findings]
    if unresolved:
        lines.append("Still flagged: " + "; ".join(unresolved)[:300])
    method = state.repair.method or (ctx.settings.composition_method if ctx is not None else "merge")
    lines += made_with(state, method)
    lines.append(f"{len(state.images)} image(s), {state.nfe} model evaluations.")
    return "\n".join(lines)
