"""`loracle catalog ...` and `loracle adapters ...`."""

from __future__ import annotations

from pathlib import Path

import typer

from loracle.agent.placement import bulk_embedder
from loracle.agent.settings import get_settings
from loracle.cli.context import fail, open_database
from loracle.cli.refine import refine
from loracle.db.catalog import count_adapters
from loracle.tools.catalog_import import import_catalog
from loracle.tools.embedder import get_embedder

app = typer.Typer(no_args_is_help=True, help="Import and inspect the adapter catalog.")
adapters_app = typer.Typer(no_args_is_help=True, help="Adapter files.")
app.command("refine")(refine)


@app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="A catalog JSONL, a Civitai API JSON dump, or a folder of .safetensors."),
    no_embed: bool = typer.Option(False, "--no-embed", help="Store records only; embed later with `catalog embed`."),
    show_rejected: int = typer.Option(20, help="How many rejected entries to list."),
    ray: str = typer.Option(None, "--ray", metavar="ADDRESS",
                            help="Embed as a Ray Data job on this cluster ('auto', 'ray://HOST:10001', or 'local')."),
) -> None:
    """Import adapters: upsert by (source, id), embed only changed texts, report counts."""
    settings = get_settings()
    if not path.exists():
        raise fail(f"no such file or folder: {path}")
    with open_database(settings) as db:
        try:
            embedder = None if no_embed else bulk_embedder(settings, ray)
        except ValueError as exc:
            raise fail(str(exc)) from None
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
    from loracle.tools.embed_sync import sync_embeddings

    settings = get_settings()
    with open_database(settings) as db:
        count = sync_embeddings(db, get_embedder(settings.embedding_model), progress=True)
    typer.echo(f"embedded {count} texts")


@adapters_app.command("fetch")
def fetch_command(refs: list[str] = typer.Argument(..., help="Adapter ids (e.g. Civitai model ids) or file sha256s.")) -> None:
    """Download adapter files into LORACLE_HOME/adapters, verified against the catalog's sha256, resumable."""
    import os

    from tqdm import tqdm

    from loracle.db.catalog import find_adapters, set_local_path
    from loracle.tools.fetch import FetchError, fetch_adapter_file

    settings = get_settings()
    failures = 0
    with open_database(settings) as db:
        with db.connection() as conn:
            cards = find_adapters(conn, refs)
        for ref in refs:
            card = cards.get(ref)
            if card is None:
                typer.secho(f"{ref}: not in the catalog", fg=typer.colors.RED, err=True)
                failures += 1
                continue
            with tqdm(desc=card["name"][:40], unit="B", unit_scale=True) as bar:

                def show(done: int, total: int | None) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                try:
                    result = fetch_adapter_file(card, settings.adapters_dir, token=os.environ.get("CIVITAI_TOKEN"), on_progress=show)
                except FetchError as exc:
                    typer.secho(str(exc), fg=typer.colors.RED, err=True)
                    failures += 1
                    continue
            with db.connection() as conn:
                set_local_path(conn, card["id"], result.path.name)
            typer.echo(f"{result.status}: {result.ref} -> {result.path}")
    if failures:
        raise typer.Exit(1)
