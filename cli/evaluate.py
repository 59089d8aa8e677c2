"""`loracle eval ...`: evaluation suites that print numbers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from agent.settings import get_settings
from cli.context import fail, open_database

app = typer.Typer(no_args_is_help=True, help="Measure retrieval, selection and sampling.")


@app.command("retrieval")
def retrieval(
    queries: Path = typer.Option(..., "--queries", help="A labelled queries JSONL (../shared/data/queries format)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    limit: int = typer.Option(0, help="Only the first N labelled queries (0 = all)."),
    heldout: bool = typer.Option(False, "--heldout", help="Only the learned ranker's held-out queries (its fixed split)."),
) -> None:
    """Recall@10/50/150 and nDCG@10 for every strategy, dense baseline first, in one run."""
    from evals.retrieval import evaluate_retrieval, format_table
    from tools.embeddings import get_embedder

    settings = get_settings()
    if not queries.is_file():
        raise fail(f"no such queries file: {queries}")
    with open_database(settings) as db:
        try:
            results = evaluate_retrieval(
                db,
                get_embedder(settings.embedding_model),
                queries,
                exclude_tags=settings.exclude_tags,
                limit=limit or None,
                ef_search=settings.hnsw_ef_search,
                progress=not as_json,
                heldout=heldout,
            )
        except ValueError as exc:
            raise fail(str(exc)) from None
    typer.echo(json.dumps(results, indent=2) if as_json else format_table(results))


@app.command("selection")
def selection(
    queries: Path = typer.Option(..., "--queries", help="A labelled queries JSONL."),
    as_json: bool = typer.Option(False, "--json"),
    limit: int = typer.Option(0, help="Only the first N queries (0 = all)."),
    heldout: bool = typer.Option(False, "--heldout", help="Only the learned ranker's held-out queries (its fixed split)."),
) -> None:
    """Precision/recall of the offline planner's final picks vs top-3 dense, and time per graph node."""
    from agent.runtime import build_context
    from evals.selection import evaluate_selection, format_selection

    settings = get_settings()
    if not queries.is_file():
        raise fail(f"no such queries file: {queries}")
    with open_database(settings) as db:
        ctx = build_context(settings.model_copy(update={"base_model": "tiny"}), db, llm=None)
        ctx.base_models = None  # score against every labelled adapter, whatever its base model
        results = evaluate_selection(ctx, queries, limit=limit or None, progress=not as_json, heldout=heldout)
    typer.echo(json.dumps(results, indent=2) if as_json else format_selection(results))
