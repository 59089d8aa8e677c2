"""The reply to a turn: what was planned, picked and made, what was retried and what is still flagged."""

from __future__ import annotations

from loracle.agent.state import AgentState
from loracle.tools.compose import DEFAULT_WEIGHT


def write_answer(state: AgentState) -> str:
    plan = state.plan
    dropped = set(state.dropped)
    skipped = {i for f in state.skipped for i in f.blamed}
    lines = [f"Planner: {state.planner}. Tasks: " + "; ".join(t.phrase for t in plan.tasks) + "."]
    if plan.edit is not None:
        what = "the uploaded image" if plan.edit.source == "upload" else "the previous result"
        how = "inpainted the masked region of" if plan.edit.mode == "inpaint" else "image-to-image from"
        lines.append(f"Edit: {how} {what} at strength {plan.edit.strength:g}.")
    for task, picks in state.picks.items():
        for pick in picks:
            status = (" (skipped)" if pick.adapter_id in skipped else " (dropped after inspection)" if pick.adapter_id in dropped
                      else "" if pick.file else " (file not available locally)")
            lines.append(f"- {task}: {pick.name} [{pick.ref}] weight {pick.weight or DEFAULT_WEIGHT:g}{status}")
    if not any(state.picks.values()):
        lines.append("- no adapter fit the prompt well enough; used the base model alone")
    if state.attempts:
        lines.append(f"Retried {len(state.attempts)} time(s): " + "; ".join(
            f.message for a in state.attempts for f in a.findings)[:500])
    if state.skipped:
        lines.append("Skipped: " + "; ".join(f.message for f in state.skipped)[:500])
    unresolved = [f.message for f in state.findings]
    if unresolved:
        lines.append("Still flagged: " + "; ".join(unresolved)[:300])
    lines.append(f"{len(state.images)} image(s), {state.nfe} model evaluations.")
    return "\n".join(lines)
