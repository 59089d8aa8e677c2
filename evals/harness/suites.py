"""The registered suites. Each returns {"metrics": {...numbers compare can diff...}, ...details}."""

from __future__ import annotations

from evals.harness.registry import RunContext, suite


def _catalog(ctx: RunContext):
    """The scratch database with the labelled catalog imported once per run."""
    if "catalog" not in ctx.cache:
        from evals.harness.catalog_slice import labelled_catalog
        from tools.catalog_import import import_catalog
        from tools.embeddings import get_embedder

        labelled = labelled_catalog(ctx.out / "data", quick=ctx.quick, queries=ctx.options.get("queries"))
        report = import_catalog(ctx.cache["db"], labelled.catalog, get_embedder())
        ctx.cache["catalog"] = labelled
        ctx.cache["catalog_summary"] = report.summary()
    return ctx.cache["catalog"]


@suite("retrieval")
def retrieval(ctx: RunContext) -> dict:
    """Recall@K and nDCG@10 per strategy, the dense baseline first."""
    from agent.settings import get_settings
    from evals.retrieval import evaluate_retrieval
    from tools.embeddings import get_embedder

    labelled = _catalog(ctx)
    settings = get_settings()
    res = evaluate_retrieval(ctx.cache["db"], get_embedder(), labelled.queries, exclude_tags=settings.exclude_tags,
                             limit=ctx.options.get("limit"), progress=True, source=labelled.source)
    metrics = {row["strategy"]: {k: v for k, v in row.items() if k != "strategy"} for row in res["strategies"]}
    return {"metrics": metrics, "queries": res["queries"], "catalog": labelled.description}


@suite("selection")
def selection(ctx: RunContext) -> dict:
    """The offline planner's picks against the labels, next to top-3 dense; ms per node."""
    from agent.runtime import build_context
    from agent.settings import get_settings
    from evals.selection import evaluate_selection

    labelled = _catalog(ctx)
    settings = get_settings().model_copy(update={"base_model": "tiny"})
    agent = build_context(settings, ctx.cache["db"], llm=None)
    agent.base_models = None
    res = evaluate_selection(agent, labelled.queries, limit=ctx.options.get("limit"), progress=True, source=labelled.source)
    return {"metrics": {"methods": res["methods"], "latency_ms": res["latency_ms"]}, "queries": res["queries"],
            "catalog": labelled.description}


@suite("sampling")
def sampling(ctx: RunContext) -> dict:
    """Digits world: NFE, wall time, PSNR against the full-step run, adherence and FD per sampler setting."""
    import torch

    from evals.world.bench import World, _cfg, psnr
    from evals.world.paths import world_paths
    from generation.skipping import SkipSettings

    torch.set_num_threads(1)
    world = ctx.cache.setdefault("world", None) or World(world_paths())
    ctx.cache["world"] = world
    n = ctx.options.get("samples") or (20 if ctx.quick else 200)
    full = 50
    settings = [("ddim", full, 0.0), ("ddim", 20, 0.0), ("ddim", full, 0.02), ("ddim", full, 0.05)]
    rows, grids = [], {}
    ref = None
    for scheduler, steps, thr in ctx.progress(settings, desc="sampling"):
        s = world.sample(n, steps=steps, guidance=_cfg(1.5), skipping=SkipSettings(threshold=thr), seed0=ctx.seed)
        ref = ref if ref is not None else s
        name = f"{scheduler} {steps} steps" + (f" skip {thr}" if thr else "")
        rows.append({"setting": name, "scheduler": scheduler, "steps": steps, "threshold": thr,
                     "nfe": round(float(s.evals.mean()), 2), "wall_s": round(s.seconds, 2),
                     "psnr_vs_full": round(psnr(s.images, ref.images), 2), "adherence": round(world.adherence(s), 4),
                     "fd": round(world.fd(s), 2)})
        grids[name] = s.images[:20]
    ctx.cache["sampling_grids"] = grids
    return {"metrics": {r["setting"]: {k: r[k] for k in ("nfe", "wall_s", "psnr_vs_full", "adherence", "fd")} for r in rows},
            "rows": rows, "samples": n, "cfg": 1.5}
