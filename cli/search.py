"""`loracle search "prompt"`: ranked adapters with scores and the evidence that matched."""

from __future__ import annotations

import json

import typer

from loracle.agent.settings import get_settings
from loracle.cli.context import fail, open_database


def search(
    prompt: str = typer.Argument(..., help="What to find adapters for."),
    k: int = typer.Option(10, "--k", min=1, max=1000, help="How many adapters to show."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    strategy: str = typer.Option("rerank", help="dense | head | lexical | fused | trained | rerank | learned"),
    base_model: list[str] = typer.Option([], "--base-model", help="Only these base models (repeatable)."),
    include_all: bool = typer.Option(False, "--all", help="Do not apply the default tag/blocklist filter."),
) -> None:
    """Search the catalog for a prompt."""
    from loracle.tools.embedder import get_embedder
    from loracle.tools.retrieve import STRATEGIES, SearchFilters, retrieve

    settings = get_settings()
    if not prompt.strip():
        raise fail("the prompt is empty")
    if strategy not in STRATEGIES:
        raise fail(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    filters = SearchFilters(
        base_models=base_model or None,
        exclude_tags=[] if include_all else settings.exclude_tags,
        exclude_blocklisted=not include_all,
    )
    with open_database(settings) as db:
        embedder = get_embedder(settings.embedding_model)
        with db.connections(settings.search_connections) as (conn, *spare):
            hits = retrieve(conn, embedder, prompt, strategy=strategy, k=k, filters=filters,
                            ef_search=settings.hnsw_ef_search, spare=spare)
    if as_json:
        typer.echo(json.dumps([hit.as_dict() for hit in hits], indent=2))
        return
    if not hits:
        typer.echo("no adapters matched")
    for rank, hit in enumerate(hits, start=1):
        typer.echo(f"{rank:3d}. {hit.score:7.4f}  {hit.name}  [{hit.source}:{hit.external_id}]  {hit.base_model or ''}")
        typer.echo(f"      why: {hit.explain()}")
