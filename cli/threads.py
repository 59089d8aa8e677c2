"""`loracle threads show|prune`: inspect and prune conversation threads."""

from __future__ import annotations

import json

import typer

from loracle.cli.context import fail, open_agent

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Conversation threads (multi-turn refinement).")


@app.command("show")
def show(
    thread: str = typer.Argument(..., metavar="ID", help="The thread id (`loracle generate` prints it; the API returns it)."),
    tenant: str = typer.Option("local", "--tenant", metavar="TENANT",
                               help="Whose thread: the command line's own are 'local'; one made through the API "
                                    "belongs to its API key's tenant."),
) -> None:
    """Print a thread's current plan, picks and last answer."""
    from loracle.agent.access import thread_tenants

    with open_agent() as agent:
        state = agent.thread_state(tenant, thread)
        owners = [] if state else thread_tenants(agent, thread)
    if tenant in owners:
        raise fail(f"thread {thread!r} of tenant {tenant!r} has no turns yet")
    if owners:
        raise fail(f"no thread {thread!r} for tenant {tenant!r}; it exists for tenant "
                   + " and ".join(repr(o) for o in owners) + f": loracle threads show {thread} --tenant {owners[0]}")
    if not state:
        raise fail(f"no thread {thread!r} for tenant {tenant!r} (a thread made through the API belongs to its "
                   "key's tenant: pass --tenant TENANT)")
    typer.echo(json.dumps({k: state.get(k) for k in ("history", "plan", "picks", "planner", "answer")}, indent=2, default=str))


@app.command("prune")
def prune(older_than_days: float = typer.Option(30.0, "--older-than-days", min=0.0, metavar="DAYS",
                                                help="Delete threads whose last turn is older than this.")) -> None:
    """Delete threads (checkpoints and runs) whose last turn is older than the given number of days."""
    with open_agent() as agent:
        removed = agent.prune_threads(older_than_days)
    typer.echo(f"pruned {removed} thread(s)")
