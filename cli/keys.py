"""`loracle keys create|list|revoke`: API keys for the HTTP service (the secret is shown once)."""

from __future__ import annotations

import typer

from loracle.agent.settings import get_settings
from loracle.cli.context import fail, open_database

app = typer.Typer(no_args_is_help=True, help="API keys for `loracle serve`.")


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="A label for the key (unique among active keys)."),
    tenant: str = typer.Option(None, "--tenant", help="Whose threads and images it sees (default: the name)."),
    admin: bool = typer.Option(False, "--admin", help="May import catalogs."),
) -> None:
    """Create a key and print its secret (only its hash is stored)."""
    from loracle.db.keys import create_key

    with open_database(get_settings()) as db, db.connection() as conn:
        try:
            key, secret = create_key(conn, name, tenant=tenant, admin=admin)
        except ValueError as exc:
            raise fail(str(exc)) from None
    typer.echo(secret)
    typer.echo(f"key {key.name!r} for tenant {key.tenant!r}{' (admin)' if key.admin else ''}; "
               "store the secret now, it is not shown again", err=True)


@app.command("list")
def list_(include_revoked: bool = typer.Option(False, "--all", help="Show revoked keys too.")) -> None:
    """The keys (names, tenants, prefixes; never secrets)."""
    from loracle.db.keys import list_keys

    with open_database(get_settings()) as db, db.connection() as conn:
        keys = list_keys(conn, include_revoked=include_revoked)
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        typer.echo(f"{key.name}\ttenant={key.tenant}\t{key.prefix}…\t{'admin' if key.admin else 'user'}\t{state}")


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The key's name.")) -> None:
    """Revoke a key at once (the next request with it gets 401)."""
    from loracle.db.keys import revoke_key

    with open_database(get_settings()) as db, db.connection() as conn:
        if not revoke_key(conn, name):
            raise fail(f"no active key named {name!r}")
    typer.echo(f"revoked {name!r}")
