"""Dependencies as `Annotated` aliases, so routes read `service: ServiceDep, caller: CallerDep`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from loracle.api.auth import authenticate, authenticate_basic
from loracle.api.errors import ApiError
from loracle.api.service import Principal, Service

_bearer = HTTPBearer(auto_error=False, description="An API key from `loracle keys create`.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key, for clients without bearer auth.")
_basic = HTTPBasic(auto_error=False, description="A1111's --api-auth: the key's name as the user, the key as the password.")


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_caller(
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
    basic: Annotated[HTTPBasicCredentials | None, Security(_basic)],
) -> Principal:
    # A sync dependency: FastAPI runs it in the thread pool, so the key lookup never blocks the loop.
    secret = (bearer.credentials if bearer else None) or header
    if secret is None and basic is not None:
        return authenticate_basic(service, basic.username, basic.password)
    return authenticate(service, secret)


CallerDep = Annotated[Principal, Depends(get_caller)]


def get_admin(caller: CallerDep) -> Principal:
    if not caller.admin:
        raise ApiError(403, "this needs an admin key (`loracle keys create --admin`)", code="admin_required")
    return caller


AdminDep = Annotated[Principal, Depends(get_admin)]


def get_optional_caller(
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> Principal | None:
    """For signed image links: no key is fine (the signature decides), a wrong key is still 401."""
    secret = (bearer.credentials if bearer else None) or header
    try:
        return authenticate(service, secret)
    except ApiError:
        if secret:
            raise
        return None


OptionalCallerDep = Annotated[Principal | None, Depends(get_optional_caller)]
