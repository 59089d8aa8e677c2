"""Folders of `.safetensors` LoRA files: kohya / modelspec header metadata plus optional sidecars.

Sidecars: `NAME.civitai.info` (the Civitai model-version JSON written by A1111's Civitai helper) and
`NAME.json` (A1111's per-LoRA user metadata: description, activation text, preferred weight).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from safetensors import safe_open

from loracle.db.catalog import AdapterRecord
from loracle.tools.importers.base import Rejected, describe_validation_error
from loracle.tools.importers.civitai import html_to_text

SOURCE = "local"
MAX_TAGS = 12

_BASE_MODELS = {
    "sd_v1": "SD 1.5",
    "sd_v2": "SD 2.1",
    "sd_v2_768_v": "SD 2.1 768",
    "sdxl_base_v1-0": "SDXL 1.0",
    "stable-diffusion-v1": "SD 1.5",
    "stable-diffusion-v2": "SD 2.1",
    "stable-diffusion-xl-v1-base": "SDXL 1.0",
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` header of a safetensors file, without loading any tensor."""
    with safe_open(str(path), framework="numpy") as handle:
        return dict(handle.metadata() or {})


def base_model_from_metadata(meta: dict[str, str]) -> str | None:
    for key in ("ss_base_model_version", "modelspec.architecture"):
        value = meta.get(key, "")
        for prefix, name in sorted(_BASE_MODELS.items(), key=lambda kv: -len(kv[0])):
            if value.startswith(prefix):
                return name
    if meta.get("ss_v2") == "True":
        return "SD 2.1"
    if "ss_network_module" in meta:
        return "SD 1.5"  # kohya wrote no version before SDXL support: an SD 1.x LoRA
    return None


def top_tags(meta: dict[str, str]) -> list[str]:
    """The most frequent caption tags kohya recorded in `ss_tag_frequency`."""
    try:
        frequency = json.loads(meta.get("ss_tag_frequency", "{}"))
    except json.JSONDecodeError:
        return []
    counts: Counter[str] = Counter()
    if isinstance(frequency, dict):
        for dataset in frequency.values():
            if isinstance(dataset, dict):
                counts.update({str(tag).strip(): int(n) for tag, n in dataset.items() if isinstance(n, (int, float))})
    return [tag for tag, _ in counts.most_common(MAX_TAGS) if tag]


def _sidecar(path: Path, suffix: str) -> dict[str, Any]:
    candidate = path.with_name(path.stem + suffix)
    if not candidate.is_file():
        return {}
    try:
        data = json.loads(candidate.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"sidecar {candidate.name} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def safetensors_to_record(path: Path, root: Path) -> AdapterRecord:
    try:
        meta = read_metadata(path)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"not a readable safetensors file: {exc}") from exc
    civitai = _sidecar(path, ".civitai.info")
    a1111 = _sidecar(path, ".json")
    sha256 = file_sha256(path)

    triggers = [w for w in civitai.get("trainedWords") or [] if isinstance(w, str)]
    if meta.get("modelspec.trigger_phrase"):
        triggers.append(meta["modelspec.trigger_phrase"])
    if isinstance(a1111.get("activation text"), str):
        triggers.extend(w.strip() for w in a1111["activation text"].split(",") if w.strip())
    weight = a1111.get("preferred weight")
    model = civitai.get("model") if isinstance(civitai.get("model"), dict) else {}
    description = (
        a1111.get("description")
        or meta.get("modelspec.description")
        or html_to_text(civitai.get("description") or "")
    )
    has_civitai_id = civitai.get("modelId") is not None
    return AdapterRecord(
        source="civitai" if has_civitai_id else SOURCE,
        external_id=str(civitai["modelId"]) if has_civitai_id else sha256,
        version_id=str(civitai["id"]) if civitai.get("id") is not None else None,
        name=model.get("name") or meta.get("modelspec.title") or meta.get("ss_output_name") or path.stem,
        base_model=civitai.get("baseModel") or base_model_from_metadata(meta),
        tags=top_tags(meta),
        trigger_words=triggers,
        description=description if isinstance(description, str) else "",
        recommended_weight=float(weight) if isinstance(weight, (int, float)) and weight else None,
        weight_source="metadata" if isinstance(weight, (int, float)) and weight else None,
        file_name=path.name,
        file_sha256=sha256,
        file_size_kb=round(path.stat().st_size / 1024, 1),
        local_path=str(path.relative_to(root)) if path != root else path.name,
        extra={k: meta[k] for k in ("ss_network_dim", "ss_network_alpha", "ss_network_module") if k in meta},
    )


def iter_safetensors_records(path: Path) -> Iterator[tuple[str, AdapterRecord | Rejected]]:
    root = path if path.is_dir() else path.parent
    files = sorted(root.rglob("*.safetensors")) if path.is_dir() else [path]
    for file in files:
        try:
            yield file.name, safetensors_to_record(file, root)
        except ValidationError as exc:
            yield file.name, Rejected(file.name, describe_validation_error(exc))
        except (ValueError, OSError) as exc:
            yield file.name, Rejected(file.name, str(exc))
