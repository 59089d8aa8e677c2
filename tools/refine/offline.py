"""The extractive refiner: no network, no model; deterministic and fast enough for the whole catalog.

It keeps the card sentences that describe the adapter, folds in its tags, cleaned trigger words and
what its example prompts share, guesses a category from tags and title, and extracts the weight.
"""

from __future__ import annotations

import re

from loracle.tools.refine.models import Card, Refinement
from loracle.tools.refine.text import clean_markup, common_prompt_terms, descriptive_sentences
from loracle.tools.refine.weights import recommend_weight

REFINED_BY = "offline"
MAX_DESCRIPTION = 600
MAX_TRIGGERS = 10

# Civitai's own category tags, most specific first.
_CIVITAI_CATEGORY_TAGS = (
    ("celebrity", "celebrity"), ("character", "character"), ("style", "style"), ("clothing", "clothing"),
    ("poses", "pose"), ("background", "background"), ("buildings", "building"), ("vehicle", "vehicle"),
    ("animal", "animal"), ("objects", "object"), ("tool", "tool"), ("action", "action"), ("concept", "concept"),
)
# Checked in order: the first category whose words appear in the tags (then the title) wins.
_CATEGORY_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("celebrity", ("celebrity", "actress", "actor", "real person", "singer", "idol", "cosplayer", "influencer")),
    ("character", ("character", "characters", "waifu", "oc", "vtuber", "hololive", "genshin impact", "blue archive")),
    ("clothing", ("clothing", "clothes", "outfit", "costume", "dress", "uniform", "armor", "armour", "swimsuit", "hat", "shoes", "fashion", "kimono")),
    ("pose", ("pose", "poses", "posing", "gesture", "sitting", "lying")),
    ("action", ("action", "actions", "fighting", "running", "dancing", "holding", "eating")),
    ("background", ("background", "backgrounds", "scenery", "landscape", "environment", "city", "interior", "room", "forest")),
    ("building", ("building", "buildings", "architecture", "house", "castle", "temple", "tower")),
    ("vehicle", ("vehicle", "vehicles", "car", "cars", "motorcycle", "mecha", "robot", "ship", "aircraft", "tank", "train")),
    ("animal", ("animal", "animals", "cat", "dog", "bird", "horse", "fox", "dragon", "creature", "pokemon", "fish")),
    ("tool", ("tool", "slider", "detail", "lighting", "helper", "utility", "enhancer", "tweaker", "adjuster")),
    ("style", ("style", "art style", "artstyle", "artist", "painting", "anime style", "illustration", "aesthetic", "photography", "3d", "render", "sketch", "watercolor")),
    ("object", ("object", "objects", "item", "items", "weapon", "food", "jewelry", "prop", "icon", "assets")),
    ("concept", ("concept", "concepts", "effect", "meme")),
)


def category_of(card: Card) -> str:
    """A category from the card's tags first (Civitai's own category tags sit there), then its title."""
    tags = [t.lower() for t in card.get("tags") or []]
    title = (card.get("name") or "").lower()
    for tag, category in _CIVITAI_CATEGORY_TAGS:
        if tag in tags:
            return category
    for source in (tags, re.findall(r"[a-z0-9]+(?: [a-z0-9]+)?", title)):
        for category, words in _CATEGORY_WORDS:
            if any(word in source for word in words):
                return category
    for category, words in _CATEGORY_WORDS:  # a phrase inside the title ("Pixel Art Style")
        if any(re.search(rf"\b{re.escape(word)}\b", title) for word in words):
            return category
    return "concept"


def clean_trigger_words(words: list[str] | None) -> list[str]:
    """Trigger words as a user would type them: no LoRA tags, emphasis, weights, 'none', or duplicates."""
    cleaned: list[str] = []
    seen: set[str] = set()
    for raw in words or []:
        text = re.sub(r"<[^>]*>", " ", clean_markup(raw))
        text = re.sub(r":\s*[-+]?\d+(?:\.\d+)?", "", text)
        text = re.sub(r"[()\[\]{}]", "", text).replace("\\", "")
        for part in re.split(r"[,\n;]+", text):
            word = re.sub(r"\s+", " ", part).strip(" .:_-'\"")
            key = word.lower()
            if not word or len(word) > 60 or key in seen or key in {"none", "n/a", "na", "no", "null", "no trigger", "no trigger word"}:
                continue
            seen.add(key)
            cleaned.append(word)
    return cleaned[:MAX_TRIGGERS]


def weight_names(card: Card) -> list[str]:
    """Names an example prompt's `<lora:NAME:W>` may use for this adapter."""
    return [card.get("file_name") or "", card.get("name") or "", *(card.get("trigger_words") or [])]


def compose_description(card: Card, category: str, triggers: list[str]) -> str:
    """Name and category, the card's descriptive sentences, then tags, triggers and shared prompt terms."""
    name = clean_markup(card.get("name") or "").strip() or "This adapter"
    parts = [f"{name}: a {category} LoRA."]
    parts += descriptive_sentences(card.get("description") or "", [name, *(card.get("tags") or []), *triggers])
    shared = common_prompt_terms(card.get("example_prompts") or [])
    if shared:
        parts.append("Example images show: " + ", ".join(shared) + ".")
    tags = [t for t in card.get("tags") or [] if t.lower() != category][:8]
    if tags:
        parts.append("Tags: " + ", ".join(tags) + ".")
    if triggers:
        parts.append("Trigger words: " + ", ".join(triggers[:5]) + ".")
    text = " ".join(parts)
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1].rsplit(" ", 1)[0] + "…"


def refine_offline(card: Card, input_hash: str, *, note: str | None = None) -> Refinement:
    """Refine one card without a model."""
    category = category_of(card)
    triggers = clean_trigger_words(card.get("trigger_words"))
    guess = recommend_weight(card.get("description") or "", card.get("example_prompts") or [], weight_names(card))
    return Refinement(
        adapter_id=card["id"],
        description=compose_description(card, category, triggers),
        category=category,
        weight=guess.weight,
        weight_source=guess.source,
        trigger_words=triggers,
        refined_by=REFINED_BY,
        input_hash=input_hash,
        note=note,
    )
