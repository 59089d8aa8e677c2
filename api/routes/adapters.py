"""Adapter search (any caller) and catalog import (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from loracle.agent import catalog
from loracle.agent.errors import InvalidInput
from loracle.api.deps import AdminDep, CallerDep, ServiceDep
from loracle.api.errors import ApiError
from loracle.api.routes.chat import ERRORS
from loracle.api.schemas import AdapterHit, CatalogImport, ImportReportOut, RejectedOut

router = APIRouter(tags=["adapters"])


@router.get("/adapters/search", response_model=list[AdapterHit], responses=ERRORS)
def search_adapters(
    service: ServiceDep, caller: CallerDep,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="What the adapters should do.")],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> list[AdapterHit]:
    try:
        hits = catalog.search(service.agent, q, k=k)
    except InvalidInput as exc:
        raise ApiError(400, str(exc), code="invalid_value", param="q") from None
    return [AdapterHit(id=h.adapter_id, ref=f"{h.source}:{h.external_id}", name=h.name, score=h.score,
                       base_model=h.base_model, tags=h.tags, trigger_words=h.trigger_words, why=h.explain()) for h in hits]


@router.post("/admin/catalog/import", response_model=ImportReportOut, responses={**ERRORS, 403: ERRORS[401]})
def import_adapters(body: CatalogImport, service: ServiceDep, admin: AdminDep) -> ImportReportOut:
    """Upsert catalog records (the same format as a catalog .jsonl file); invalid ones come back rejected."""
    report = catalog.import_records(service.agent, body.records)
    return ImportReportOut(inserted=report.inserted, updated=report.updated, unchanged=report.unchanged,
                           rejected=[RejectedOut(location=r.location, reason=r.reason) for r in report.rejected],
                           embedded=report.embedded, seconds=round(report.seconds, 3))
