"""Labelled query files (the format of ../shared/data/queries/*.jsonl) and their labels as row ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import psycopg


@dataclass(frozen=True)
class LabelledQuery:
    id: str
    prompt: str
    labels: frozenset[str]  # external (Civitai) ids
    topics: dict[str, list[str]]


def load_queries(path: Path, source: str = "civitai") -> list[LabelledQuery]:
    """Queries with at least one labelled adapter; labels are the union of every topic's ids."""
    queries = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                topics = {topic: [str(i) for i in ids] for topic, ids in (row.get("topics") or {}).items()}
                labels = frozenset(i for ids in topics.values() for i in ids)
                if "lora_ids" in row:  # the Civitai prompts format
                    labels = frozenset(str(i) for i in row["lora_ids"])
                prompt = row.get("prompt_no_lora") or row["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path.name}:{number}: not a labelled query ({exc})") from exc
            if labels:
                queries.append(LabelledQuery(str(row.get("id", number)), prompt, labels, topics))
    return queries


def external_to_row_ids(conn: psycopg.Connection, source: str = "civitai") -> dict[str, int]:
    return dict(conn.execute("SELECT external_id, id FROM adapters WHERE source = %s", (source,)).fetchall())
