"""Readers that turn catalog sources into validated AdapterRecords, reporting bad entries by location.

Supported: loracle/shared catalog JSONL, raw Civitai `/api/v1/models` records (JSON or JSONL, single
records, lists or API pages with `items`), and folders of `.safetensors` LoRA files with sidecars.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loracle.db.catalog import AdapterRecord
from loracle.tools.importers.base import Rejected, describe_validation_error
from loracle.tools.importers.civitai import civitai_model_to_record, is_civitai_model
from loracle.tools.importers.jsonl_catalog import catalog_line_to_record
from loracle.tools.importers.safetensors_dir import iter_safetensors_records

Parsed = tuple[str, AdapterRecord | Rejected]  # (location, outcome)


def record_from_object(obj: Any) -> AdapterRecord:
    """Dispatch one JSON object to the right format; raises ValueError / ValidationError with a reason."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
    if is_civitai_model(obj):
        return civitai_model_to_record(obj)
    return catalog_line_to_record(obj)


def _parse_object(obj: Any, location: str) -> Parsed:
    try:
        return location, record_from_object(obj)
    except ValidationError as exc:
        return location, Rejected(location, describe_validation_error(exc))
    except (ValueError, TypeError, KeyError) as exc:
        return location, Rejected(location, str(exc) or type(exc).__name__)


def iter_jsonl(path: Path) -> Iterator[Parsed]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            location = f"{path.name}:{number}"
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield location, Rejected(location, f"invalid UTF-8 at byte {exc.start}")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield location, Rejected(location, f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            yield _parse_object(obj, location)


def iter_json_document(path: Path) -> Iterator[Parsed]:
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        yield path.name, Rejected(path.name, f"not a JSON document: {exc}")
        return
    items = obj.get("items") if isinstance(obj, dict) and "items" in obj else obj
    if isinstance(items, list):
        for index, item in enumerate(items):
            yield _parse_object(item, f"{path.name}[{index}]")
    else:
        yield _parse_object(items, path.name)


def iter_source(path: Path) -> Iterator[Parsed]:
    """Every record (or rejection) in a file or folder, in a stable order."""
    if not path.exists():
        raise FileNotFoundError(f"catalog source not found: {path}")
    if path.is_dir():
        yield from iter_safetensors_records(path)
    elif path.suffix == ".json":
        yield from iter_json_document(path)
    elif path.suffix == ".safetensors":
        yield from iter_safetensors_records(path)
    else:
        yield from iter_jsonl(path)
