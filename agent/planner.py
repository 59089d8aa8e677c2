"""The offline planner: deterministic task splitting and threshold selection, used whenever no LLM is.

Splitting handles natural sentences ("a watercolor painting of a fox in a misty forest"), style
clauses ("in the style of ...", "by ..."), comma lists, and A1111 tag lists with weights
("(masterpiece:1.2), 1girl, blue hair"). Selection keeps, per task, the reranked candidates whose
score clears a threshold, each adapter used once (for the task it fits best), at most 3 per task.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loracle.agent.plan import Plan, PlanTask
from loracle.generation.prompt_tags import strip_network_tags

if TYPE_CHECKING:
    from loracle.db import Database

MAX_TASKS = 8
QUALITY_TAGS = frozenset(
    """masterpiece best quality high quality highest quality top quality ultra detailed ultra-detailed highres
    absurdres 8k 4k uhd hdr high resolution extremely detailed very detailed detailed realistic photorealistic
    photo-realistic raw photo official art award winning trending on artstation sharp focus""".split("\n")
)
_QUALITY_WORDS = {"masterpiece", "best", "quality", "high", "highest", "top", "ultra", "detailed", "highres",
                  "absurdres", "8k", "4k", "uhd", "hdr", "resolution", "extremely", "very", "raw", "official",
                  "award", "winning", "trending", "artstation", "sharp", "focus", "photo-realistic"}
_LEADING = re.compile(r"^(?:(?:a|an|the|some|two|three|four|several|many|one|his|her|their|its|this|that|these|those)\s+)+", re.I)
_SPLIT = re.compile(
    r"\s*(?:[,;.]|\bin the style of\b|\bwearing\b|\bholding\b|\bnext to\b|"
    r"\bin front of\b|\bwith\b|\band\b|\bin\b|\bon\b|\bat\b|\bof\b|\bby\b|\bnear\b|\bunder\b|\bover\b|"
    r"\bbeside\b|\binside\b|\bbehind\b|\bwhile\b|\bfrom\b|\binto\b|\bthrough\b)\s*",
    re.I,
)
_STYLE_HINT = re.compile(r"\b(style|painting|art|illustration|drawing|sketch|render|photo|photograph|anime|cartoon|watercolou?r|oil|pixel|ink|lineart)\b", re.I)
_QUANTITY = re.compile(r"\b(?:a|an|the)?\s*(?:couple|pair|group|bunch|lot|number|herd|flock|pack|set|pile|row)s? of\b", re.I)
_STOP = frozenset("is are was were be being there it they he she we you i very".split())
_NEGATIVE = re.compile(r"\b(?:without|no|not|never|avoid)\s+([\w\s-]+?)(?=[,.;]|$)", re.I)


def strip_prompt_syntax(prompt: str) -> str:
    """Drop A1111 markup: <lora:...> tags, (word:1.2) weights, brackets (escaped ones too), BREAK."""
    text = strip_network_tags(prompt)
    text = re.sub(r"\\([()\[\]])", r"\1", text)  # A1111's escaped brackets: "asuna \(sao\)" names a character
    text = re.sub(r":\s*-?\d+(?:\.\d+)?\s*(?=[)\]])", "", text)
    text = re.sub(r"[()\[\]{}]", " ", text)
    text = re.sub(r"\bBREAK\b", ",", text)
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\s+,", ",", text).strip(" ,")


def is_tag_list(text: str) -> bool:
    """An A1111-style tag list: many short comma-separated segments."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return len(parts) >= 4 and sum(len(p.split()) <= 4 for p in parts) >= 0.75 * len(parts)


def _clean(phrase: str) -> str:
    phrase = _LEADING.sub("", phrase.strip(" -_'\"")).strip()
    words = phrase.split()
    if not words or all(w.lower() in _STOP for w in words):
        return ""
    if all(w.lower().strip(",") in _QUALITY_WORDS for w in words) or phrase.lower() in QUALITY_TAGS:
        return ""
    return phrase


def _kind(phrase: str, style_clause: bool) -> str:
    return "style" if style_clause or _STYLE_HINT.search(phrase) else "concept"


def negative_wishes(prompt: str) -> list[str]:
    """Phrases the user does not want ("without people", "no text")."""
    return [m.strip() for m in _NEGATIVE.findall(prompt) if m.strip()]


def split_tasks(prompt: str) -> list[PlanTask]:
    """Fine-grained tasks in the prompt's own words, most important (earliest) first."""
    text = _QUANTITY.sub(" ", strip_prompt_syntax(prompt))
    for wish in negative_wishes(text):
        text = re.sub(rf"\b(?:without|no|not|never|avoid)\s+{re.escape(wish)}", ",", text, flags=re.I)
    tasks: list[PlanTask] = []
    seen: set[str] = set()

    def add(phrase: str, style_clause: bool = False) -> None:
        phrase = _clean(phrase)
        key = phrase.lower()
        if phrase and key not in seen and len(tasks) < MAX_TASKS:
            seen.add(key)
            tasks.append(PlanTask(phrase=phrase[:200], kind=_kind(phrase, style_clause)))

    if is_tag_list(text):
        for part in text.split(","):
            add(part)
        return tasks
    for clause in re.split(r"[,;]", text):
        style_clause = bool(re.search(r"\bin the style of\b", clause, re.I) or re.search(r"\bby [A-Z]", clause))
        pieces = [p for p in _SPLIT.split(clause) if p and p.strip()]
        for piece in pieces:
            add(piece, style_clause and piece is pieces[-1])
    return tasks


def plan_prompt(prompt: str) -> Plan:
    """A first turn's plan: the prompt's tasks, its subject (the first task) and what it says it does not want."""
    tasks = split_tasks(prompt)
    return Plan(prompt=prompt, subject=tasks[0].phrase if tasks else "", tasks=tasks,
                negative=", ".join(negative_wishes(prompt)))


@dataclass(frozen=True)
class SelectionSettings:
    """Thresholds for offline selection, calibrated on dev queries (see evals/selection.py)."""

    min_score: float = 0.62
    relative: float = 0.9  # keep candidates within this fraction of the task's best score
    max_per_task: int = 3
    max_total: int = 6
    whole_prompt: bool = False  # also score the whole prompt's candidates as one more task


def offline_ranking(ranker: str = "learned", exclude_tags: Sequence[str] = (), db: Database | None = None) -> tuple[str, SelectionSettings]:
    """The retrieval strategy and thresholds for offline selection. `ranker="learned"` (the default) uses
    the learned reranker trained with the filter in use (`exclude_tags`; tools/learned_rank.ranker_for)
    with the thresholds calibrated for its scores, when its artifacts exist (`loracle rank train`) and
    `db`'s catalog is the one it was trained on (tools/learned_rank.fits_catalog); otherwise, or with
    `ranker="rerank"`, the hand-weighted reranker."""
    from loracle.tools.learned_rank import available, fits_catalog, ranker_for
    from loracle.tools.retrieve import SearchFilters

    if ranker == "learned" and available():
        model = ranker_for(SearchFilters(exclude_tags=list(exclude_tags)))
        if db is not None:
            with db.connection() as conn:
                if not fits_catalog(conn, model):
                    return "rerank", SelectionSettings()
        return "learned", SelectionSettings(**model.selection.get("settings", {}))
    return "rerank", SelectionSettings()


def select_offline(scored: dict[str, list[tuple[int, float]]], settings: SelectionSettings) -> dict[str, list[int]]:
    """Per task, adapter ids whose score clears the thresholds; each adapter goes to its best task only."""
    best_task: dict[int, tuple[float, str]] = {}
    for task, items in scored.items():
        for adapter_id, score in items:
            if adapter_id not in best_task or score > best_task[adapter_id][0]:
                best_task[adapter_id] = (score, task)
    picks: dict[str, list[int]] = {task: [] for task in scored}
    chosen: list[tuple[float, str, int]] = []
    for task, items in scored.items():
        if not items:
            continue
        top = max(score for _, score in items)
        for adapter_id, score in sorted(items, key=lambda x: -x[1]):
            if len(picks[task]) >= settings.max_per_task:
                break
            if score < settings.min_score or score < top * settings.relative or best_task[adapter_id][1] != task:
                continue
            picks[task].append(adapter_id)
            chosen.append((score, task, adapter_id))
    if len(chosen) > settings.max_total:
        keep = {(t, a) for _, t, a in sorted(chosen, reverse=True)[: settings.max_total]}
        picks = {task: [a for a in ids if (task, a) in keep] for task, ids in picks.items()}
    return picks
