"""`loracle world ...`: build the digits world (trained base, guide, style LoRAs, judge, catalog, and a MAR with its
own style LoRAs) offline."""

from __future__ import annotations

import os
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="The digits world: a miniature, fully trained stand-in for SD + Civitai.")


def _default_quick_out() -> Path:
    """Quick builds never overwrite the committed artifacts."""
    home = Path(os.environ.get("LORACLE_HOME", Path.home() / ".local" / "share" / "loracle"))
    return home / "world-quick"


@app.command("train")
def train(
    quick: bool = typer.Option(False, "--quick", help="A few steps of everything (about a minute); for tests."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: evals/world/artifacts, or "
                                    "LORACLE_HOME/world-quick with --quick)."),
    only: list[str] = typer.Option([], "--only", help="Build only these parts (base, guide, loras, judge, eval-judge, catalog, mar, mar-loras)."),
) -> None:
    """Rebuild every artifact of the digits world, seeded, on one CPU thread."""
    from loracle.evals.world.build import PARTS, build_world

    target = out or (_default_quick_out() if quick else None)
    report = build_world(target, quick=quick, only=tuple(only) or PARTS, log=typer.echo)
    for part in ("base", "guide", "mar"):
        if part in report:
            r = report[part]
            typer.echo(f"{part}: held-out loss {r['eval_loss_before']} -> {r['eval_loss_after']} ({r['seconds']}s)")
    for name, r in report.get("mar-loras", {}).items():
        typer.echo(f"MAR LoRA {name}: held-out loss {r['eval_loss_before']} -> {r['eval_loss_after']} ({r['seconds']}s)")
    if "judge" in report:
        typer.echo(f"judge: held-out real digit accuracy {report['judge']['digit_accuracy_real']}")
    from loracle.generation.world.paths import world_paths

    typer.echo(f"world written to {world_paths(target).root}")
