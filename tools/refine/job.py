"""The resumable batch refine over the catalog: skip rows whose inputs are unchanged, write as it goes,
bound the number of model calls in flight, then re-embed what changed.

A row is up to date when its stored `refine_hash` equals the hash of its current inputs and refiner,
so an interrupted run resumes where it stopped and a rerun costs nothing. Model answers are also
cached by that hash (db.refine_cache), so switching refiners back and forth pays once.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.language_models import BaseChatModel
from tqdm import tqdm

from loracle.db import Database
from loracle.db.refine import RefinedRow, cached_answers, refine_inputs, store_answers, write_refinements
from loracle.tools.embedder import Embedder
from loracle.tools.refine.models import Refinement
from loracle.tools.refine.offline import REFINED_BY as OFFLINE
from loracle.tools.refine.offline import refine_offline

REFINER_VERSION = "1"
CHUNK = 500  # rows per write: an interrupted run keeps every chunk it finished
LLM_CHUNK = 32
_HASHED = ("name", "base_model", "tags", "trigger_words", "description", "example_prompts", "file_name", "example_images")


@dataclass
class RefineReport:
    refined_by: str
    considered: int = 0
    up_to_date: int = 0
    refined: int = 0
    llm_calls: int = 0
    from_cache: int = 0
    fallbacks: int = 0
    notes: list[str] = field(default_factory=list)
    refine_seconds: float = 0.0
    embedded: int = 0
    embed_seconds: float = 0.0

    def summary(self) -> str:
        text = (
            f"refined {self.refined} of {self.considered} adapters with {self.refined_by} "
            f"({self.up_to_date} already up to date) in {self.refine_seconds:.1f} s"
        )
        if self.refined_by != OFFLINE:
            text += f"; {self.llm_calls} model calls, {self.from_cache} from cache, {self.fallbacks} fell back to offline"
        return text + f"; re-embedded {self.embedded} texts in {self.embed_seconds:.1f} s"


def input_hash(card: dict[str, Any], refiner: str) -> str:
    """Hash of what the refiner reads plus which refiner (and version) reads it."""
    payload = {key: card.get(key) for key in _HASHED} | {"refiner": f"{refiner}:{REFINER_VERSION}"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:40]


def _row(refinement: Refinement) -> RefinedRow:
    return RefinedRow(
        adapter_id=refinement.adapter_id,
        refined_description=refinement.description,
        category=refinement.category,
        recommended_weight=refinement.weight,
        weight_source=refinement.weight_source,
        clean_trigger_words=refinement.trigger_words,
        refined_by=refinement.refined_by,
        refine_hash=refinement.input_hash,
        refine_note=refinement.note,
    )


def _refine_chunk_llm(
    db: Database, chunk: list[tuple[dict, str]], chat_model: BaseChatModel, name: str, concurrency: int,
    max_images: int, report: RefineReport, bar: tqdm,
) -> list[Refinement]:
    from loracle.tools.refine.llm import from_answer, refine_with_llm, structured

    with db.connection() as conn:
        cached = cached_answers(conn, name, [digest for _, digest in chunk])
    results: list[Refinement] = []
    todo = []
    for card, digest in chunk:
        if digest in cached:
            results.append(from_answer(card, refine_offline(card, digest), cached[digest], name))
            report.from_cache += 1
            bar.update(1)
        else:
            todo.append((card, digest))
    runnable = structured(chat_model)
    fresh: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        answers = pool.map(lambda item: refine_with_llm(item[0], runnable, item[1], name=name, max_images=max_images), todo)
        for (card, _), (refinement, answer) in zip(todo, answers):
            report.llm_calls += 1
            bar.update(1)
            results.append(_settle(card, refinement, answer, report, fresh))
    with db.connection() as conn:
        store_answers(conn, name, fresh)
    return results


def _settle(card: dict, refinement: Refinement, answer: dict | None, report: RefineReport, fresh: dict[str, dict]) -> Refinement:
    """Record a model answer for the cache, or a fallback (under the offline hash, so it is retried)."""
    if answer is None:
        refinement = replace(refinement, input_hash=input_hash(card, OFFLINE))
        report.fallbacks += 1
        if len(report.notes) < 20:
            report.notes.append(f"adapter {card['id']}: {refinement.note}")
    else:
        fresh[refinement.input_hash] = answer
    return refinement


def refine_catalog(
    db: Database,
    *,
    chat_model: BaseChatModel | None = None,
    embedder: Embedder | None = None,
    limit: int | None = None,
    only_missing: bool = False,
    concurrency: int = 4,
    max_images: int = 3,
    progress: bool = False,
) -> RefineReport:
    """Refine every adapter whose inputs changed (or only those never refined), then re-embed them."""
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    name = OFFLINE
    if chat_model is not None:
        from loracle.tools.refine.llm import model_name

        name = model_name(chat_model)
    report = RefineReport(refined_by=name)
    started = time.perf_counter()
    with db.connection() as conn:
        cards = refine_inputs(conn, only_missing=only_missing)
    report.considered = len(cards)
    todo: list[tuple[dict, str]] = []
    for card in cards:
        digest = input_hash(card, name)
        if card["refine_hash"] == digest:
            report.up_to_date += 1
        else:
            todo.append((card, digest))
    todo = todo[:limit] if limit else todo
    changed: list[int] = []
    bar = tqdm(total=len(todo), desc=f"refining ({name})", unit="adapter", disable=not progress or not todo)
    size = CHUNK if chat_model is None else LLM_CHUNK
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        if chat_model is None:
            refinements = [refine_offline(card, digest) for card, digest in chunk]
            bar.update(len(chunk))
        else:
            refinements = _refine_chunk_llm(db, chunk, chat_model, name, concurrency, max_images, report, bar)
        with db.connection() as conn:
            report.refined += write_refinements(conn, [_row(r) for r in refinements])
        changed.extend(r.adapter_id for r in refinements)
    bar.close()
    report.refine_seconds = time.perf_counter() - started
    if embedder is not None and changed:
        from loracle.tools.embed_sync import sync_embeddings

        embed_started = time.perf_counter()
        report.embedded = sync_embeddings(db, embedder, changed, progress=progress)
        report.embed_seconds = time.perf_counter() - embed_started
    if changed:
        from loracle.db.catalog import vacuum_catalog

        with db.connection() as conn:
            vacuum_catalog(conn)
    return report
