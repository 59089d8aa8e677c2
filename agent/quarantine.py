"""Bad catalog records hurt no one: a picked adapter whose file is missing, unsafe, outside the adapter folders,
shared with another entry or unreadable is skipped for the turn with a finding that names the adapter, and
quarantined in the catalog, so retrieval leaves it out until its record changes or `loracle catalog check`
finds its file fixed. The caller's request is never blamed for it."""

from __future__ import annotations

from pathlib import Path

from loracle.agent.plan import Pick
from loracle.agent.state import AgentContext
from loracle.db.catalog import get_adapters
from loracle.db.quarantine import quarantine
from loracle.tools.adapter_files import AdapterFile, locate_adapter
from loracle.tools.inspection import Finding


def quarantine_pick(ctx: AgentContext, pick: Pick, reason: str) -> Finding:
    """Quarantine the adapter and say so, naming it by its catalog name and reference."""
    with ctx.db.connection() as conn:
        quarantine(conn, pick.adapter_id, reason)
    return Finding(check="catalog", message=f"skipped {pick.name} ({pick.ref}): {reason}; quarantined until its "
                                            "catalog record is fixed (loracle catalog check lists it)",
                   blamed=[pick.adapter_id], action="none")


def usable_picks(ctx: AgentContext, picks: dict[str, list[Pick]]) -> tuple[dict[str, list[Pick]], list[Finding]]:
    """The picks whose files can be used, each with its file named as the engine loads it, and a finding for
    each one skipped. Of two records on one file, the older (lower id) keeps it."""
    by_id = {p.adapter_id: p for ps in picks.values() for p in ps}
    with ctx.db.connection() as conn:
        cards = get_adapters(conn, sorted(by_id))
    located = {i: locate_adapter(c["local_path"], c["file_name"], ctx.adapter_dirs) for i, c in cards.items()}
    problems = {i: f.problem for i, f in located.items() if f.problem}
    holders: dict[Path, int] = {}
    for adapter_id in sorted(located):
        real = located[adapter_id].real
        if real is None or adapter_id in problems:
            continue
        if real in holders:
            first = by_id[holders[real]]
            problems[adapter_id] = f"it shares its file with {first.name} [{first.ref}]"
        else:
            holders[real] = adapter_id
    findings = [quarantine_pick(ctx, by_id[i], reason) for i, reason in sorted(problems.items())]
    kept = {task: [p.model_copy(update={"file": located.get(p.adapter_id, AdapterFile()).file})
                   for p in ps if p.adapter_id not in problems] for task, ps in picks.items()}
    return kept, findings
