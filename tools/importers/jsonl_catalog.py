"""The catalog JSONL format of ../shared/data/catalog/civitai_loras.jsonl (one Civitai LoRA per line)."""

from __future__ import annotations

from typing import Any

from loracle.db.catalog import AdapterRecord

SOURCE = "civitai"  # ids are Civitai model ids (shared with raw API records) unless a line names its namespace


def _weight(obj: dict[str, Any]) -> tuple[float | None, str | None]:
    # Stylus's rule: weights seen in example prompts override the card's stated weight.
    if isinstance(obj.get("example_weight"), (int, float)):
        return float(obj["example_weight"]), "examples"
    if isinstance(obj.get("recommended_weight"), (int, float)):
        return float(obj["recommended_weight"]), "card"
    return None, None


def catalog_line_to_record(obj: dict[str, Any]) -> AdapterRecord:
    if "id" not in obj or "name" not in obj:
        raise ValueError("missing required field 'id' or 'name'")
    if not isinstance(obj["id"], (int, str)) or isinstance(obj["id"], bool):
        raise ValueError(f"id: expected an integer or string, found {type(obj['id']).__name__}")
    if obj.get("type", "LORA") not in ("LORA", "LoCon", "DoRA"):
        raise ValueError(f"type {obj.get('type')!r} is not a LoRA")
    weight, weight_source = _weight(obj)
    file = obj.get("file") or {}
    if not isinstance(file, dict):
        raise ValueError("file: expected an object")
    stats = obj.get("stats") or {}
    if not isinstance(stats, dict):
        raise ValueError("stats: expected an object")
    return AdapterRecord(
        source=obj.get("namespace") or SOURCE,
        external_id=str(obj["id"]),
        version_id=str(obj["version_id"]) if obj.get("version_id") is not None else None,
        name=obj["name"],
        base_model=obj.get("base_model"),
        tags=obj.get("tags"),
        trigger_words=obj.get("trigger_words"),
        description=obj.get("description") or "",
        refined_description=obj.get("refined_description"),
        category=obj.get("category"),
        recommended_weight=weight,
        weight_source=weight_source,
        example_prompts=obj.get("example_prompts"),
        file_name=file.get("name"),
        file_sha256=file.get("sha256"),
        file_size_kb=file.get("size_kb"),
        download_url=obj.get("download_url"),
        downloads=stats.get("downloadCount"),
        favorites=stats.get("favoriteCount"),
        rating=stats.get("rating"),
        rating_count=stats.get("ratingCount"),
        blocklisted=bool(obj.get("stylus_blacklisted", False)),
        created_at=obj.get("created_at"),
        extra={
            k: obj[k]
            for k in ("recommended_weight_range", "recommended_weight_text", "example_weight_n", "source")
            if obj.get(k) is not None
        },
    )
