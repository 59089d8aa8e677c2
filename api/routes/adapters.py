"""Adapter search (any caller) and catalog import (admins)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query

from loracle.api.deps import AdminDep, CallerDep, ServiceDep
from loracle.api.routes.chat import ERRORS
from loracle.api.schemas import AdapterHit, CatalogImport, ImportReportOut, RejectedOut
from loracle.db.search import SearchFilters
from loracle.tools.catalog_import import import_catalog
from loracle.tools.retrieve import retrieve

router = APIRouter(tags=["adapters"])


@router.get("/adapters/search", response_model=list[AdapterHit], responses=ERRORS)
def search_adapters(
    service: ServiceDep, caller: CallerDep,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="What the adapters should do.")],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> list[AdapterHit]:
    settings = service.settings
    filters = SearchFilters(base_models=service.base_ctx.base_models, exclude_tags=settings.exclude_tags,
                            exclude_blocklisted=True)
    with service.db.connections(settings.search_connections) as (conn, *spare):
        hits = retrieve(conn, service.base_ctx.embedder, q, strategy="rerank", k=k, filters=filters,
                        ef_search=settings.hnsw_ef_search, spare=spare)
    return [AdapterHit(id=h.adapter_id, ref=f"{h.source}:{h.external_id}", name=h.name, score=h.score,
                       base_model=h.base_model, tags=h.tags, trigger_words=h.trigger_words, why=h.explain()) for h in hits]


@router.post("/admin/catalog/import", response_model=ImportReportOut, responses={**ERRORS, 403: ERRORS[401]})
def import_adapters(body: CatalogImport, service: ServiceDep, admin: AdminDep) -> ImportReportOut:
    """Upsert catalog records (the same format as a catalog .jsonl file); invalid ones come back rejected."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in body.records) + "\n")
        report = import_catalog(service.db, path, service.base_ctx.embedder)
    return ImportReportOut(inserted=report.inserted, updated=report.updated, unchanged=report.unchanged,
                           rejected=[RejectedOut(location=r.location.replace(str(path), "records"), reason=r.reason)
                                     for r in report.rejected],
                           embedded=report.embedded, seconds=round(report.seconds, 3))
