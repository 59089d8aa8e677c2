"""`loracle search "prompt"`: ranked adapters with scores and the evidence that matched."""

from __future__ import annotations

import json

import typer

from loracle.cli.context import open_agent


def search(
    prompt: str = typer.Argument(..., metavar="PROMPT", help="What to find adapters for."),
    k: int = typer.Option(10, "--k", min=1, max=1000, metavar="N", help="How many adapters to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as JSON."),
    strategy: str = typer.Option("rerank", "--strategy", metavar="NAME",
                                 help="dense | head | lexical | fused | trained | rerank | learned."),
    base_model: list[str] = typer.Option([], "--base-model", metavar="NAME",
                                         help="Only adapters for this base model (repeatable); "
                                              "default: those the configured base model can use."),
    include_all: bool = typer.Option(False, "--all", help="Keep adapters the tag filter and the blocklist leave out."),
) -> None:
    """Search the catalog for a prompt."""
    from loracle.agent.catalog import search as search_catalog

    with open_agent() as agent:
        hits = search_catalog(agent, prompt, k=k, strategy=strategy, base_models=base_model or None, include_all=include_all)
    if as_json:
        typer.echo(json.dumps([hit.as_dict() for hit in hits], indent=2))
        return
    if not hits:
        typer.echo("no adapters matched")
    for rank, hit in enumerate(hits, start=1):
        typer.echo(f"{rank:3d}. {hit.score:7.4f}  {hit.name}  [{hit.source}:{hit.external_id}]  {hit.base_model or ''}")
        typer.echo(f"      why: {hit.explain()}")
