"""The catalog as the agent and the front ends use it: search it, import into it, refine and embed it,
download adapter files. Each recipe lives here once; the graph, the API and the CLI call it.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loracle.agent.errors import AdapterProblem, InvalidInput, NotFound, agent_errors
from loracle.agent.folders import Folders, install_folders, link_folders
from loracle.agent.settings import Settings
from loracle.db import Database

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from loracle.agent.service import Agent
    from loracle.tools.catalog_import import ImportReport
    from loracle.tools.embedder import Embedder
    from loracle.tools.refine.job import RefineReport
    from loracle.tools.retrieve import Hit


def search_catalog(db: Database, embedder: Embedder, settings: Settings, texts: Sequence[str], *, k: int,
                   base_models: list[str] | None, strategy: str = "rerank", include_all: bool = False,
                   exclude_ids: Sequence[int] = ()) -> dict[str, list[Hit]]:
    """Ranked adapters for each text (keyed by the stripped text; empty texts are left out).

    Filtered as every caller must: to `base_models` (the engine's; None: any), without the tags in
    `settings.exclude_tags`, blocklisted and quarantined adapters unless `include_all`, and without `exclude_ids`.
    The ranked lists are spread over `settings.search_connections` connections.
    """
    from loracle.db.quarantine import quarantined_ids
    from loracle.tools.retrieve import STRATEGIES, SearchFilters, retrieve_for_tasks

    if strategy not in STRATEGIES:
        raise InvalidInput(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}", field="strategy")
    with agent_errors(), db.connections(settings.search_connections) as (conn, *spare):
        excluded = list(exclude_ids) + ([] if include_all else quarantined_ids(conn))
        filters = SearchFilters(base_models=base_models, exclude_tags=[] if include_all else settings.exclude_tags,
                                exclude_blocklisted=not include_all, exclude_ids=excluded)
        return retrieve_for_tasks(conn, embedder, list(texts), strategy=strategy, k=k, filters=filters,
                                  ef_search=settings.hnsw_ef_search, spare=spare)


def search(agent: Agent, text: str, *, k: int = 10, strategy: str = "rerank", base_models: list[str] | None = None,
           include_all: bool = False) -> list[Hit]:
    """The top k adapters for one prompt, for the engine's base models unless `base_models` names others."""
    if not text.strip():
        raise InvalidInput("the prompt is empty", field="prompt")
    found = search_catalog(agent.db, agent.embedder, agent.settings, [text], k=k, strategy=strategy,
                           base_models=base_models or agent.base_models, include_all=include_all)
    return found[text.strip()]


def ensure_world_catalog(db: Database, settings: Settings, embedder: Embedder | None = None) -> ImportReport | None:
    """When the bundled world is the base model, its adapters must be in the catalog before the first turn:
    imported the first time, a no-op (nothing to embed) afterwards. None for any other base model."""
    from loracle.agent.runtime import resolve_base
    from loracle.tools.catalog_import import import_catalog
    from loracle.tools.embedder import get_embedder

    catalog = resolve_base(settings).catalog
    if catalog is None or not catalog.exists():
        return None
    with agent_errors():
        return import_catalog(db, catalog, embedder or get_embedder(settings.embedding_model))


def import_file(agent: Agent, path: Path, *, embed: bool = True, ray: str | None = None,
                progress: bool = False) -> tuple[ImportReport, int]:
    """Import a catalog JSONL, a Civitai API dump, a folder of .safetensors, or an A1111 / Forge / ComfyUI install
    (its LoRA folders imported with their sidecars, its LoRA and checkpoint folders linked, agent/folders.py); the
    report and the catalog's size. `ray`: embed as a Ray Data job on the cluster at that address (the same vectors)."""
    from loracle.db.catalog import count_adapters
    from loracle.tools.catalog_import import import_catalog

    if not path.exists():
        raise InvalidInput(f"no such file or folder: {path}", field="path")
    install = install_folders(path) if path.is_dir() else Folders()
    with agent_errors():
        embedder = _bulk_embedder(agent, ray) if embed else None
        reports = [import_catalog(agent.db, folder, embedder, progress=progress) for folder in install.loras or [path]]
        if install:
            link_folders(agent.settings.home, install)
        with agent.db.connection() as conn:
            return merge_reports(reports), count_adapters(conn)


def merge_reports(reports: list[ImportReport]) -> ImportReport:
    """One report for imports of several folders."""
    from loracle.tools.catalog_import import ImportReport

    return ImportReport(inserted=sum(r.inserted for r in reports), updated=sum(r.updated for r in reports),
                        unchanged=sum(r.unchanged for r in reports), rejected=[x for r in reports for x in r.rejected],
                        embedded=sum(r.embedded for r in reports), seconds=sum(r.seconds for r in reports))


def _bulk_embedder(agent: Agent, ray: str | None) -> Embedder:
    """The agent's embedder, or Ray Data's over the cluster at `ray` for a bulk job."""
    if ray is None:
        return agent.embedder
    from loracle.agent.placement import bulk_embedder

    try:
        return bulk_embedder(agent.settings, ray)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="ray") from None


def import_records(agent: Agent, records: list[dict[str, Any]]) -> ImportReport:
    """Import records given in the catalog JSONL format; a rejected one's location reads `records:N`."""
    from loracle.tools.catalog_import import import_catalog

    with tempfile.TemporaryDirectory() as folder, agent_errors():
        path = Path(folder) / "upload.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
        report = import_catalog(agent.db, path, agent.embedder)
    # the temporary file's path means nothing to the caller
    report.rejected = [dataclasses.replace(r, location=r.location.replace(str(path), "records")) for r in report.rejected]
    return report


@dataclass(frozen=True)
class Quarantined:
    """An adapter left out of retrieval, and why (its catalog record or its file needs fixing)."""

    id: int
    ref: str
    name: str
    reason: str


def check_catalog(agent: Agent) -> tuple[int, list[Quarantined]]:
    """Check again the files of quarantined adapters: the quarantine of those now fixed (and of records changed
    since) is lifted. How many were lifted, and the adapters still quarantined."""
    from loracle.db.quarantine import lift, list_quarantined
    from loracle.tools.adapter_files import locate_adapter

    dirs = _adapter_dirs(agent)
    with agent_errors(), agent.db.connection() as conn:
        rows = list_quarantined(conn)
        fixed = [r["id"] for r in rows if locate_adapter(r["local_path"], r["file_name"], dirs).file is not None
                 and not r["reason"].startswith("it shares its file")]
        lifted = lift(conn, fixed)
        left = [Quarantined(r["id"], f"{r['source']}:{r['external_id']}", r["name"], r["reason"])
                for r in list_quarantined(conn)]
    return lifted, left


def _adapter_dirs(agent: Agent) -> list[Path]:
    """The adapter folders the configured base model reads (its bundled ones first), without loading it."""
    from loracle.agent.runtime import resolve_base

    with agent_errors():
        return resolve_base(agent.settings).adapter_dirs


def embed_pending(agent: Agent, *, progress: bool = False) -> int:
    """Embed every adapter text that is new or changed; how many texts."""
    from loracle.tools.embed_sync import sync_embeddings

    with agent_errors():
        return sync_embeddings(agent.db, agent.embedder, progress=progress)


def refine(agent: Agent, *, chat_model: BaseChatModel | None, embed: bool = True, ray: str | None = None,
           limit: int | None = None, only_missing: bool = False, max_images: int = 3, progress: bool = False) -> RefineReport:
    """Refine adapter docs with the chat model (None: the offline refiner), then re-embed what changed
    (`ray`: as a Ray Data job on the cluster at that address)."""
    from loracle.tools.refine.job import refine_catalog

    with agent_errors():
        return refine_catalog(agent.db, chat_model=chat_model, embedder=_bulk_embedder(agent, ray) if embed else None, limit=limit,
                              only_missing=only_missing, concurrency=agent.settings.llm_concurrency,
                              max_images=max_images, progress=progress)


@dataclass(frozen=True)
class Fetched:
    """One adapter file in LORACLE_HOME/adapters: how it got there (downloaded, resumed, present, unverified)."""

    ref: str
    path: Path
    status: str


def fetch_files(agent: Agent, refs: list[str], *, token: str | None = None,
                on_progress: Callable[[str, int, int | None], None] | None = None) -> Iterator[Fetched | NotFound | AdapterProblem]:
    """Download each adapter's file (sha256-verified against the catalog, resumable) and remember where it is.

    Yields, in order, what became of each ref: a Fetched, or the error that stopped it (the others go on).
    `on_progress(name, bytes_done, bytes_total)` follows the download in flight."""
    from loracle.db.catalog import find_adapters, set_local_path
    from loracle.tools.fetch import FetchError, fetch_adapter_file

    with agent_errors(), agent.db.connection() as conn:
        cards = find_adapters(conn, refs)
    for ref in refs:
        card = cards.get(ref)
        if card is None:
            yield NotFound(f"{ref}: not in the catalog")
            continue
        name = card["name"]
        try:
            with agent_errors():
                result = fetch_adapter_file(card, agent.settings.adapters_dir, token=token,
                                            on_progress=(lambda done, total: on_progress(name, done, total)) if on_progress else None)
        except FetchError as exc:
            yield AdapterProblem(str(exc))
            continue
        with agent_errors(), agent.db.connection() as conn:
            set_local_path(conn, card["id"], result.path.name)
        yield Fetched(result.ref, result.path, result.status)
