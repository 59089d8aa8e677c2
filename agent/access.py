"""Who may see what: API keys (each bound to a tenant) and what each tenant owns (threads, runs, images).

Threads are namespaced by tenant: the CLI works as tenant 'local', an API key as its own tenant, so the
same thread id can name different threads for different tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loracle.agent.errors import NotFound, agent_errors

if TYPE_CHECKING:
    from loracle.agent.service import Agent
    from loracle.db.keys import ApiKey

LOCAL_TENANT = "local"


def create_key(agent: Agent, name: str, *, tenant: str | None = None, admin: bool = False) -> tuple[ApiKey, str]:
    """A new key and its secret (shown once; only its hash is stored). The tenant defaults to the name."""
    from loracle.db.keys import create_key as create

    with agent_errors(), agent.db.connection() as conn:
        return create(conn, name, tenant=tenant, admin=admin)


def list_keys(agent: Agent, *, include_revoked: bool = False) -> list[ApiKey]:
    from loracle.db.keys import list_keys as listed

    with agent_errors(), agent.db.connection() as conn:
        return listed(conn, include_revoked=include_revoked)


def revoke_key(agent: Agent, name: str) -> None:
    """Revoke the active key with this name at once; NotFound when there is none."""
    from loracle.db.keys import revoke_key as revoke

    with agent_errors(), agent.db.connection() as conn:
        if not revoke(conn, name):
            raise NotFound(f"no active key named {name!r}")


def any_active_key(agent: Agent) -> bool:
    """Whether a key that is not revoked exists: a server off loopback is of no use without one."""
    from loracle.db.keys import any_active_key as any_key

    with agent_errors(), agent.db.connection() as conn:
        return any_key(conn)


def any_key_created(agent: Agent) -> bool:
    """Whether a key was ever created (revoked ones count): local single-user mode ends for good with the first."""
    from loracle.db.keys import any_key_created as created

    with agent_errors(), agent.db.connection() as conn:
        return created(conn)


def shared_link_secret(agent: Agent) -> str | None:
    """The secret that signs image links, kept in the database when the images are (so a link any API replica
    made opens on every one); None with images in files (each data directory keeps its own)."""
    from loracle.db.keys import link_secret

    if agent.images.kind == "files":
        return None
    with agent_errors(), agent.db.connection() as conn:
        return link_secret(conn)


def find_key(agent: Agent, secret: str) -> ApiKey | None:
    """The active key with this secret, or None."""
    from loracle.db.keys import find_key as find

    with agent_errors(), agent.db.connection() as conn:
        return find(conn, secret)


def claim_thread(agent: Agent, tenant: str, thread_id: str) -> bool:
    """Make the thread this tenant's if it is new; True when it was created now."""
    from loracle.db.tenancy import ensure_thread

    with agent_errors(), agent.db.connection() as conn:
        return ensure_thread(conn, tenant, thread_id)


def get_thread(agent: Agent, tenant: str, thread_id: str) -> dict[str, Any]:
    """The tenant's thread (id, created_at); NotFound for another tenant's or an unknown one."""
    from loracle.db.tenancy import get_thread as get

    with agent_errors(), agent.db.connection() as conn:
        thread = get(conn, tenant, thread_id)
    if thread is None:
        raise NotFound(f"no thread {thread_id!r}")
    return thread


def thread_runs(agent: Agent, tenant: str, thread_id: str) -> list[dict[str, Any]]:
    """The thread's runs, oldest first, each with its images."""
    from loracle.db.tenancy import thread_runs as runs

    with agent_errors(), agent.db.connection() as conn:
        return runs(conn, tenant, thread_id)


def thread_tenants(agent: Agent, thread_id: str) -> list[str]:
    """Every tenant that has a thread with this id (to say which `--tenant` a lookup needs)."""
    from loracle.db.tenancy import thread_tenants as tenants

    with agent_errors(), agent.db.connection() as conn:
        return tenants(conn, thread_id)


def delete_thread(agent: Agent, tenant: str, thread_id: str) -> None:
    """Delete the tenant's thread: its runs (stopped first: a run still sampling would find no row for its
    images), image rows, checkpoints, and image files no other run shares."""
    from loracle.db.tenancy import delete_thread as delete

    get_thread(agent, tenant, thread_id)
    with agent_errors():
        agent.threads.cancel_thread(tenant, thread_id, "cancelled: the thread was deleted")
    with agent_errors(), agent.db.connection() as conn:
        orphans = delete(conn, tenant, thread_id)
    with agent_errors():
        agent.threads.delete(tenant, thread_id)
    with agent_errors():
        agent.images.remove(orphans)


def get_run(agent: Agent, tenant: str, run_id: str) -> dict[str, Any]:
    """The tenant's run with its images; NotFound for another tenant's, an unknown or a malformed id."""
    from loracle.db.tenancy import get_run_for

    with agent_errors(), agent.db.connection() as conn:
        run = get_run_for(conn, tenant, run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}")
    return run


@dataclass(frozen=True)
class StoredImage:
    """An image a run made: whose it is, its name in the image store, and the hash that names it."""

    id: str
    tenant: str
    path: str
    sha256: str


def find_image(agent: Agent, image_id: str) -> StoredImage | None:
    """The image with this id whose file (or blob) still exists (any tenant: the caller decides who may see it)."""
    from loracle.db.tenancy import get_image

    with agent_errors(), agent.db.connection() as conn:
        row = get_image(conn, image_id)
    if row is None:
        return None
    with agent_errors():
        found = agent.images.exists(row["path"])
    return StoredImage(str(row["id"]), row["tenant"], row["path"], row["sha256"]) if found else None


def stored_png(agent: Agent, path: str) -> bytes:
    """The PNG stored under `path` (an image row's or an upload's); NotFound when it is gone."""
    try:
        with agent_errors():
            return agent.images.read(path)
    except FileNotFoundError:
        raise NotFound(f"no stored image {path!r}") from None

