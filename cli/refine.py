"""`loracle catalog refine`: fill refined descriptions, categories, trigger words and weights, then re-embed."""

from __future__ import annotations

import typer

from loracle.agent.settings import get_settings
from loracle.cli.context import fail, open_agent


def refine(
    llm: bool = typer.Option(False, "--llm", help="Use the chat model (LORACLE_LLM_MODEL); fails if none is configured."),
    offline: bool = typer.Option(False, "--offline", help="Use the extractive refiner (no network)."),
    limit: int = typer.Option(0, "--limit", min=0, metavar="N", help="Refine at most N adapters (0 = all that need it)."),
    only_missing: bool = typer.Option(False, "--only-missing", help="Only adapters never refined."),
    no_embed: bool = typer.Option(False, "--no-embed", help="Skip re-embedding (run `loracle catalog embed` later)."),
    max_images: int = typer.Option(3, "--max-images", min=0, metavar="N", help="Example images sent to the model per adapter."),
    ray: str = typer.Option(None, "--ray", metavar="ADDRESS",
                            help="Re-embed as a Ray Data job on this cluster ('auto', 'ray://HOST:10001', or 'local')."),
) -> None:
    """Refine adapter docs (Stylus's refiner), with an LLM or offline; resumable, and a rerun costs nothing."""
    from loracle.agent.catalog import refine as refine_catalog
    from loracle.agent.llm import make_chat_model

    if llm and offline:
        raise fail("choose one of --llm and --offline")
    settings = get_settings()
    chat_model = None if offline else make_chat_model(settings)
    if llm and chat_model is None:
        raise fail("--llm needs a chat model: set LORACLE_LLM_MODEL (and OPENAI_API_KEY / OPENAI_BASE_URL)")
    if chat_model is None and not offline:
        typer.echo("no LLM configured (LORACLE_LLM_MODEL); using the offline refiner", err=True)
    with open_agent(settings) as agent:
        report = refine_catalog(agent, chat_model=chat_model, embed=not no_embed, ray=ray, limit=limit or None,
                                only_missing=only_missing, max_images=max_images, progress=True)
    for note in report.notes:
        typer.secho(note, fg=typer.colors.YELLOW, err=True)
    typer.echo(report.summary())
