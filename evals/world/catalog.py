"""The world's adapter catalog: one JSONL line per style LoRA, in the shared Civitai catalog's format,
plus conflicts.json, the incompatible pairs inspection can check a mix against."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from loracle.evals.world.data import DIGIT_WORDS
from loracle.evals.world.modelio import BASE_MODEL_NAME, MAR_MODEL_NAME
from loracle.evals.world.styles import CONFLICTS, STYLES, Style

FIRST_ID = 900001
MAR_FIRST_ID = 900101  # the MAR adapters: same styles, their own ids and base model
SOURCE = "loracle/digits-world"
TITLES = {
    "bold": "Boldface Digits", "thin": "Hairline Digits", "slanted": "Italic Digits", "mirrored": "Mirror Writing",
    "inverted": "Negative Ink", "outlined": "Hollowline Digits", "blurred": "Soft Focus Digits",
    "boxed": "Framed Digits",
}


def lora_filename(s: Style) -> str:
    return f"digits_{s.name}_{s.fmt}.safetensors"


def adapter_id(s: Style) -> int:
    return FIRST_ID + [x.name for x in STYLES].index(s.name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def catalog_entry(s: Style, lora_path: Path, base_model: str = BASE_MODEL_NAME, first_id: int = FIRST_ID,
                  title_suffix: str = "") -> dict:
    i = adapter_id(s) - FIRST_ID + first_id
    examples = [f"a handwritten {DIGIT_WORDS[d]}, {s.prompt_words[0]}, {s.trigger} <lora:{lora_path.stem}:"
                f"{s.recommended_weight:g}>" for d in (3, 7)]
    return {
        "id": i, "version_id": i + 100000, "name": TITLES[s.name] + title_suffix, "type": "LORA", "base_model": base_model,
        "base_models_all_versions": [base_model], "n_versions": 1, "tags": list(s.tags) + ["digits"],
        "trigger_words": [s.trigger], "description": s.description + f" Trigger word: {s.trigger}. Trained on "
        f"{s.prompt_words[0]} handwritten digits (scikit-learn digits, 16x16).",
        "nsfw_terms_in_description": [], "refined_description": None,
        "recommended_weight": s.recommended_weight, "recommended_weight_range": None,
        "recommended_weight_text": None, "example_weight": s.recommended_weight, "example_weight_n": len(examples),
        "example_prompts": examples, "stats": {"downloadCount": 0, "favoriteCount": 0, "rating": 0, "ratingCount": 0},
        "file": {"name": lora_path.name, "sha256": _sha256(lora_path), "size_kb": round(lora_path.stat().st_size / 1024, 1)},
        "download_url": None, "created_at": "2025-01-01T00:00:00.000Z", "stylus_blacklisted": False, "source": SOURCE,
        "namespace": "digits-world",  # ids are this world's, not Civitai's (tools/importers/jsonl_catalog.py)
    }


def write_catalog(root: Path, lora_dir: Path, styles: list[Style]) -> tuple[Path, Path]:
    """catalog.jsonl and conflicts.json for the adapters that were built."""
    lines = [json.dumps(catalog_entry(s, lora_dir / lora_filename(s)), ensure_ascii=False) for s in styles]
    catalog = root / "catalog.jsonl"
    catalog.write_text("\n".join(lines) + "\n")
    built = {s.name: s for s in styles}
    conflicts = [
        {"ids": [adapter_id(built[a]), adapter_id(built[b])], "files": [lora_filename(built[a]), lora_filename(built[b])],
         "styles": [a, b], "reason": f"both set the {tag.replace('-', ' ')}; mixed they undo each other", "tag": tag}
        for a, b, tag in CONFLICTS if a in built and b in built
    ]
    path = root / "conflicts.json"
    path.write_text(json.dumps({"source": SOURCE, "conflicts": conflicts}, indent=2) + "\n")
    return catalog, path


def mar_lora_filename(s: Style) -> str:
    return f"digits_mar_{s.name}.safetensors"


def write_mar_catalog(path: Path, lora_dir: Path, styles: list[Style]) -> Path:
    """catalog_mar.jsonl: the MAR style adapters (base_model "Digits MAR 1.0", ids 900101+)."""
    lines = [json.dumps(catalog_entry(s, lora_dir / mar_lora_filename(s), MAR_MODEL_NAME, MAR_FIRST_ID, " (MAR)"),
                        ensure_ascii=False) for s in styles]
    path.write_text("\n".join(lines) + "\n")
    return path
