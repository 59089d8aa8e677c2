"""`loracle rank ...`: the learned reranker (train it, calibrate the planner's thresholds on it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from loracle.agent.settings import get_settings
from loracle.cli.context import fail, open_database

app = typer.Typer(no_args_is_help=True, help="Train the learned reranker from real prompt -> LoRA choices.")


@app.command("train")
def train(
    queries: list[Path] = typer.Option(
        ..., "--queries", help="Labelled JSONL files to learn from (Civitai prompts and/or dev queries); repeat the option."
    ),
    calibrate: Path | None = typer.Option(
        None, "--calibrate", help="A labelled queries file whose non-held-out half calibrates the planner's thresholds."
    ),
    out: Path | None = typer.Option(None, "--out", help="Where to write the artifact (default tools/artifacts/ranker.json)."),
    rounds: int | None = typer.Option(None, help="Boosting rounds (default evals/rank_train.ROUNDS: 100, chosen by cross-validation)."),
    dev_weight: float = typer.Option(2.0, help="Weight of dev-file queries relative to Civitai prompts (2 won cross-validation)."),
    target_picks: float = typer.Option(2.2, help="Mean adapters per prompt the calibration aims at (Stylus: 2.2)."),
) -> None:
    """Fit on every file's training split (a fixed hash of query ids), report the held-out split, save JSON."""
    import torch

    from loracle.evals.rank_train import ROUNDS, calibrate_selection
    from loracle.evals.rank_train import train as train_ranker
    from loracle.tools.embedder import get_embedder
    from loracle.tools.learned_rank import artifact_path, load_ranker, save_artifact

    torch.set_num_threads(1)
    settings = get_settings()
    for path in [*queries, *([calibrate] if calibrate else [])]:
        if not path.is_file():
            raise fail(f"no such queries file: {path}")
    out = out or artifact_path()
    started = time.perf_counter()
    with open_database(settings) as db:
        embedder = get_embedder(settings.embedding_model)
        artifact, cross_fitted = train_ranker(db, embedder, queries, out, exclude_tags=settings.exclude_tags,
                                ef_search=settings.hnsw_ef_search, rounds=rounds or ROUNDS, dev_weight=dev_weight, progress=True,
                                log=typer.echo)
        typer.echo(json.dumps(artifact["heldout"], indent=2))
        if calibrate is not None:
            from loracle.agent.runtime import build_context

            load_ranker(out)
            ctx = build_context(settings.model_copy(update={"base_model": "tiny", "ranker": "learned", "llm_model": None}), db)
            ctx.base_models = None
            import os

            os.environ["LORACLE_RANKER_PATH"] = str(out)  # the planner scores with the new model
            calibration_started = time.perf_counter()
            artifact["selection"] = calibrate_selection(ctx, calibrate, cross_fitted, target_picks=target_picks, progress=True, log=typer.echo)
            artifact["selection"]["seconds"] = round(time.perf_counter() - calibration_started, 1)
            save_artifact(artifact, out)
    typer.echo(f"wrote {out} in {time.perf_counter() - started:.0f} s (fit {artifact['training']['fit_seconds']} s)")


@app.command("bench")
def bench(
    queries: Path = typer.Option(..., "--queries", help="A queries JSONL; the first N prompts are used."),
    n: int = typer.Option(100, help="Prompts to time."),
) -> None:
    """p50/p95 milliseconds to rerank one prompt's 150 fused candidates, learned vs hand-weighted."""
    import torch

    from loracle.evals.rank_train import bench_rerank
    from loracle.tools.embedder import get_embedder

    torch.set_num_threads(1)
    settings = get_settings()
    with open_database(settings) as db:
        results = bench_rerank(db, get_embedder(settings.embedding_model), queries, exclude_tags=settings.exclude_tags,
                               n=n, ef_search=settings.hnsw_ef_search)
    typer.echo(json.dumps(results, indent=2))
