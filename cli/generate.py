"""`loracle generate "prompt"`: one turn of the agent from the command line, with a progress display."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import typer

from loracle.agent.options import MAX_SEED
from loracle.agent.settings import get_settings
from loracle.cli.context import fail, open_agent, stderr_is_tty

FLAGS = {"image": "--image", "mask": "--mask"}


def generate(
    prompt: str = typer.Argument(..., metavar="PROMPT", help="What to draw; a follow-up turn when --thread names an earlier thread."),
    n: int = typer.Option(None, "--n", min=1, max=16, metavar="N", help="Images to make (default from settings)."),
    thread: str = typer.Option(None, "--thread", metavar="ID", help="Continue this thread (multi-turn refinement)."),
    seed: int = typer.Option(None, "--seed", metavar="SEED", min=0, max=MAX_SEED,
                             help="Seed, 0 to 2^32-1 (default: random, or kept when the turn says so)."),
    out: Path = typer.Option(None, "--out", metavar="DIR", help="Also copy the images into this folder (default with LORACLE_IMAGE_STORE=postgres: the current one)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    image: Path = typer.Option(None, "--image", metavar="PNG", help="Edit this image (image-to-image) instead of drawing from scratch."),
    mask: Path = typer.Option(None, "--mask", metavar="PNG", help="Inpainting mask for --image: white = repaint, black = keep."),
    strength: float = typer.Option(None, "--strength", min=0.0, max=1.0, metavar="S",
                                   help="How far to move from --image: 0 = unchanged, 1 = from scratch (default from settings)."),
) -> None:
    """Draw images for a prompt with adapters chosen for it.

    Plans, retrieves, selects, composes, samples, inspects and retries; prints what was picked and where
    the images are.
    """
    from loracle.agent.access import stored_png
    from loracle.agent.errors import InvalidInput
    from loracle.agent.inputs import check_edit_files
    from loracle.cli.progress import TurnProgress

    settings = get_settings()
    if not prompt.strip():
        raise fail("the prompt is empty")
    if mask is not None and image is None:
        raise typer.BadParameter("--mask needs --image (the picture whose white region is repainted)", param_hint="--mask")
    try:
        check_edit_files(image, mask)
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc), param_hint=FLAGS.get(exc.field or "", "--image")) from None
    thread_id = thread or uuid.uuid4().hex[:12]
    with open_agent(settings) as agent:
        report = agent.world_catalog
        if report is not None and (report.inserted or report.updated):
            typer.echo(f"world catalog: {report.summary()}", err=True)
        if agent.context.llm is None and not as_json:
            typer.echo("planner: offline (no LLM configured; set LORACLE_LLM_MODEL to use one)", err=True)
        progress = TurnProgress(live=stderr_is_tty() and not as_json, phases=not as_json)
        try:
            state = agent.run_turn(thread_id, prompt, n_images=n, seed=seed, on_event=progress,
                                   input_image=str(image.resolve()) if image else None,
                                   input_mask=str(mask.resolve()) if mask else None, strength=strength)
        finally:
            progress.close()
        names = [image["path"] for image in state["images"]]
        if out is None and settings.image_store != "files":
            out = Path.cwd()  # the images are in the database, no file of them to point at
        pngs = [stored_png(agent, name) for name in names] if out is not None else []
    paths = [settings.images_dir / name for name in names]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{thread_id}-{i}.png" for i in range(len(pngs))]
        for path, png in zip(paths, pngs):
            path.write_bytes(png)
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
