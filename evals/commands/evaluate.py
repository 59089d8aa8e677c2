"""`loracle eval ...`: evaluation suites that print numbers, the harness (`all`) and `compare`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from loracle.agent.settings import get_settings
from loracle.cli.context import fail, open_database

app = typer.Typer(no_args_is_help=True, help="Measure retrieval, selection and sampling.")

QUERIES = typer.Option(..., "--queries", help="A labelled queries JSONL (../shared/data/queries format); repeat the option "
                       "to evaluate several files in one run (JSON: a list, one result per file).")
AS_JSON = typer.Option(False, "--json", help="Print the results as JSON.")
LIMIT = typer.Option(0, help="Only the first N labelled queries (0 = all).")
HELDOUT = typer.Option(False, "--heldout", help="Only the learned ranker's held-out queries (its fixed split).")


def _run_labelled(
    files: list[Path], as_json: bool, run: Callable[[Any, Any, Path], dict], fmt: Callable[[dict], str]
) -> None:
    """The option handling retrieval and selection share: check the files, open the database once, print
    one result per file (a single file's JSON is its object, several files' a list)."""
    settings = get_settings()
    for path in files:
        if not path.is_file():
            raise fail(f"no such queries file: {path}")
    results = []
    with open_database(settings) as db:
        for number, path in enumerate(files):
            try:
                results.append(run(settings, db, path))
            except ValueError as exc:
                raise fail(f"{path}: {exc}") from None
            if not as_json:  # each table as soon as it is done, a blank line between them
                typer.echo(("\n" if number else "") + fmt(results[-1]))
    if as_json:
        typer.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))


@app.command("retrieval")
def retrieval(queries: list[Path] = QUERIES, as_json: bool = AS_JSON, limit: int = LIMIT, heldout: bool = HELDOUT) -> None:
    """Recall@10/50/150 and nDCG@10 for every strategy, dense baseline first, in one run."""
    from loracle.evals.retrieval import evaluate_retrieval, format_table
    from loracle.tools.embedder import get_embedder

    def run(settings, db, path: Path) -> dict:
        return evaluate_retrieval(db, get_embedder(settings.embedding_model), path, exclude_tags=settings.exclude_tags,
                                  limit=limit or None, ef_search=settings.hnsw_ef_search,
                                  connections=settings.search_connections, progress=not as_json, heldout=heldout)

    _run_labelled(queries, as_json, run, format_table)


@app.command("selection")
def selection(queries: list[Path] = QUERIES, as_json: bool = AS_JSON, limit: int = LIMIT, heldout: bool = HELDOUT) -> None:
    """Precision/recall of the offline planner's final picks vs top-3 dense, and time per graph node."""
    import torch

    from loracle.agent.runtime import build_context
    from loracle.evals.selection import evaluate_selection, format_selection

    torch.set_num_threads(1)  # one query's few short texts embed faster on one thread, above all under load

    def run(settings, db, path: Path) -> dict:
        ctx = build_context(settings.model_copy(update={"base_model": "tiny", "llm_model": None}), db)
        ctx.base_models = None  # score against every labelled adapter, whatever its base model
        return evaluate_selection(ctx, path, limit=limit or None, progress=not as_json, heldout=heldout)

    _run_labelled(queries, as_json, run, format_selection)


@app.command("all")
def run_all(
    quick: bool = typer.Option(False, "--quick", help="Small slices and sample counts (minutes on 2 cores)."),
    suites: str = typer.Option("", "--suites", help="Comma-separated suites (default: all registered)."),
    out: Path = typer.Option(Path("eval-runs"), "--out", help="Folder that gets one sub-folder per run."),
    queries: Path | None = typer.Option(None, "--queries", help="Labelled queries over the full catalog (default: a slice)."),
    limit: int = typer.Option(0, help="Only the first N labelled queries (0 = all)."),
    samples: int = typer.Option(0, help="Images per sampler setting (0 = 20 quick / 200 full)."),
    seed: int = typer.Option(0, help="Base seed."),
) -> None:
    """Run the suites into OUT/RUN_ID (results.json, report.md, PNG plots) and record the run."""
    from loracle.evals.harness.registry import SUITES
    from loracle.evals.harness.run import run_harness

    names = [s.strip() for s in suites.split(",") if s.strip()] or None
    if names:
        import loracle.evals.harness.suites  # noqa: F401

        unknown = [n for n in names if n not in SUITES]
        if unknown:
            raise fail(f"unknown suites {unknown}; known: {', '.join(sorted(SUITES))}")
    if queries is not None and not queries.is_file():
        raise fail(f"no such queries file: {queries}")
    options = {k: v for k, v in {"queries": queries, "limit": limit or None, "samples": samples or None}.items() if v}
    with open_database() as db:
        results, folder = run_harness(db, out, suites=names, quick=quick, seed=seed, options=options)
    for name, s in results["suites"].items():
        typer.echo(f"{name:<12} {s['status']:<7} {s['seconds']:>7.1f} s" + (f"  {s['error']}" if s["status"] != "ok" else ""))
    typer.echo(f"run {results['run_id']}: {folder}/report.md")


@app.command("real")
def run_real(
    prompts: Path = typer.Option(..., "--prompts", help="Prompts: .txt lines, .jsonl (prompt field), PartiPrompts .tsv or COCO captions .json."),
    clip: Path = typer.Option(..., "--clip", help="A local CLIP model folder (transformers format, safetensors)."),
    real_images: Path | None = typer.Option(None, "--real-images", help="A folder of real images for FD (e.g. COCO val2014)."),
    k: int = typer.Option(4, "--k", min=1, max=16, help="Images per prompt; best-of-k keeps the best CLIP score."),
    limit: int = typer.Option(0, help="Only the first N prompts (0 = all)."),
    real_limit: int = typer.Option(5000, help="At most this many real images."),
    out: Path = typer.Option(Path("eval-runs"), "--out", help="Folder that gets one sub-folder per run."),
    seed: int = typer.Option(0, help="Base seed."),
) -> None:
    """Stylus's protocol on your own base model (LORACLE_BASE_MODEL), catalog and CLIP model: CLIP score,
    best-of-k and FD against real images, loracle next to the bare base model with the same seeds."""
    from loracle.evals.harness.real import load_prompts
    from loracle.evals.harness.run import run_harness

    for path, what in ((prompts, "prompts file"), (clip, "CLIP model folder"), (real_images, "real images folder")):
        if path is not None and not path.exists():
            raise fail(f"no such {what}: {path}")
    try:
        load_prompts(prompts, limit or None)
    except ValueError as exc:
        raise fail(str(exc)) from None
    options = {"prompts": prompts, "clip": clip, "real_images": real_images, "k": k, "limit": limit or None,
               "real_limit": real_limit}
    with open_database() as db:
        results, folder = run_harness(db, out, suites=["real"], seed=seed, options={k: v for k, v in options.items() if v})
    s = results["suites"]["real"]
    if s["status"] != "ok":
        raise fail(f"real-model suite failed: {s['error']}")
    for arm, row in s["metrics"].items():
        typer.echo(f"{arm:<8} " + "  ".join(f"{key} {value}" for key, value in row.items()))
    typer.echo(f"run {results['run_id']}: {folder}/report.md")


def _load_run(ref: str) -> dict:
    """A run folder, a results.json, or (only then opening the database) a recorded run id."""
    path = Path(ref)
    if path.is_dir():
        path = path / "results.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise fail(f"{path}: not a results.json ({exc})") from None
    from loracle.db.evals import get_eval_run

    with open_database() as db, db.connection() as conn:
        found = get_eval_run(conn, ref)
    if found is None:
        raise fail(f"no eval run {ref!r} (neither a run folder, a results.json nor a recorded run id)")
    return found


@app.command("compare")
def compare_runs(
    run_a: str = typer.Argument(..., help="Baseline: a run id, a run folder or a results.json."),
    run_b: str = typer.Argument(..., help="Candidate, the same way."),
    metric: list[str] = typer.Option([], "--metric", help="Metric (or prefix, e.g. retrieval.fused) to gate on; repeatable."),
    tolerance: float = typer.Option(0.0, "--tolerance", help="How much worse (absolute) a metric may get."),
) -> None:
    """A regression table of A vs B; exits 1 when a chosen metric got worse than the tolerance."""
    from loracle.evals.harness.compare import compare, format_rows

    a, b = _load_run(run_a), _load_run(run_b)
    rows, regressed = compare(a, b, metric or None, tolerance)
    if metric and not any(r["metric"] == m or r["metric"].startswith(m + ".") for m in metric for r in rows):
        raise fail(f"no metric matches {metric} in both runs")
    typer.echo(format_rows(rows))
    if regressed:
        typer.echo(f"REGRESSED ({len(regressed)}, tolerance {tolerance}): {', '.join(regressed)}")
        raise typer.Exit(1)
    typer.echo("no regression")
