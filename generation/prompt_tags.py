"""A1111's extra-network tags in prompts (`<lora:name:w>`, `<lyco:...>`, `<hypernet:...>`), read in one place.

The engine applies `<lora:...>` tags as the user's own adapter picks; the planner drops every such tag before
splitting a prompt into tasks. Both read the tags with the one pattern below. Kept free of torch so the planner
can import it cheaply.
"""

from __future__ import annotations

import re

_NETWORK_TAG = re.compile(r"<(lora|lyco|hypernet):([^>]*)>", re.IGNORECASE)


def parse_lora_tags(prompt: str) -> tuple[str, dict[str, float]]:
    """Strip A1111 `<lora:name>`, `<lora:name:w>` (and `<lora:name:te:unet>`, unet weight wins) tags.

    Returns the cleaned prompt and {name: weight}; these are explicit user picks. Other networks' tags
    (`<lyco:...>`, `<hypernet:...>`) and a `<lora:>` without a name stay in the text: no adapter serves them.
    """
    picks: dict[str, float] = {}

    def take(m: re.Match) -> str:
        name, *weights = m.group(2).split(":", 2)
        if m.group(1).lower() != "lora" or not name:
            return m.group(0)
        te, unet = (weights + ["", ""])[:2]
        raw = (unet or te or "1").strip()
        if raw.lower().startswith("unet="):
            raw = raw[5:]
        try:
            picks[name.strip()] = float(raw)
        except ValueError as e:
            raise ValueError(f"Bad weight {raw!r} in LoRA tag {m.group(0)!r}") from e
        return ""

    cleaned = _NETWORK_TAG.sub(take, prompt)
    cleaned = re.sub(r"\s+,", ",", re.sub(r"\s{2,}", " ", cleaned)).strip(" ,")
    return cleaned, picks


def strip_network_tags(prompt: str) -> str:
    """The prompt without any extra-network tag (each replaced by a space), whatever its weights say."""
    return _NETWORK_TAG.sub(" ", prompt)
