"""GET /v1/models: the agent and the base model it runs on."""

from __future__ import annotations

from fastapi import APIRouter

from loracle.api.deps import CallerDep, ServiceDep
from loracle.api.routes.chat import ERRORS, model_ids
from loracle.api.schemas import ModelCard, ModelList

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", response_model=ModelList, responses={401: ERRORS[401]})
def list_models(service: ServiceDep, caller: CallerDep) -> ModelList:
    created = service.started_at
    return ModelList(data=[ModelCard(id=m, created=created) for m in model_ids(service)])
