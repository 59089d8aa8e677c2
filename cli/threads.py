"""`loracle threads ...`: inspect and prune conversation threads."""

from __future__ import annotations

import json

import typer

from loracle.agent.settings import get_settings
from loracle.cli.context import open_database

app = typer.Typer(no_args_is_help=True, help="Conversation threads (multi-turn refinement).")


@app.command("show")
def show(thread: str = typer.Argument(..., help="Thread id."), tenant: str = typer.Option("local")) -> None:
    """Print a thread's current plan, picks and last answer."""
    from loracle.agent.threads import Threads

    settings = get_settings()
    with open_database(settings) as db:
        threads = Threads(db.url)
        try:
            state = threads.state(tenant, thread)
        finally:
            threads.close()
    if not state:
        typer.echo(f"no thread {thread!r}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps({k: state.get(k) for k in ("history", "plan", "picks", "planner", "answer")}, indent=2, default=str))


@app.command("prune")
def prune(older_than_days: float = typer.Option(30.0, "--older-than-days", min=0.0)) -> None:
    """Delete threads (checkpoints and runs) whose last turn is older than the given number of days."""
    from loracle.agent.threads import Threads

    settings = get_settings()
    with open_database(settings) as db:
        threads = Threads(db.url)
        try:
            removed = threads.prune(db, older_than_days)
        finally:
            threads.close()
    typer.echo(f"pruned {removed} thread(s)")
