"""`loracle rank ...`: the learned first stage and reranker (train them, calibrate the planner's thresholds)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from loracle.agent.settings import get_settings
from loracle.cli.context import fail, open_database
from loracle.tools.blas_threads import one_blas_thread

app = typer.Typer(no_args_is_help=True, help="Train the learned first stage and reranker from real prompt -> LoRA choices.")


@app.command("train")
def train(
    queries: list[Path] = typer.Option(
        ..., "--queries", help="Labelled JSONL files to learn from (Civitai prompts and/or dev queries); repeat the option."
    ),
    calibrate: Path | None = typer.Option(
        None, "--calibrate", help="A labelled queries file whose non-held-out half calibrates the planner's thresholds."
    ),
    out: Path | None = typer.Option(None, "--out", help="Where to write the ranker (default tools/artifacts/ranker.json); "
                                    "the first stage and the unfiltered ranker go beside it."),
    rounds: int | None = typer.Option(None, help="Boosting rounds (default evals/rank_train.ROUNDS: 300, chosen by cross-validation)."),
    dev_weight: float = typer.Option(4.0, help="Weight of dev-file queries relative to Civitai prompts (4 won cross-validation)."),
    target_picks: float = typer.Option(2.2, help="Mean adapters per prompt the calibration aims at (Stylus: 2.2)."),
    depth: int = typer.Option(150, min=10, max=1000, help="Fused candidates per prompt the ranker re-scores."),
    unfiltered: bool = typer.Option(True, "--unfiltered/--filtered-only",
                                    help="Also train the ranker for searches without the character/celebrity filter."),
) -> None:
    """Train the first stage's learned lists and the reranker on every file's training split (a fixed hash of
    query ids), report the held-out split, save the artifacts."""
    import torch

    from loracle.evals.rank_train import ROUNDS, calibrate_selection
    from loracle.evals.rank_train import train as train_ranker
    from loracle.tools.embedder import get_embedder
    from loracle.tools.learned_rank import artifact_path, save_artifact

    torch.set_num_threads(1)
    one_blas_thread()  # for the whole command
    settings = get_settings()
    for path in [*queries, *([calibrate] if calibrate else [])]:
        if not path.is_file():
            raise fail(f"no such queries file: {path}")
    out = out or artifact_path()
    started = time.perf_counter()
    with open_database(settings) as db:
        embedder = get_embedder(settings.embedding_model)
        trained = train_ranker(db, embedder, queries, out, exclude_tags=settings.exclude_tags, ef_search=settings.hnsw_ef_search,
                               rounds=rounds or ROUNDS, dev_weight=dev_weight, depth=depth, unfiltered=unfiltered,
                               progress=True, log=typer.echo)
        # settings are chosen on cross-validation; the held-out metrics stay in the artifacts until the end
        for ranker in trained:
            typer.echo(f"{ranker.path.name}, cross-validated on the training split: "
                       + json.dumps(ranker.artifact["cross_validation"], indent=2))
        if calibrate is not None:
            import os

            from loracle.agent.runtime import build_context

            os.environ["LORACLE_RANKER_PATH"] = str(out)  # the planner scores with the new models
            for ranker in trained:
                filtered = ranker.cross_fitted[0].filtered
                tags = settings.exclude_tags if filtered else []
                ctx = build_context(settings.model_copy(update={"base_model": "tiny", "ranker": "learned", "llm_model": None,
                                                                 "exclude_tags": tags}), db)
                ctx.base_models = None
                calibration_started = time.perf_counter()
                ranker.artifact["selection"] = calibrate_selection(ctx, calibrate, ranker.cross_fitted, target_picks=target_picks,
                                                                   progress=True, log=typer.echo)
                ranker.artifact["selection"]["seconds"] = round(time.perf_counter() - calibration_started, 1)
                save_artifact(ranker.artifact, ranker.path)
    typer.echo(f"wrote {', '.join(r.path.name for r in trained)} and the first stage into {out.parent} "
               f"in {time.perf_counter() - started:.0f} s")


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
    one_blas_thread()  # for the whole command
    settings = get_settings()
    with open_database(settings) as db:
        results = bench_rerank(db, get_embedder(settings.embedding_model), queries, exclude_tags=settings.exclude_tags,
                               n=n, ef_search=settings.hnsw_ef_search)
    typer.echo(json.dumps(results, indent=2))


@app.command("cv")
def cross_validate(
    queries: list[Path] = typer.Option(..., "--queries", help="Labelled JSONL files (their training split only); repeat the option."),
) -> None:
    """Cross-validate the learned first stage's settings on the training split (5 folds) and name the best."""
    import torch

    from loracle.evals.first_stage_cv import KS, cross_validate, format_row, objective
    from loracle.evals.rank_train import PRIOR_FOLDS
    from loracle.tools.embedder import get_embedder

    torch.set_num_threads(1)
    one_blas_thread()  # for the whole command
    settings = get_settings()
    for path in queries:
        if not path.is_file():
            raise fail(f"no such queries file: {path}")
    with open_database(settings) as db:
        rows = cross_validate(db, get_embedder(settings.embedding_model), queries, exclude_tags=settings.exclude_tags,
                              ef_search=settings.hnsw_ef_search, log=typer.echo)
    typer.echo(f"{len(rows)} settings tried, {PRIOR_FOLDS}-fold on the training split; columns R@{', R@'.join(map(str, KS))}")
    typer.echo("best (mean R@150 over sources, then R@10): " + format_row(max(rows, key=objective)))
