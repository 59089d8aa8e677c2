"""Raw Civitai `/api/v1/models` records: pick the version Stylus would, and flatten it to an AdapterRecord."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

from loracle.db.catalog import AdapterRecord

SOURCE = "civitai"
LORA_TYPES = {"LORA", "LoCon", "DoRA"}
MAX_EXAMPLE_PROMPTS = 5


class _TextExtractor(HTMLParser):
    _BLOCKS = {"p", "br", "li", "div", "h1", "h2", "h3", "h4", "tr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self._BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag in self._BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str | None) -> str:
    """Model-card HTML to plain text: tags and scripts dropped, entities unescaped, whitespace collapsed."""
    if not markup:
        return ""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return re.sub(r"\s+", " ", html.unescape("".join(parser.parts))).strip()


def is_civitai_model(obj: dict[str, Any]) -> bool:
    return "modelVersions" in obj


def _pick_version(versions: list[dict[str, Any]]) -> dict[str, Any]:
    """Newest SD 1.5 version with a .safetensors file, else the newest with any file (the shared data's rule)."""
    with_files = [v for v in versions if isinstance(v, dict) and v.get("files")]
    for version in with_files:
        names = [f.get("name", "") for f in version["files"] if isinstance(f, dict)]
        if version.get("baseModel") == "SD 1.5" and any(n.endswith(".safetensors") for n in names):
            return version
    if with_files:
        return with_files[0]
    if versions and isinstance(versions[0], dict):
        return versions[0]
    raise ValueError("modelVersions is empty")


def _primary_file(version: dict[str, Any]) -> dict[str, Any]:
    files = [f for f in version.get("files") or [] if isinstance(f, dict)]
    for file in files:
        if file.get("primary"):
            return file
    return files[0] if files else {}


def _example_prompts(version: dict[str, Any]) -> list[str]:
    prompts: list[str] = []
    for image in version.get("images") or []:
        if not isinstance(image, dict) or image.get("nsfw") not in (None, False, "None"):
            continue
        meta = image.get("meta") or {}
        prompt = meta.get("prompt") if isinstance(meta, dict) else None
        if isinstance(prompt, str) and prompt.strip() and prompt not in prompts:
            prompts.append(prompt[:500])
    return prompts[:MAX_EXAMPLE_PROMPTS]


def _tag_names(tags: Any) -> list[str]:
    if not isinstance(tags, list):
        return []
    return [t["name"] if isinstance(t, dict) else t for t in tags if isinstance(t, (str, dict))]


def civitai_model_to_record(obj: dict[str, Any]) -> AdapterRecord:
    if "id" not in obj or "name" not in obj:
        raise ValueError("missing required field 'id' or 'name'")
    if obj.get("type") not in LORA_TYPES:
        raise ValueError(f"type {obj.get('type')!r} is not a LoRA")
    if obj.get("nsfw") is True:
        raise ValueError("flagged NSFW by Civitai")
    versions = obj.get("modelVersions")
    if not isinstance(versions, list):
        raise ValueError("modelVersions: expected a list")
    version = _pick_version(versions)
    file = _primary_file(version)
    hashes = file.get("hashes") or {}
    stats = obj.get("stats") or {}
    description = html_to_text(obj.get("description")) or html_to_text(version.get("description"))
    return AdapterRecord(
        source=SOURCE,
        external_id=str(obj["id"]),
        version_id=str(version["id"]) if version.get("id") is not None else None,
        name=obj["name"],
        base_model=version.get("baseModel"),
        tags=_tag_names(obj.get("tags")),
        trigger_words=version.get("trainedWords") or [],
        description=description,
        example_prompts=_example_prompts(version),
        file_name=file.get("name"),
        file_sha256=hashes.get("SHA256"),
        file_size_kb=file.get("sizeKB"),
        download_url=file.get("downloadUrl") or version.get("downloadUrl"),
        downloads=stats.get("downloadCount"),
        favorites=stats.get("favoriteCount"),
        rating=stats.get("rating"),
        rating_count=stats.get("ratingCount"),
        created_at=version.get("createdAt"),
        extra={"creator": (obj.get("creator") or {}).get("username")} if isinstance(obj.get("creator"), dict) else {},
    )
