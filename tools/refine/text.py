"""Cleaning model-card text: strip boilerplate and markup, split sentences, find what prompts share.

Card text is data written by strangers: nothing here interprets it, it only keeps or drops sentences.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence

_TAGS = re.compile(r"<\s*(script|style)[^>]*>.*?<\s*/\s*\1\s*>|<[^>]{0,200}>", re.I | re.S)
_BLOCK = re.compile(r"<\s*/?\s*(?:p|br|div|li|ul|ol|h[1-6]|tr|hr)\b[^>]{0,100}>", re.I)
_URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w.-]+\.(?:com|gg|io|net|org|me|ly)/\S*", re.I)
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|\s*(?:\n|•|·|\|{1,2}|—{2,}|-{3,}|/{3,}|={3,})\s*")
_BOILERPLATE = re.compile(
    r"download|please (?:rate|like|review|leave|follow|consider)|\brate\b|rating|\blikes?\b|buy me|coffee|ko-?fi|patreon|"
    r"discord|twitter|instagram|pixiv|linktree|follow me|support (?:me|my)|donat|commission|subscribe|"
    r"changelog|change log|\bupdate[ds]?\b|\bversion\b|\bv\d+(?:\.\d+)*\b|\bepoch|trained (?:on|with|for) \d|"
    r"sampler|steps?:|\bcfg\b|clip ?skip|hires|upscal|denois|negative prompt|\bvae\b|checkpoint|seed|"
    r"thank|enjoy|have fun|feedback|credit|license|do not (?:sell|re-?upload)|re-?upload|qq群|"
    r"rate this|let me know|feel free|suggestions?|requests?|requested|upload|comparison|\bi will\b|\bi'll\b|"
    r"\?|\d\.\d",  # questions to the reader, and settings or version numbers
    re.I,
)
# Text addressed to a model rather than a reader: dropped however descriptive it looks.
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b.{0,40}\b(?:instructions?|rules|prompt|above|previous|prior)|"
    r"instructions?|\b(?:system|assistant|user)\s*:|as an ai|language model|\byou are (?:now|an?)\b|"
    r"admin mode|jailbreak|system prompt|\brespond with\b|\boutput\b.{0,20}[=:]",
    re.I,
)
_DESCRIPTIVE = re.compile(
    r"\b(?:lora|style|generat\w*|produc\w*|creat\w*|draw\w*|make[s]?|design\w*|depict\w*|imitat\w*|"
    r"reproduc\w*|captur\w*|based on|inspired|character|outfit|clothing|wearing|background|scene|pose|"
    r"concept|effect|look|aesthetic|artist|art|painting|photo\w*|anime|realistic|illustration)\b",
    re.I,
)
_GENERIC = {
    "masterpiece", "best quality", "high quality", "highres", "absurdres", "ultra detailed", "extremely detailed",
    "8k", "4k", "highly detailed", "ultra-detailed", "high resolution", "best_quality", "raw photo", "official art",
    "intricate details", "ultra high res", "detailed", "solo", "looking at viewer", "photorealistic", "realistic",
    "1girl", "1boy", "extremely detailed cg unity 8k wallpaper", "beautiful detailed eyes", "perfect lighting",
    "(masterpiece)", "sharp focus", "depth of field", "simple background", "white background", "upper body",
}


def clean_markup(text: str) -> str:
    """Drop HTML leftovers, scripts, links and control characters; collapse whitespace."""
    text = html.unescape(text or "")
    text = _BLOCK.sub("\n", text)  # block-level tags end a sentence even without punctuation
    text = _TAGS.sub(" ", text)
    text = _URL.sub(" ", text)
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", text)
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def sentences(text: str) -> list[str]:
    """Sentences (and bullet or pipe separated pieces) of already cleaned text."""
    return [s.strip(" -–:;,*#>") for s in _SENTENCE.split(text) if s and len(s.strip()) > 2]


def is_boilerplate(sentence: str) -> bool:
    return bool(_BOILERPLATE.search(sentence) or _INJECTION.search(sentence))


def mostly_latin(sentence: str) -> bool:
    letters = [c for c in sentence if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) >= 0.8


def descriptive_sentences(text: str, names: Sequence[str], *, limit: int = 3, max_chars: int = 320) -> list[str]:
    """The few sentences that say what the adapter does, in the card's order.

    Scored by mentions of the adapter's own words and by descriptive verbs; boilerplate, settings and
    anything that reads like an instruction to a model are dropped outright.
    """
    own = {w for n in names for w in re.findall(r"[a-z]{3,}", n.lower())} - {"lora", "the", "and", "for", "with"}
    scored: list[tuple[float, int, str]] = []
    for position, sentence in enumerate(sentences(clean_markup(text))):
        if is_boilerplate(sentence) or not mostly_latin(sentence) or len(sentence) < 12:
            continue
        sentence = sentence[:240]
        words = set(re.findall(r"[a-z]{3,}", sentence.lower()))
        score = 1.5 * len(words & own) ** 0.5 + (1.0 if _DESCRIPTIVE.search(sentence) else 0.0) - position * 0.05
        if re.search(r"\b(?:weight|strength)\b", sentence, re.I) and not _DESCRIPTIVE.search(sentence):
            score -= 1.0
        if score > 0.5 or position < 2:  # a card's opening lines usually say what it is
            scored.append((score, position, sentence))
    best = sorted(scored, key=lambda item: -item[0])[:limit]
    kept, total = [], 0
    for _, _, sentence in sorted(best, key=lambda item: item[1]):
        if total + len(sentence) > max_chars:
            break
        kept.append(sentence if sentence[-1] in ".!?" else sentence + ".")
        total += len(sentence)
    return kept


def prompt_terms(text: str) -> list[str]:
    """Comma-separated terms of a prompt, without LoRA tags, emphasis brackets or weights."""
    text = re.sub(r"<[^>]*>", " ", text or "")
    text = re.sub(r":\s*[-+]?\d+(?:\.\d+)?", "", text)
    text = re.sub(r"[()\[\]{}\\]", " ", text)
    terms = []
    for part in re.split(r"[,\n|]+", text):
        term = re.sub(r"\s+", " ", part).strip(" .:;_").lower()
        if 2 < len(term) <= 40 and term not in _GENERIC and not re.search(r"negative prompt|steps|sampler", term):
            terms.append(term)
    return terms


def common_prompt_terms(prompts: Sequence[str], *, limit: int = 6) -> list[str]:
    """Terms that recur across example prompts: what the showcase images have in common."""
    if len(prompts) < 2:
        return []
    counts = Counter(term for p in prompts for term in dict.fromkeys(prompt_terms(p)))
    floor = max(2, round(0.4 * len(prompts)))
    return [term for term, n in counts.most_common() if n >= floor][:limit]
