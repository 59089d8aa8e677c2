"""`loracle catalog ...` and `loracle adapters ...`."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.settings import get_settings
from cli.context import fail, open_database
from db.catalog import count_adapters
from tools.catalog_import import import_catalog
from tools.embeddings import get_embedder

app = typer.Typer(no_args_is_help=True, help="Import and inspect the adapter catalog.")
adapters_app = typer.Typer(no_args_is_help=True, help="Adapter files.")


@app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="A catalog JSONL, a Civitai API JSON dump, or a folder of .safetensors."),
    no_embed: bool = typer.Option(False, "--no-embed", help="Store records only; embed later with `catalog embed`."),
    show_rejected: int = typer.Option(20, help="How many rejected entries to list."),
) -> None:
    """Import adapters: upsert by (source, id), embed only changed texts, report counts."""
    settings = get_settings()
    if not path.exists():
        raise fail(f"no such file or folder: {path}")
    with open_database(settings) as db:
        embedder = None if no_embed else get_embedder(settings.embedding_model)
        report = import_catalog(db, path, embedder, progress=True)
        with db.connection() as conn:
            total = count_adapters(conn)
    for item in report.rejected[:show_rejected]:
        typer.secho(f"rejected {item.location}: {item.reason}", fg=typer.colors.YELLOW, err=True)
    if len(report.rejected) > show_rejected:
        typer.secho(f"... and {len(report.rejected) - show_rejected} more rejected", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{report.summary()}; {total} adapters in the catalog")


@app.command("embed")
def embed_command() -> None:
    """Embed every adapter text that is new or changed (after a refine, or an import with --no-embed)."""
    from tools.embed_sync import sync_embeddings

    settings = get_settings()
    with open_database(settings) as db:
        count = sync_embeddings(db, get_embedder(settings.embedding_model), progress=True)
    typer.echo(f"embedded {count} texts")
