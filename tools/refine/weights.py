"""Recommended LoRA weights from a card's text and its example prompts, without a model.

Stylus's rule: the card's stated weight (the mean of a stated range), overridden by the weights this
adapter was used at in example prompts (`<lora:NAME:W>`), else 0.8. Limits such as "up to 2" or
"max 1.5", and other knobs (denoising strength, CFG scale, ADetailer strength, merge multipliers),
are not recommendations and are skipped.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DEFAULT_WEIGHT = 0.8
MAX_WEIGHT = 2.0
Source = Literal["card", "examples", "default"]

_NUM = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)"
_TAG = re.compile(r"<\s*(?:lora|lyco|locon)\s*:\s*([^:<>]+?)\s*:\s*(" + _NUM + r")\s*(?::[^<>]*)?>", re.I)
_KEYWORD = r"(?:weights?|strength|权重|權重|ウェイト|強度|强度)"
# keyword, then a short gap without digits or sentence ends, then a number or range
_AFTER = re.compile(
    _KEYWORD + r"(?P<gap>[^\d\n.!?。；;<>()]{0,28}?)(?P<a>" + _NUM + r")"
    r"(?:\s*(?:-|–|—|~|～|〜|to|and|至|到)\s*(?P<b>" + _NUM + r"))?(?![\d.]*\d)",
    re.I,
)
# a number or range, then (of) weight: "works well at 0.9 weight", "0.8 to 1 weight"
_BEFORE = re.compile(r"(?P<a>" + _NUM + r")(?:\s*(?:-|–|~|～|to)\s*(?P<b>" + _NUM + r"))?\s*(?:lora\s*)?" + _KEYWORD, re.I)
_NOT_LORA = re.compile(
    r"(denois\w*|cfg|detailer|adetailer|controlnet|control|hires|upscal\w*|clip|negative|prompt|token|"
    r"embedding|checkpoint|merge\w*|ip.?adapter|noise|face\s*restor\w*|codeformer|color)\W*(?:\w+\W*){0,1}$",
    re.I,
)
_LIMIT = re.compile(r"\b(up\s*to|upto|max(?:imum)?|below|under|over|above|exceed\w*|more than|less than|higher than|lower than|not|don'?t|beyond)\b|[<>≤≥]", re.I)
_RECOMMEND = re.compile(r"recommend|suggest|best|works? (?:well|best|great)|use|建议|推荐|推薦|おすすめ|golden|sweet spot", re.I)
_VERSIONISH = re.compile(r"^(?:v?\d+[a-z]?|\d+|v\d+.*|epoch\d*|final|last|lora|locon|lyco|safetensors|pruned|fp16)$")


@dataclass(frozen=True)
class WeightGuess:
    """A recommended weight, where it came from, and the text that gave it (for review)."""

    weight: float
    source: Source
    evidence: str = ""


def _plausible(value: float) -> bool:
    return value != 0 and abs(value) <= MAX_WEIGHT


def _value(a: str, b: str | None) -> float | None:
    lo = float(a)
    if b is None:
        return lo if _plausible(lo) else None
    hi = float(b)
    if not (_plausible(lo) and _plausible(hi)) or (lo < 0 < hi) or (hi < 0 < lo):
        return None  # "-1 to 1" describes a slider's span, not a setting
    if abs(hi - lo) > 1.5:
        return None
    return round((lo + hi) / 2, 3)


def card_weight(text: str) -> WeightGuess | None:
    """The weight a card's text recommends (the mean of a range), or None when it states none."""
    if not text:
        return None
    found: list[tuple[int, int, float, str]] = []  # (priority, position, value, evidence)
    for match in _AFTER.finditer(text):
        start = match.start()
        before = text[max(0, start - 24) : start]
        if _NOT_LORA.search(before) or _LIMIT.search(match.group("gap")):
            continue
        if re.match(r"\s*[)\]]", text[match.end() :]) and "(" in text[max(0, start - 40) : start]:
            continue  # "(word:1.2)" prompt emphasis, not the LoRA weight
        value = _value(match.group("a"), match.group("b"))
        if value is None:
            continue
        context = text[max(0, start - 40) : start]
        priority = 0 if _RECOMMEND.search(context + match.group(0)) else 1
        found.append((priority, start, value, match.group(0)))
    for match in _BEFORE.finditer(text):
        start = match.start()
        before = text[max(0, start - 16) : start]
        if _LIMIT.search(before) or re.search(r"[:(]\s*$", before) or re.search(r"\d[.,]?$", before):
            continue
        value = _value(match.group("a"), match.group("b"))
        if value is None:
            continue
        after = text[match.end() : match.end() + 20]
        if _NOT_LORA.search(text[max(0, start - 24) : start]) or re.match(r"\s*(?:of|for)\s+(?:the\s+)?(?:denois|cfg|hires)", after, re.I):
            continue
        priority = 0 if _RECOMMEND.search(text[max(0, start - 40) : match.end()]) else 1
        found.append((priority, start, value, match.group(0)))
    if not found:
        return None
    priority, _, value, evidence = min(found, key=lambda item: (item[0], item[1]))
    return WeightGuess(value, "card", evidence.strip())


def _tokens(name: str) -> set[str]:
    name = re.sub(r"\.(safetensors|pt|ckpt|bin)$", "", name.lower())
    parts = re.split(r"[^a-z0-9\u00c0-\uffff]+|(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", name)
    return {p for p in parts if p and not _VERSIONISH.match(p) and len(p) >= 2}


def _same_adapter(tag_name: str, names: Sequence[str]) -> bool:
    tag = _tokens(tag_name)
    if not tag:
        return False
    tag_flat = re.sub(r"[^a-z\u00c0-\uffff]+", "", tag_name.lower())
    for name in names:
        other = _tokens(name)
        if not other:
            continue
        if len(tag & other) / min(len(tag), len(other)) >= 0.5:
            return True
        flat = re.sub(r"[^a-z\u00c0-\uffff]+", "", re.sub(r"\.(safetensors|pt|ckpt)$", "", name.lower()))
        if len(tag_flat) >= 4 and len(flat) >= 4 and (tag_flat in flat or flat in tag_flat):
            return True
    return False


def lora_tags(text: str) -> list[tuple[str, float]]:
    """Every `<lora:NAME:W>` (or lyco/locon) tag in a text, as (name, weight)."""
    return [(name.strip(), float(w)) for name, w in _TAG.findall(text or "")]


def example_weight(prompts: Sequence[str], names: Sequence[str]) -> WeightGuess | None:
    """The median weight this adapter was used at in its example prompts.

    A tag counts when its name matches the adapter's file name, title or trigger words; a prompt
    with exactly one LoRA tag counts too (showcase images usually use the adapter itself), and the
    names learnt that way are then recognised in prompts that mix several adapters.
    """
    per_prompt = [lora_tags(p) for p in prompts]
    known = [n for n in names if n]
    learnt = {tags[0][0] for tags in per_prompt if len(tags) == 1}
    weights: list[float] = []
    for tags in per_prompt:
        matched = [w for n, w in tags if _same_adapter(n, known) or n in learnt]
        if matched:
            weights.append(matched[0])
    weights = [w for w in weights if _plausible(w)]
    if not weights:
        return None
    value = float(statistics.median_low(weights))  # an observed weight, never a midpoint
    return WeightGuess(round(value, 3), "examples", f"{len(weights)} example prompt(s)")


def recommend_weight(description: str, prompts: Sequence[str], names: Sequence[str]) -> WeightGuess:
    """Stylus's rule: example prompts override the card; the card's own example tag is a last resort."""
    from_examples = example_weight(prompts, names)
    if from_examples is not None:
        return from_examples
    from_card = card_weight(description)
    if from_card is not None:
        return from_card
    card_tags = [w for n, w in lora_tags(description) if _plausible(w)]
    if card_tags:
        return WeightGuess(card_tags[0], "card", "the card's sample prompt")
    return WeightGuess(DEFAULT_WEIGHT, "default")
