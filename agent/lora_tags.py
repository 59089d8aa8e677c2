"""`<lora:name:w>` tags in a prompt, made into what this server can apply.

A tag whose file is in an adapter folder is applied as written. Otherwise the catalog is asked: the adapter
with that file name, model name or id, when its file is here, replaces the tag; failing that the closest
catalog adapter whose file is here and whose relevance clears the floor; failing that the tag is left out.
Each replacement or omission is a plain note in the answer, never an error and never a server path.
"""

from __future__ import annotations

import re
from pathlib import Path

from loracle.agent.catalog import search_catalog
from loracle.agent.plan import Plan
from loracle.agent.state import AgentContext
from loracle.generation.adapters import ADAPTER_SUFFIXES
from loracle.generation.prompt_tags import parse_lora_tags
from loracle.tools.compose import adapter_file
from loracle.tools.relevance import covers, relevance_floor, uncovered_floor

_TAG = re.compile(r"<lora:([^>]*)>", re.IGNORECASE)
_SAFE_NAME = re.compile(r"^[\w .+-]{1,200}$")


def local_file(name: str, adapter_dirs: list[Path]) -> str | None:
    """The stem of the adapter file `name` names in an adapter folder (a bare name only), or None."""
    if not _SAFE_NAME.match(name) or name.startswith("."):
        return None
    names = [name] if Path(name).suffix.lower() in ADAPTER_SUFFIXES else [name + s for s in ADAPTER_SUFFIXES]
    found = next((f for n in names if (f := adapter_file(None, n, adapter_dirs))), None)
    return Path(found).stem if found else None


def _words(name: str) -> str:
    """'baroqueAI_v2' -> 'baroque ai v2': a tag name as search text."""
    return re.sub(r"\s+", " ", re.sub(r"([a-z])([A-Z])", r"\1 \2", re.sub(r"[_\-.]+", " ", name))).strip()


def _catalog_match(ctx: AgentContext, name: str) -> tuple[str, str] | None:
    """(file stem, adapter name) of the catalog adapter this tag names, when its file is here."""
    stem = Path(name).stem
    with ctx.db.connection() as conn:
        rows = conn.execute(
            "SELECT name, file_name, local_path FROM adapters WHERE lower(name) = lower(%s) OR external_id = %s "
            "OR lower(regexp_replace(coalesce(file_name, ''), '\\.[^.]*$', '')) = lower(%s) LIMIT 5",
            (name, name, stem)).fetchall()
    for adapter_name, file_name, local_path in rows:
        found = adapter_file(local_path, file_name, ctx.adapter_dirs)
        if found:
            return Path(found).stem, adapter_name
    return None


def _closest(ctx: AgentContext, name: str) -> tuple[str, str] | None:
    """(file stem, adapter name) of the closest catalog adapter with a file here, above the relevance floor."""
    text = _words(name)
    if not text:
        return None
    hits = search_catalog(ctx.db, ctx.embedder, ctx.settings, [text], k=ctx.settings.candidates_per_task,
                          base_models=ctx.base_models).get(text, [])
    floor, strict = relevance_floor(ctx.family), uncovered_floor(ctx.family)
    with ctx.db.connection() as conn:
        for hit in hits:
            if floor is not None and hit.score < floor:
                break
            row = conn.execute("SELECT file_name, local_path, coalesce(description, '') FROM adapters WHERE id = %s",
                               (hit.adapter_id,)).fetchone()
            if row and strict is not None and hit.score < strict and not covers(
                    text, " ".join([hit.name, *hit.tags, *hit.trigger_words, row[2]])):
                continue  # its card does not hold the tag's words, and its score alone is not enough
            found = adapter_file(row[1], row[0], ctx.adapter_dirs) if row else None
            if found:
                return Path(found).stem, hit.name
    return None


def resolve_tags(ctx: AgentContext, plan: Plan) -> Plan:
    """The plan with every `<lora:...>` tag either applicable here or left out, and a note for each change."""
    try:
        _, tags = parse_lora_tags(plan.prompt)
    except ValueError as exc:  # a tag's weight is not a number: the tag cannot be applied as written
        return plan.model_copy(update={"prompt": _TAG.sub(" ", plan.prompt).strip(), "notes": [*plan.notes, f"{exc}; left it out."]})
    if not tags:
        return plan
    notes = list(plan.notes)
    replacement: dict[str, str | None] = {}
    for name in tags:
        if local_file(name, ctx.adapter_dirs):
            continue
        match = _catalog_match(ctx, name)
        if match:
            replacement[name] = match[0]
            notes.append(f"<lora:{name}> is the catalog's {match[1]}; applied it from its file {match[0]}.")
            continue
        closest = _closest(ctx, name)
        replacement[name] = closest[0] if closest else None
        notes.append(f"<lora:{name}> is not on this server; used the closest available adapter, {closest[1]}, instead."
                     if closest else f"<lora:{name}> is not on this server and no available adapter is close to it; left it out.")

    def rewrite(m: re.Match) -> str:
        name, _, rest = m.group(1).partition(":")
        if name.strip() not in replacement:
            return m.group(0)
        new = replacement[name.strip()]
        return f"<lora:{new}{':' + rest if rest else ''}>" if new else " "

    prompt = re.sub(r"\s{2,}", " ", _TAG.sub(rewrite, plan.prompt)).strip()
    return plan.model_copy(update={"prompt": prompt, "notes": notes})
