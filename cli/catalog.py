"""`loracle catalog import|embed|refine` and `loracle adapters fetch`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from loracle.cli.context import open_agent
from loracle.cli.refine import refine

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Import, embed and refine the adapter catalog.")
adapters_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Adapter files.")
app.command("refine")(refine)


@app.command("import")
def import_command(
    path: Path = typer.Argument(..., metavar="PATH", help="A catalog JSONL, a Civitai API JSON dump, a folder of .safetensors, or an A1111 / Forge / ComfyUI "
                                                        "install (its LoRAs imported, its LoRA and checkpoint folders linked)."),
    no_embed: bool = typer.Option(False, "--no-embed", help="Store records only; embed later with `loracle catalog embed`."),
    show_rejected: int = typer.Option(20, "--show-rejected", min=0, metavar="N", help="How many rejected entries to list."),
    ray: str = typer.Option(None, "--ray", metavar="ADDRESS",
                            help="Embed as a Ray Data job on this cluster ('auto', 'ray://HOST:10001', or 'local')."),
) -> None:
    """Import adapters: upsert by (source, id), embed only changed texts, report counts."""
    from loracle.agent.catalog import import_file

    with open_agent() as agent:
        report, total = import_file(agent, path, embed=not no_embed, ray=ray, progress=True)
    for item in report.rejected[:show_rejected]:
        typer.secho(f"rejected {item.location}: {item.reason}", fg=typer.colors.YELLOW, err=True)
    if len(report.rejected) > show_rejected:
        typer.secho(f"... and {len(report.rejected) - show_rejected} more rejected", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{report.summary()}; {total} adapters in the catalog")


@app.command("embed")
def embed_command() -> None:
    """Embed every adapter text that is new or changed (after a refine, or an import with --no-embed)."""
    from loracle.agent.catalog import embed_pending

    with open_agent() as agent:
        count = embed_pending(agent, progress=True)
    typer.echo(f"embedded {count} texts")


@adapters_app.command("fetch")
def fetch_command(refs: list[str] = typer.Argument(..., metavar="ID...", help="Adapter ids (e.g. Civitai model ids) or file sha256s.")) -> None:
    """Download adapter files into LORACLE_HOME/adapters, verified against the catalog's sha256, resumable."""
    from tqdm import tqdm

    from loracle.agent.catalog import Fetched, fetch_files

    bar: tqdm | None = None  # the download in flight (one at a time)

    def show(name: str, done: int, total: int | None) -> None:
        nonlocal bar
        bar = bar or tqdm(desc=name[:40], unit="B", unit_scale=True)
        bar.total = total
        bar.update(done - bar.n)

    failures = 0
    with open_agent() as agent:
        for outcome in fetch_files(agent, refs, token=os.environ.get("CIVITAI_TOKEN"), on_progress=show):
            if bar is not None:
                bar.close()
                bar = None
            if isinstance(outcome, Fetched):
                typer.echo(f"{outcome.status}: {outcome.ref} -> {outcome.path}")
            else:
                typer.secho(str(outcome), fg=typer.colors.RED, err=True)
                failures += 1
    if failures:
        raise typer.Exit(1)


@app.command("check")
def check_command() -> None:
    """List quarantined adapters (left out of retrieval because their file is missing, unsafe, outside the adapter
    folders, shared with another entry or unreadable), after checking their files again: fixed ones are released."""
    from loracle.agent.catalog import check_catalog

    with open_agent() as agent:
        lifted, left = check_catalog(agent)
    if lifted:
        typer.echo(f"released {lifted} adapter(s) whose file or record was fixed")
    for item in left:
        typer.echo(f"quarantined {item.ref} {item.name}: {item.reason}")
    typer.echo(f"{len(left)} adapter(s) quarantined")
