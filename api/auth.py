"""API-key authentication: a key names its tenant (a bearer token, an X-API-Key header, or HTTP Basic
name:key for A1111 clients). Without keys the service runs in local single-user mode,
only while it is bound to loopback and no key was ever created on its database: revoking every key leaves it
requiring keys (it fails closed). In local mode any bearer value is accepted, as local OpenAI-compatible servers
do, so clients that must send a key (the official `openai` client) work with any."""

from __future__ import annotations

from loracle.agent.access import LOCAL_TENANT, any_key_created, find_key
from loracle.api.errors import ApiError
from loracle.api.service import Principal, Service

LOCAL = Principal(tenant=LOCAL_TENANT, key_name="local", admin=True)


def local_mode(service: Service) -> bool:
    """Whether requests are served without keys: a loopback bind, and no key created yet (once one has been,
    the answer stays no for the life of the process without asking the database again)."""
    if not service.allow_local or service.keys_created:
        return False
    if any_key_created(service.agent):
        service.keys_created = True
        return False
    return True


def authenticate(service: Service, secret: str | None) -> Principal:
    """The caller for this secret, or 401 with what to do about it."""
    if local_mode(service):
        return LOCAL
    if secret:
        key = find_key(service.agent, secret)
        if key is None:
            raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
        return Principal(tenant=key.tenant, key_name=key.name, admin=key.admin)
    raise ApiError(401, "an API key is required: send 'Authorization: Bearer KEY' (create one with "
                        "`loracle keys create --name NAME`)", code="missing_api_key")


def authenticate_basic(service: Service, username: str, password: str) -> Principal:
    """HTTP Basic as A1111's `--api-auth user:password` does it: the user is an API key's name, the password
    the key itself; anything else is 401 with a Basic challenge."""
    key = find_key(service.agent, password) if password else None
    if key is None or key.name != username:
        raise ApiError(401, "incorrect username or password: send an API key's name as the user and the key as the "
                            "password", code="invalid_api_key", headers={"WWW-Authenticate": "Basic"})
    return Principal(tenant=key.tenant, key_name=key.name, admin=key.admin)
