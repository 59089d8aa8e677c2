"""`loracle generate "prompt"`: one turn of the agent from the command line, with a progress display."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

import typer
from tqdm import tqdm

from loracle.agent.settings import get_settings
from loracle.cli.context import fail, open_database


def ensure_world_catalog(db, settings) -> None:
    """The built-in world's adapters must be in the catalog before its first use (a no-op afterwards)."""
    from loracle.agent.runtime import resolve_base
    from loracle.tools.catalog_import import import_catalog
    from loracle.tools.embedder import get_embedder

    setup = resolve_base(settings)
    if setup.catalog is not None and setup.catalog.exists():
        report = import_catalog(db, setup.catalog, get_embedder(settings.embedding_model))
        if report.inserted or report.updated:
            typer.echo(f"world catalog: {report.summary()}", err=True)


def check_edit_files(image: Path | None, mask: Path | None) -> None:
    """--image / --mask must be readable images of one size; a clear usage error otherwise, before any work."""
    from loracle.generation.edit import check_edit_inputs, load_image

    if mask is not None and image is None:
        raise typer.BadParameter("--mask needs --image (the picture whose white region is repainted)", param_hint="--mask")
    opened = {}
    for flag, path in (("--image", image), ("--mask", mask)):
        if path is not None:
            try:
                opened[flag] = load_image(path, flag.strip("-"))
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint=flag) from None
    if mask is not None:
        try:
            check_edit_inputs(opened["--image"], opened["--mask"], 0.0, 0)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--mask") from None


def generate(
    prompt: str = typer.Argument(..., help="What to draw; a follow-up turn when --thread names an earlier thread."),
    n: int = typer.Option(None, "--n", min=1, max=16, help="Images to make (default from settings)."),
    thread: str = typer.Option(None, "--thread", help="Continue this thread (multi-turn refinement)."),
    seed: int = typer.Option(None, "--seed", help="Seed (default: random, or kept when the turn says so)."),
    out: Path = typer.Option(None, "--out", help="Also copy the images into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    image: Path = typer.Option(None, "--image", help="Edit this image (image-to-image) instead of drawing from scratch."),
    mask: Path = typer.Option(None, "--mask", help="Inpainting mask for --image: white = repaint, black = keep."),
    strength: float = typer.Option(None, "--strength", min=0.0, max=1.0,
                                   help="How far to move from --image: 0 = unchanged, 1 = from scratch (default from settings)."),
) -> None:
    """Plan, retrieve, select, compose, sample, inspect and retry; print what was picked and where the images are."""
    from loracle.agent.runtime import build_context
    from loracle.agent.threads import Threads
    from loracle.generation.adapters import AdapterError

    settings = get_settings()
    if not prompt.strip():
        raise fail("the prompt is empty")
    check_edit_files(image, mask)
    thread_id = thread or uuid.uuid4().hex[:12]
    with open_database(settings) as db:
        ensure_world_catalog(db, settings)
        ctx = build_context(settings, db)
        if ctx.llm is None and not as_json:
            typer.echo("planner: offline (no LLM configured; set LORACLE_LLM_MODEL to use one)", err=True)
        threads = Threads(db.url)
        bar = tqdm(total=None, desc="planning", unit="step", disable=as_json, file=sys.stderr)

        def show(event: dict) -> None:
            kind = event.get("event")
            if kind == "plan":
                bar.set_description(f"planned {len(event['tasks'])} tasks")
            elif kind == "mixes":
                bar.set_description(f"composing {event['distinct']} mixes")
            elif kind == "progress":
                if bar.total != event["steps"]:
                    bar.reset(total=event["steps"])
                    bar.set_description("sampling", refresh=False)
                bar.update(event["step"] - bar.n)
            elif kind == "retry":
                bar.write(f"retrying (attempt {event['attempt'] + 1}), dropped adapters {event['dropped']}", file=sys.stderr)
            elif kind == "inspection":
                bar.write("inspection: " + "; ".join(event["findings"]), file=sys.stderr)

        try:
            state = threads.run_turn(ctx, thread_id, prompt, n_images=n, seed=seed, on_event=show,
                                     input_image=str(image.resolve()) if image else None,
                                     input_mask=str(mask.resolve()) if mask else None, strength=strength)
        except (ValueError, AdapterError) as exc:
            raise fail(str(exc)) from None
        finally:
            bar.close()
            threads.close()
    paths = [settings.images_dir / image["path"] for image in state["images"]]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        paths = [Path(shutil.copy2(p, out / f"{thread_id}-{i}.png")) for i, p in enumerate(paths)]
    if as_json:
        typer.echo(json.dumps({"thread": thread_id, "run_id": state["run_id"], "planner": state["planner"],
                               "plan": state["plan"], "picks": state["picks"], "attempts": state.get("attempts", []),
                               "images": [str(p) for p in paths], "nfe": state["nfe"], "seed": state["seed"],
                               "answer": state["answer"]}, indent=2, default=str))
        return
    typer.echo(state["answer"])
    for path in paths:
        typer.echo(f"image: {path}")
    typer.echo(f"thread: {thread_id} (continue with --thread {thread_id})")
