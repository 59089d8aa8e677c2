"""The registered suites. Each returns {"metrics": {...numbers compare can diff...}, ...details}."""

from __future__ import annotations

from loracle.evals.harness.registry import RunContext, suite


def _catalog(ctx: RunContext):
    """The scratch database with the labelled catalog imported once per run."""
    if "catalog" not in ctx.cache:
        from loracle.evals.harness.catalog_slice import labelled_catalog
        from loracle.tools.catalog_import import import_catalog
        from loracle.tools.embedder import get_embedder

        labelled = labelled_catalog(ctx.out / "data", quick=ctx.quick, queries=ctx.options.get("queries"))
        report = import_catalog(ctx.cache["db"], labelled.catalog, get_embedder())
        ctx.cache["catalog"] = labelled
        ctx.cache["catalog_summary"] = report.summary()
    return ctx.cache["catalog"]


@suite("retrieval")
def retrieval(ctx: RunContext) -> dict:
    """Recall@K and nDCG@10 per strategy, the dense baseline first."""
    from loracle.agent.settings import get_settings
    from loracle.evals.retrieval import evaluate_retrieval
    from loracle.tools.embedder import get_embedder

    labelled = _catalog(ctx)
    settings = get_settings()
    res = evaluate_retrieval(ctx.cache["db"], get_embedder(), labelled.queries, exclude_tags=settings.exclude_tags,
                             limit=ctx.options.get("limit"), progress=True, source=labelled.source)
    metrics = {row["strategy"]: {k: v for k, v in row.items() if k != "strategy"} for row in res["strategies"]}
    return {"metrics": metrics, "queries": res["queries"], "catalog": labelled.description}


@suite("selection")
def selection(ctx: RunContext) -> dict:
    """The offline planner's picks against the labels, next to top-3 dense; ms per node."""
    from loracle.agent.runtime import build_context
    from loracle.agent.settings import get_settings
    from loracle.evals.selection import evaluate_selection

    labelled = _catalog(ctx)
    settings = get_settings().model_copy(update={"base_model": "tiny", "llm_model": None})
    agent = build_context(settings, ctx.cache["db"])
    agent.base_models = None
    res = evaluate_selection(agent, labelled.queries, limit=ctx.options.get("limit"), progress=True, source=labelled.source)
    return {"metrics": {"methods": res["methods"], "latency_ms": res["latency_ms"]}, "queries": res["queries"],
            "catalog": labelled.description}


@suite("sampling")
def sampling(ctx: RunContext) -> dict:
    """Digits world, per scheduler: NFE, wall time, PSNR against that scheduler's full-step run, adherence and FD
    for fewer steps and for step skipping at two thresholds."""
    from loracle.evals.world.bench import _cfg, psnr
    from loracle.generation.schedulers import SCHEDULERS
    from loracle.generation.skipping import SkipSettings

    world = _world(ctx)
    n = ctx.options.get("samples") or (20 if ctx.quick else 200)
    full = 50
    schedulers = ("ddim", "dpmpp_2m", "euler") if ctx.quick else SCHEDULERS
    settings = [(sch, steps, thr) for sch in schedulers for steps, thr in ((full, 0.0), (20, 0.0), (full, 0.02), (full, 0.05))]
    rows, grids, refs = [], {}, {}
    for scheduler, steps, thr in ctx.progress(settings, desc="sampling"):
        s = world.sample(n, steps=steps, guidance=_cfg(1.5), skipping=SkipSettings(threshold=thr), seed0=ctx.seed,
                         scheduler=scheduler)
        ref = refs.setdefault(scheduler, s)  # the first setting per scheduler is its full-step run
        name = f"{scheduler} {steps} steps" + (f" skip {thr}" if thr else "")
        rows.append({"setting": name, "scheduler": scheduler, "steps": steps, "threshold": thr,
                     "nfe": round(float(s.evals.mean()), 2), "wall_s": round(s.seconds, 2),
                     "psnr_vs_full": round(psnr(s.images, ref.images), 2), "adherence": round(world.adherence(s), 4),
                     "fd": round(world.fd(s), 2)})
        grids[name] = s.images[:20]
    ctx.cache["sampling_grids"] = grids
    return {"metrics": {r["setting"]: {k: r[k] for k in ("nfe", "wall_s", "psnr_vs_full", "adherence", "fd")} for r in rows},
            "rows": rows, "samples": n, "cfg": 1.5}


def _world(ctx: RunContext):
    import torch

    from loracle.evals.world.bench import World
    from loracle.generation.world.paths import world_paths

    torch.set_num_threads(1)
    if ctx.cache.get("world") is None:
        ctx.cache["world"] = World(world_paths())
    return ctx.cache["world"]


@suite("guidance")
def guidance(ctx: RunContext) -> dict:
    """Digits world: none / CFG / autoguidance / both over a sweep of w; FD and adherence per setting."""
    from loracle.generation.guidance import GuidanceSettings, GuideSpec

    world = _world(ctx)
    n = ctx.options.get("samples") or (20 if ctx.quick else 600)
    steps = 20
    ws = (1.25, 2.0) if ctx.quick else (1.25, 1.5, 2.0)
    guide = GuideSpec(kind="model", model="guide")
    settings = [("none", 1.0, GuidanceSettings(kind="none", scale=1.0))]
    for kind in ("cfg", "auto", "both"):
        settings += [(kind, w, GuidanceSettings(kind=kind, scale=w, guide=guide if kind != "cfg" else GuideSpec()))
                     for w in ws]
    metrics = {}
    for kind, w, g in ctx.progress(settings, desc="guidance"):
        s = world.sample(n, steps=steps, guidance=g, seed0=100_000 + ctx.seed)
        metrics[f"{kind} w={w:g}"] = {"kind": kind, "w": w, "fd": round(world.fd(s), 2),
                                      "adherence": round(world.adherence(s), 4), "wall_s": round(s.seconds, 2)}
    return {"metrics": metrics, "samples": n, "steps": steps}


WORLD_PROMPTS = ["a handwritten three, bold", "a slanted seven in a box", "a mirrored two", "a thin five, inverted"]
STYLUS_OVERHEAD_S = 12.1  # Stylus's published mean overhead per prompt (refine + retrieve + compose)


@suite("latency")
def latency(ctx: RunContext) -> dict:
    """Time per graph node over N prompts through the whole graph (digits world), p50 / p95, vs Stylus's 12.1 s."""
    import time

    from loracle.agent.catalog import ensure_world_catalog
    from loracle.agent.runtime import build_context
    from loracle.agent.settings import get_settings
    from loracle.agent.threads import Threads
    from loracle.evals.metrics import percentile

    _world(ctx)
    db = ctx.cache["db"]
    settings = get_settings().model_copy(update={"base_model": "world", "home": ctx.out / "home", "steps": 20,
                                                 "n_images": 2, "llm_model": None})
    ensure_world_catalog(db, settings)
    agent = build_context(settings, db, tenant="eval")
    threads = Threads(db.url)
    prompts = WORLD_PROMPTS
    n = ctx.options.get("prompts") or (4 if ctx.quick else 20)
    per_node: dict[str, list[float]] = {}
    totals = []
    try:
        for i in ctx.progress(range(n), desc="latency"):
            marks = [time.perf_counter()]
            names: list[str] = []

            def on_event(event: dict) -> None:
                if event.get("event") == "node":
                    names.append(event["node"])
                    marks.append(time.perf_counter())

            threads.run_turn(agent, f"eval-latency-{ctx.out.name}-{i}", prompts[i % len(prompts)], seed=ctx.seed + i,
                             on_event=on_event)
            for name, a, b in zip(names, marks, marks[1:]):
                per_node.setdefault(name, []).append(b - a)
            totals.append(marks[-1] - marks[0])
    finally:
        threads.close()
    metrics = {name: {"p50_s": percentile(v, 50), "p95_s": percentile(v, 95)} for name, v in per_node.items()}
    metrics["total"] = {"p50_s": percentile(totals, 50), "p95_s": percentile(totals, 95)}
    overhead = [t for t in totals]
    return {"metrics": metrics, "prompts": n, "stylus_overhead_s": STYLUS_OVERHEAD_S,
            "note": "node times include sampling (sample node); Stylus's 12.1 s excludes sampling",
            "max_total_s": max(overhead) if overhead else None}


@suite("composition")
def composition(ctx: RunContext) -> dict:
    """Diversity across a batch (unique mixes, mean pairwise judge-feature distance) of the agent's masked
    mixes, against the same seeds with one adapter (the first pick) on every image and with no adapter."""
    import numpy as np
    import torch
    from PIL import Image

    from loracle.agent.catalog import ensure_world_catalog
    from loracle.agent.runtime import build_context
    from loracle.agent.settings import get_settings
    from loracle.agent.threads import Threads
    from loracle.evals.world.judge import to_tensor
    from loracle.generation.engine import GenerationRequest
    from loracle.generation.guidance import GuidanceSettings

    world = _world(ctx)
    db = ctx.cache["db"]
    n_images = 4 if ctx.quick else 8
    settings = get_settings().model_copy(update={"base_model": "world", "home": ctx.out / "home", "steps": 20,
                                                 "n_images": n_images, "max_retries": 0, "llm_model": None})
    ensure_world_catalog(db, settings)
    agent = build_context(settings, db, tenant="eval")
    threads = Threads(db.url)
    prompts = ["a handwritten three, bold and slanted, in a box", "a mirrored seven, inverted, framed"]

    def spread(images: torch.Tensor) -> float:
        f = torch.as_tensor(np.asarray(world.judge.features(images)), dtype=torch.float32)
        d = torch.cdist(f, f)
        k = len(f)
        return float(d.sum() / (k * (k - 1))) if k > 1 else 0.0

    rows = {"agent mixes": [], "single adapter": [], "no adapter": []}
    unique = {"agent mixes": [], "single adapter": [], "no adapter": []}
    try:
        for i, prompt in enumerate(ctx.progress(prompts, desc="composition")):
            state = threads.run_turn(agent, f"eval-comp-{ctx.out.name}-{i}", prompt, n_images=n_images, seed=ctx.seed + i)
            recs = state["images"]
            imgs = to_tensor([Image.open(settings.images_dir / r["path"]).convert("L") for r in recs])
            mixes = [r["mix"] for r in recs]
            first = max(mixes[0], key=mixes[0].get) if mixes[0] else None
            single = [{first: mixes[0][first]}] * len(mixes) if first else [{}] * len(mixes)
            seeds = [r["seed"] for r in recs]
            for name, ms in (("single adapter", single), ("no adapter", [{}] * len(mixes))):
                out = world.engine.generate(GenerationRequest(prompt=recs[0]["prompt"], mixes=ms, seeds=seeds, steps=20,
                                                              scheduler="ddim", guidance=GuidanceSettings(kind="cfg", scale=1.5)))
                rows[name].append(spread(to_tensor(out.images)))
                unique[name].append(len({tuple(sorted(m.items())) for m in ms}))
            rows["agent mixes"].append(spread(imgs))
            unique["agent mixes"].append(len({tuple(sorted(m.items())) for m in mixes}))
    finally:
        threads.close()
    metrics = {name: {"unique_mixes": float(np.mean(unique[name])), "mean_pairwise_distance": float(np.mean(v))}
               for name, v in rows.items()}
    return {"metrics": metrics, "prompts": prompts, "images_per_prompt": n_images}


@suite("service")
def service(ctx: RunContext) -> dict:
    """The latency suite's prompts through a live `loracle serve` (digits world) with the official `openai` client."""
    import json
    import os
    import subprocess
    import sys
    import time

    from openai import OpenAI

    from loracle.agent.catalog import ensure_world_catalog
    from loracle.agent.settings import get_settings
    from loracle.db.keys import create_key
    from loracle.evals.bench_service import free_port, server_metrics, wait_until_ready
    from loracle.evals.metrics import percentile

    db = ctx.cache["db"]
    settings = get_settings().model_copy(update={"base_model": "world", "home": ctx.out / "service-home"})
    ensure_world_catalog(db, settings)
    with db.connection() as conn:
        _, key = create_key(conn, f"eval-service-{time.time_ns()}")
        _, admin_key = create_key(conn, f"eval-service-admin-{time.time_ns()}", admin=True)  # /metrics is for admins
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LORACLE_DATABASE_URL": db.url, "LORACLE_HOME": str(settings.home), "LORACLE_BASE_MODEL": "world",
           "LORACLE_STEPS": "20", "LORACLE_N_IMAGES": "1", "LORACLE_ADAPTER_DIRS": json.dumps([str(p) for p in settings.adapter_dirs]),
           "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "loracle.cli.main", "serve", "--port", str(port), "--log-level", "warning"],
                              env=env, stderr=subprocess.DEVNULL)
    prompts = WORLD_PROMPTS
    n = ctx.options.get("prompts") or (4 if ctx.quick else 20)
    latencies: list[float] = []
    answered = 0
    try:
        if not wait_until_ready(base_url, server):
            raise RuntimeError("loracle serve did not become ready within 180 s")
        before = server_metrics(base_url, admin_key)
        client = OpenAI(base_url=f"{base_url}/v1", api_key=key, timeout=600)
        for i in ctx.progress(range(n), desc="service"):
            started = time.perf_counter()
            reply = client.chat.completions.create(model="loracle", seed=ctx.seed + i,
                                                   messages=[{"role": "user", "content": prompts[i % len(prompts)]}])
            latencies.append(time.perf_counter() - started)
            answered += bool(reply.choices and reply.choices[0].message.content)
        after = server_metrics(base_url, admin_key)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"metrics": {"chat turn": {"p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
                                      "answered_rate": answered / n, "http_5xx": after["5xx"] - before["5xx"]}},
            "prompts": n, "client": "openai (official), chat.completions over HTTP"}


@suite("faithfulness")
def faithfulness(ctx: RunContext) -> dict:
    """Digits world, the whole agent with retries: per number of requested styles (0-3) and composition method,
    images with the right digit, every requested style and no other, before and after retries, intervals over
    seeds, NFE per image; "make it X too" / "drop the X look" judged on the next turn's images."""
    from loracle.agent.catalog import ensure_world_catalog
    from loracle.agent.runtime import build_context
    from loracle.agent.settings import get_settings
    from loracle.agent.threads import Threads
    from loracle.evals.faithfulness import Reader, cases, multi_turn, single_turns

    _world(ctx)
    db = ctx.cache["db"]
    seeds = [ctx.seed + i for i in range(3)]
    per_count = ctx.options.get("prompts") or (1 if ctx.quick else 4)
    methods = ("merge", "composite") if ctx.quick else ("merge", "switch", "composite")
    base = get_settings().model_copy(update={"base_model": "world", "home": ctx.out / "home", "steps": 12 if ctx.quick else 30,
                                             "n_images": 2 if ctx.quick else 4, "llm_model": None})
    ensure_world_catalog(db, base)
    threads = Threads(db.url)
    metrics: dict[str, dict] = {}
    try:
        for method in methods:
            settings = base.model_copy(update={"composition_method": method})
            agent = build_context(settings, db, tenant=f"eval-{method}")
            reader = Reader(settings.images_dir)

            def run_turn(thread: str, message: str, seed: int, n: int) -> dict:
                return threads.run_turn(agent, thread, message, seed=seed, n_images=n)

            progress = lambda items, desc: ctx.progress(items, desc=desc)  # noqa: E731
            metrics[method] = single_turns(run_turn, reader, cases(per_count), seeds, settings.n_images, method, progress)
            metrics[method]["multi_turn"] = multi_turn(run_turn, reader, seeds, settings.n_images, method,
                                                       per_seed=1 if ctx.quick else 3, progress=progress)
    finally:
        threads.close()
    return {"metrics": metrics, "seeds": seeds, "prompts_per_style_count": per_count}
