"""The selection suite: the agent's final picks against the labels, and orchestration time per node.

Runs the graph's own nodes from plan to check_mix (no sampling, no LLM) on labelled queries, so the
numbers are the product's: precision and recall of the picked adapters per prompt, next to the
baseline "top-3 of dense retrieval" (Stylus's retriever, cut at 3), and p50/p95 milliseconds per node.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from langgraph.runtime import Runtime
from tqdm import tqdm

from loracle.agent import nodes
from loracle.agent.state import AgentContext, AgentState
from loracle.evals.metrics import percentile, precision_recall
from loracle.evals.queries import external_to_row_ids, load_queries
from loracle.tools.retrieve import retrieve

NODES = ("plan", "retrieve", "select", "compose", "check_mix")
_FUNCTIONS = {"plan": nodes.plan, "retrieve": nodes.retrieve, "select": nodes.select, "compose": nodes.compose,
              "check_mix": nodes.check_mix}


def plan_and_select(ctx: AgentContext, prompt: str, seed: int = 0) -> tuple[AgentState, dict[str, float]]:
    """The state after check_mix for one prompt, and milliseconds spent in each node."""
    runtime = Runtime(context=ctx)
    state = AgentState(message=prompt, seed=seed, n_images=4)
    timings = {}
    for name in NODES:
        started = time.perf_counter()
        state = state.model_copy(update=_FUNCTIONS[name](state, runtime))
        timings[name] = (time.perf_counter() - started) * 1000
    return state, timings


def evaluate_selection(
    ctx: AgentContext, queries_path: Path, *, limit: int | None = None, progress: bool = False, heldout: bool = False,
    source: str = "civitai",
) -> dict:
    queries = load_queries(queries_path)
    if heldout:  # only queries the learned ranker and its thresholds never saw (evals/rank_train.py)
        from loracle.evals.rank_train import is_heldout

        queries = [q for q in queries if is_heldout(q.id)]
    queries = queries[:limit]
    with ctx.db.connection() as conn:
        row_ids = external_to_row_ids(conn, source)
    rows = {"offline planner": [], "top-3 dense": []}
    per_node: dict[str, list[float]] = {n: [] for n in NODES}
    totals, n_picks = [], []
    plan_and_select(ctx, "warm-up prompt")  # load caches before timing
    for query in tqdm(queries, desc="selection", disable=not progress):
        relevant = {row_ids[i] for i in query.labels if i in row_ids}
        if not relevant:
            continue
        state, timings = plan_and_select(ctx, query.prompt)
        for name, ms in timings.items():
            per_node[name].append(ms)
        totals.append(sum(timings.values()))
        picked = [p.adapter_id for ps in state.picks.values() for p in ps]
        n_picks.append(len(picked))
        rows["offline planner"].append(precision_recall(picked, relevant))
        with ctx.db.connection() as conn:
            dense = [h.adapter_id for h in retrieve(conn, ctx.embedder, query.prompt, strategy="dense", k=3)]
        rows["top-3 dense"].append(precision_recall(dense, relevant))
    return {
        "queries": len(totals),
        "methods": {name: {"precision": float(np.mean([p for p, _ in v])), "recall": float(np.mean([r for _, r in v]))}
                    for name, v in rows.items()},
        "mean_picks": float(np.mean(n_picks)) if n_picks else 0.0,
        "latency_ms": {name: {"p50": percentile(v, 50), "p95": percentile(v, 95)} for name, v in {**per_node, "total": totals}.items()},
    }


def format_selection(results: dict) -> str:
    lines = [f"{results['queries']} labelled queries; mean picks per prompt {results['mean_picks']:.2f}",
             f"{'method':<18}{'precision':>10}{'recall':>8}"]
    for name, row in results["methods"].items():
        lines.append(f"{name:<18}{row['precision']:>10.3f}{row['recall']:>8.3f}")
    lines.append(f"{'node':<18}{'p50 ms':>10}{'p95 ms':>8}")
    for name, row in results["latency_ms"].items():
        lines.append(f"{name:<18}{row['p50']:>10.1f}{row['p95']:>8.1f}")
    return "\n".join(lines)
