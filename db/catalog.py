"""Adapter records and their storage: upsert by (source, external id), look-ups and counts."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_DESCRIPTION_CHARS = 20_000
MAX_PROMPT_CHARS = 2_000
MAX_LIST_ITEMS = 200
MAX_NAME_CHARS = 200  # names are pasted into chat answers; the shared Civitai catalog's longest is 177
_LINE_BREAKS = str.maketrans({"\t": " ", "\n": " ", "\r": " "})

WeightSource = Literal["card", "examples", "llm", "default", "metadata"]


def _clean_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; everything else is kept as written.
    return value.replace("\x00", "").strip()


def escapes_folder(name: str) -> bool:
    """Whether a file name could reach outside the folder it is looked up in (absolute, a drive, or '..')."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or name[1:2] == ":"


def _one_line(value: str) -> str:
    """A short field shown in answers: tabs and line breaks become spaces, any other control character is refused
    (it would garble a terminal or a chat answer)."""
    value = value.translate(_LINE_BREAKS)
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c != "\x00"), None)
    if bad is not None:
        raise ValueError(f"holds the control character U+{ord(bad):04X}")
    return value


class AdapterRecord(BaseModel):
    """One adapter as every importer produces it, validated before it touches the database."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    source: str = Field(min_length=1, max_length=200)
    external_id: str = Field(min_length=1, max_length=200)
    version_id: str | None = None
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    base_model: str | None = Field(default=None, max_length=100)
    tags: list[str] = Field(default_factory=list)
    trigger_words: list[str] = Field(default_factory=list)
    description: str = ""
    refined_description: str | None = None
    category: str | None = None
    recommended_weight: float | None = Field(default=None, ge=-20.0, le=20.0)
    weight_source: WeightSource | None = None
    example_prompts: list[str] = Field(default_factory=list)
    file_name: str | None = None
    file_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    file_size_kb: float | None = Field(default=None, ge=0)
    download_url: str | None = None
    local_path: str | None = None
    downloads: int | None = Field(default=None, ge=0)
    favorites: int | None = Field(default=None, ge=0)
    rating: float | None = None
    rating_count: int | None = Field(default=None, ge=0)
    blocklisted: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None

    @field_validator("name", "description", "refined_description", "base_model", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _clean_text(value) if isinstance(value, str) else value

    @field_validator("source", "external_id", "name", "base_model", "category", "file_name", "local_path",
                     mode="before")
    @classmethod
    def _short_text(cls, value: Any) -> Any:
        return _one_line(value) if isinstance(value, str) else value

    @field_validator("file_name", "local_path")
    @classmethod
    def _plain_file_name(cls, value: str | None) -> str | None:
        if value and escapes_folder(value):
            raise ValueError("must name a file inside the adapter folders (no absolute path, no '..')")
        return value

    @field_validator("description")
    @classmethod
    def _cap_description(cls, value: str) -> str:
        return value[:MAX_DESCRIPTION_CHARS]

    @field_validator("tags", "trigger_words", "example_prompts", mode="before")
    @classmethod
    def _text_list(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("must be a list of strings")
        cleaned: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"must be a list of strings, found {type(item).__name__}")
            text = _clean_text(item)[:MAX_PROMPT_CHARS]
            text = text if info.field_name == "example_prompts" else _one_line(text).strip()
            if text and text not in cleaned:
                cleaned.append(text)
        return cleaned[:MAX_LIST_ITEMS]

    @field_validator("tags")
    @classmethod
    def _lower_tags(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(tag.lower() for tag in value))

    @field_validator("file_sha256", mode="before")
    @classmethod
    def _lower_hash(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def content_hash(self) -> str:
        """A stable hash of everything stored, so an unchanged re-import writes nothing."""
        payload = self.model_dump(mode="json")
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_COLUMNS = [name for name in AdapterRecord.model_fields]


def existing_hashes(conn: psycopg.Connection, source: str, external_ids: list[str]) -> dict[str, tuple[int, str]]:
    """external_id -> (row id, content hash) for the given ids of one source."""
    rows = conn.execute(
        "SELECT external_id, id, content_hash FROM adapters WHERE source = %s AND external_id = ANY(%s)",
        (source, external_ids),
    ).fetchall()
    return {ext: (row_id, digest) for ext, row_id, digest in rows}


def upsert_adapters(conn: psycopg.Connection, records: Iterable[AdapterRecord]) -> dict[str, int]:
    """Insert or update records by (source, external_id); returns external_id -> row id."""
    placeholders = ", ".join(["%s"] * (len(_COLUMNS) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c not in ("source", "external_id"))
    sql = (
        f"INSERT INTO adapters ({', '.join(_COLUMNS)}, content_hash) VALUES ({placeholders}) "
        f"ON CONFLICT (source, external_id) DO UPDATE SET {updates}, "
        "content_hash = EXCLUDED.content_hash, updated_at = now() RETURNING external_id, id"
    )
    ids: dict[str, int] = {}
    with conn.cursor() as cur:
        params = []
        for record in records:
            values = [getattr(record, c) for c in _COLUMNS]
            values[_COLUMNS.index("extra")] = Jsonb(record.extra)
            params.append((*values, record.content_hash()))
        if not params:
            return ids
        cur.executemany(sql, params, returning=True)
        while True:
            row = cur.fetchone()
            if row:
                ids[row[0]] = row[1]
            if not cur.nextset():
                break
    return ids


def count_adapters(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM adapters").fetchone()[0]


ADAPTER_CARD_COLUMNS = (
    "id, source, external_id, name, base_model, tags, trigger_words, description, refined_description, "
    "category, recommended_weight, weight_source, example_prompts, file_name, file_sha256, download_url, "
    "local_path, downloads, blocklisted"
)


def get_adapters(conn: psycopg.Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Full cards for the given row ids, keyed by id."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(f"SELECT {ADAPTER_CARD_COLUMNS} FROM adapters WHERE id = ANY(%s)", (ids,)).fetchall()
    return {row["id"]: row for row in rows}


def vacuum_catalog(conn: psycopg.Connection) -> None:
    """VACUUM (ANALYZE) what searches read after bulk writes: fresh planner statistics, and the visibility
    map that lets the lexical list read postings and filter columns by index-only scans (migration 008)."""
    for table in ("adapters", "adapter_terms", "adapter_embeddings"):
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))


def get_card_heads(conn: psycopg.Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The short fields of cards, keyed by id: what a search hit carries and what the reranker matches words
    against. Hundreds of candidates per prompt, so full cards (descriptions up to 1 MB, example prompts) would
    be most of the read: 150 full cards took ~15 ms, most of a top-150 search."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(
            "SELECT id, source, external_id, name, base_model, tags, trigger_words, recommended_weight FROM adapters"
            " WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    return {row["id"]: row for row in rows}


def find_adapters(conn: psycopg.Connection, refs: list[str]) -> dict[str, dict[str, Any]]:
    """Resolve user references (external id such as a Civitai model id, or file sha256) to adapter cards."""
    found: dict[str, dict[str, Any]] = {}
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        for ref in refs:
            row = cur.execute(
                f"SELECT {ADAPTER_CARD_COLUMNS} FROM adapters WHERE external_id = %s OR file_sha256 = lower(%s) "
                "ORDER BY (external_id = %s) DESC, id LIMIT 1",
                (ref, ref, ref),
            ).fetchone()
            if row:
                found[ref] = row
    return found


def set_local_path(conn: psycopg.Connection, adapter_id: int, local_path: str) -> None:
    conn.execute("UPDATE adapters SET local_path = %s, updated_at = now() WHERE id = %s", (local_path, adapter_id))


def adapters_by_file(conn: psycopg.Connection, names: list[str], paths: list[str]) -> list[dict[str, Any]]:
    """Cards whose file name is one of `names` or whose local path is one of `paths` (files found on disk)."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(f"SELECT {ADAPTER_CARD_COLUMNS} FROM adapters WHERE file_name = ANY(%s) OR local_path = ANY(%s)"
                           " ORDER BY id", (names, paths)).fetchall()
