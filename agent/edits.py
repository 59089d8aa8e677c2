"""Reading a follow-up turn offline: what to keep, drop, strengthen or add to the previous plan.

"drop the anime look", "no text", "less blur" exclude; "more painterly" adds a task and strengthens
matching adapters; "keep the seed", "same picture but ..." keep the seed; anything else ("warmer
light", "at night", "add a red scarf") adds tasks from its words. The LLM path does the same through
the SubmitSelection tool's edit fields. `refinement_source` says whether a follow-up refines a previous
result (image-to-image from it) rather than asking for a new picture.
"""

from __future__ import annotations

import random
import re

from loracle.agent.options import MAX_SEED
from loracle.agent.plan import Edits, Plan, PlanTask
from loracle.agent.planner import split_tasks

_KEEP_SEED = re.compile(r"\b(?:keep|same)\s+(?:the\s+)?(?:seed|picture|image|composition|layout|pose)\b", re.I)
_DROP = re.compile(
    r"\b(?:drop|remove|lose|without|no|less|not so|stop using|get rid of)\s+(?:the\s+|any\s+|that\s+)?"
    r"([\w\s-]+?)(?:\s+(?:look|style|effect|feel|vibe|adapter|lora))?(?=$|[,.;!]|\s+(?:and|but)\b)",
    re.I,
)
_MORE = re.compile(r"\b(?:more|stronger|extra|very)\s+([\w-]+(?:\s+[\w-]+)?)", re.I)
_PIN = re.compile(r"\b(?:use|pin|keep)\s+(?:adapter\s+)?((?:civitai|local):\S+)", re.I)
_FILLER = re.compile(r"\b(?:make it|make the|make|but|please|now|also|too|as well|and|add|use|pin|with)\b", re.I)


_REFINE = re.compile(
    r"\b(?:make (?:it|this|that|them|the (?:image|picture|\w+ one)|(?:image|picture) #?\d+)|same (?:picture|image|composition|layout)|"
    r"keep the (?:composition|layout|picture|image)|(?:this|that) (?:picture|image) but|turn (?:it|this) into|restyle)\b",
    re.I,
)
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
             "last": -1}
_NAMED = re.compile(r"(?:\b(?:image|picture|number)\s*#?\s*(\d+)|#(\d+)|\bthe\s+(" + "|".join(_ORDINALS)
                    + r")\s+(?:one|image|picture))\b", re.I)


def refinement_source(text: str, n_previous: int) -> int | None:
    """Index of the previous result a follow-up refines ("make it more X", "same picture but ..."), or None
    for a turn that should be drawn from scratch. The user may name one ("image 2", "#3", "the second one");
    otherwise the first image. A named image that does not exist is an error, not a silent fallback."""
    if n_previous == 0 or not _REFINE.search(text):
        return None
    match = _NAMED.search(text)
    if match is None:
        return 0
    number = int(match.group(1) or match.group(2)) if (match.group(1) or match.group(2)) else _ORDINALS[match.group(3).lower()]
    index = n_previous - 1 if number == -1 else number - 1
    if not 0 <= index < n_previous:
        raise ValueError(f"there is no image {number} in the previous turn (it made {n_previous})")
    return index


def turn_seed(seed: int | None, plan: Plan, follow_up: bool) -> int:
    """The seed a turn samples with. `seed`: the thread's (this turn's if it gave one, else the previous turn's).
    A first turn uses it; a follow-up only when its plan keeps the seed ("keep the seed", "same picture but
    ..."); otherwise a fresh one."""
    if seed is not None and (not follow_up or plan.edits.keep_seed):
        return seed
    return random.randrange(MAX_SEED + 1)


def without_term(text: str, term: str) -> str:
    """The prompt without a word or phrase (and `<lora:...>` tags naming it), its commas and articles tidied:
    "a bold, slanted seven" without "bold" is "a slanted seven"."""
    text = re.sub(rf"<lora:[^>]*{re.escape(term)}[^>]*>", " ", text, flags=re.I)
    text = re.sub(rf"\b{re.escape(term)}\b", " ", text, flags=re.I)
    text = re.sub(r"\s*,(?:\s*,)+", ",", text)
    text = re.sub(r"\b(a|an|the)\s*,\s*", r"\1 ", text, flags=re.I)
    text = re.sub(r"\s+,", ",", re.sub(r"\s{2,}", " ", text))
    return text.strip(" ,")


def read_follow_up(text: str, plan: Plan) -> Plan:
    """A new plan: the previous one with this turn's edits applied."""
    edits = plan.edits.model_copy(deep=True)
    tasks = [t.model_copy() for t in plan.tasks]
    rest = _NAMED.sub(" ", text)  # "image 2" names what to refine; it is not a wish
    if _KEEP_SEED.search(text):
        edits.keep_seed = True
        rest = _KEEP_SEED.sub(" ", rest)
    for ref in _PIN.findall(text):
        if ref not in edits.pinned:
            edits.pinned.append(ref)
        rest = rest.replace(ref, " ")
    prompt = plan.prompt
    for term in (m.strip().lower() for m in _DROP.findall(rest)):
        if term and term not in edits.excluded_terms:
            edits.excluded_terms.append(term)
        tasks = [t for t in tasks if term not in t.phrase.lower()]
        if term:
            prompt = without_term(prompt, term)
    rest = _DROP.sub(" ", rest)
    additions: list[str] = []
    for term in (m.strip() for m in _MORE.findall(rest)):
        additions.append(term)
        if term.lower() not in {t.phrase.lower() for t in tasks}:
            tasks.append(PlanTask(phrase=term, kind="style"))
        edits.weight_scale[f"term:{term.lower()}"] = 1.25
    rest = _MORE.sub(" ", rest)
    rest = _FILLER.sub(" ", rest)
    known = {t.phrase.lower() for t in tasks}
    for task in split_tasks(rest):
        if task.phrase.lower() not in known:
            tasks.append(task)
            known.add(task.phrase.lower())
    rest = re.sub(r"\s+", " ", rest).strip(" ,.")
    if rest:
        additions.append(rest)
    added = " ".join(additions).lower()
    edits.excluded_terms = [t for t in edits.excluded_terms if t not in added]  # asked for again: no longer excluded
    prompt = ", ".join([p for p in [prompt, *additions] if p])
    return plan.model_copy(update={"tasks": tasks, "edits": edits, "prompt": prompt})


def merge_edits(current: Edits, update: Edits) -> Edits:
    """Edits accumulate over a thread; a later pin lifts an earlier exclusion and vice versa."""
    pinned = [r for r in current.pinned if r not in update.excluded] + [r for r in update.pinned if r not in current.pinned]
    excluded = [r for r in current.excluded if r not in update.pinned] + [r for r in update.excluded if r not in current.excluded]
    return Edits(
        pinned=pinned,
        excluded=excluded,
        excluded_terms=list(dict.fromkeys(current.excluded_terms + update.excluded_terms)),
        weight_scale={**current.weight_scale, **update.weight_scale},
        keep_seed=update.keep_seed or current.keep_seed,
    )
