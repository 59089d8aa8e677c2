"""A tiny catalog with real LoRA files for the tiny model, shared by the agent and API tests."""

from __future__ import annotations

import json
from pathlib import Path

STYLES = [
    ("101", "Watercolor Wash", ["style", "watercolor"], ["wtrclr"]),
    ("102", "Misty Forest Backgrounds", ["background", "forest", "fog"], ["mistyforest"]),
    ("103", "Red Fox", ["animal", "fox"], ["redfox"]),
    ("104", "Oil Painting", ["style", "oil painting"], ["oilpaint"]),
    ("105", "Anime Lineart", ["style", "anime"], ["animeline"]),
]


def write_tiny_catalog(folder: Path, styles: list[tuple[str, str, list[str], list[str]]] = STYLES) -> tuple[Path, Path]:
    """Write one synthetic LoRA file per style and a catalog JSONL naming them; returns (adapter folder, catalog)."""
    from loracle.generation.base_models import load_base_model
    from loracle.generation.synthetic import write_synthetic_lora

    adapters = folder / "adapters"
    adapters.mkdir(parents=True)
    tiny = load_base_model("tiny")
    lines = []
    for i, (ext, name, tags, triggers) in enumerate(styles):
        file = adapters / f"lora_{ext}.safetensors"
        write_synthetic_lora(file, tiny, seed=200 + i)
        lines.append(json.dumps({"id": int(ext), "name": name, "tags": tags, "trigger_words": triggers,
                                 "description": f"{name} adapter.", "base_model": "SD 1.5",
                                 "example_prompts": [f"a picture, {triggers[0]}"], "recommended_weight": 0.9,
                                 "file": {"name": file.name}}))
    catalog = folder / "catalog.jsonl"
    catalog.write_text("\n".join(lines) + "\n")
    return adapters, catalog
