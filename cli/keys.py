"""`loracle keys create|list|revoke`: API keys for the HTTP service (the secret is shown once)."""

from __future__ import annotations

import typer

from loracle.cli.context import open_agent

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="API keys for `loracle serve`.")


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", metavar="NAME", help="A label for the key (unique among active keys)."),
    tenant: str = typer.Option(None, "--tenant", metavar="TENANT", help="Whose threads and images it sees (default: the name)."),
    admin: bool = typer.Option(False, "--admin", help="May import catalogs."),
) -> None:
    """Create a key and print its secret (only its hash is stored)."""
    from loracle.agent.access import create_key

    with open_agent() as agent:
        key, secret = create_key(agent, name, tenant=tenant, admin=admin)
    typer.echo(secret)
    typer.echo(f"key {key.name!r} for tenant {key.tenant!r}{' (admin)' if key.admin else ''}; "
               "store the secret now, it is not shown again", err=True)


@app.command("list")
def list_(include_revoked: bool = typer.Option(False, "--all", help="Show revoked keys too.")) -> None:
    """The keys (names, tenants, prefixes; never secrets)."""
    from loracle.agent.access import list_keys

    with open_agent() as agent:
        keys = list_keys(agent, include_revoked=include_revoked)
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        typer.echo(f"{key.name}\ttenant={key.tenant}\t{key.prefix}…\t{'admin' if key.admin else 'user'}\t{state}")


@app.command("revoke")
def revoke(name: str = typer.Argument(..., metavar="NAME", help="The key's name.")) -> None:
    """Revoke a key at once (the next request with it gets 401)."""
    from loracle.agent.access import revoke_key

    with open_agent() as agent:
        revoke_key(agent, name)
    typer.echo(f"revoked {name!r}")
