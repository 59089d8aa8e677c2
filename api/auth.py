"""API-key authentication: a key names its tenant; no key at all is the local single-user mode, allowed
only when the server is bound to loopback and no key has been created."""

from __future__ import annotations

from loracle.agent.access import LOCAL_TENANT, any_active_key, find_key
from loracle.api.errors import ApiError
from loracle.api.service import Principal, Service

LOCAL = Principal(tenant=LOCAL_TENANT, key_name="local", admin=True)


def authenticate(service: Service, secret: str | None) -> Principal:
    """The caller for this secret, or 401 with what to do about it."""
    if secret:
        key = find_key(service.agent, secret)
        if key is None:
            raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
        return Principal(tenant=key.tenant, key_name=key.name, admin=key.admin)
    if service.allow_local and not any_active_key(service.agent):
        return LOCAL
    raise ApiError(401, "an API key is required: send 'Authorization: Bearer KEY' (create one with "
                        "`loracle keys create --name NAME`)", code="missing_api_key")
