"""Comparing two eval runs: a regression table, and which chosen metrics got worse than a tolerance."""

from __future__ import annotations

from typing import Any

# metrics where lower is better; everything else counts as higher-is-better
LOWER_IS_BETTER = ("fd", "ms", "seconds", "nfe", "p50", "p95", "wall")


def flatten(results: dict[str, Any]) -> dict[str, float]:
    """suite.metric -> value for every numeric leaf under each suite's `metrics`."""
    flat: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            flat[prefix] = float(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)

    for name, suite in results.get("suites", {}).items():
        walk(name, suite.get("metrics", {}))
    return flat


def lower_is_better(metric: str) -> bool:
    leaf = metric.rsplit(".", 1)[-1].lower()
    return any(tag in leaf for tag in LOWER_IS_BETTER)


def compare(a: dict, b: dict, metrics: list[str] | None = None, tolerance: float = 0.0) -> tuple[list[dict], list[str]]:
    """Rows (metric, a, b, delta, worse) for metrics in both runs, and the chosen metrics that regressed.

    A chosen metric (a prefix match; all metrics when none are chosen) regresses when it got worse by more
    than `tolerance` (absolute)."""
    fa, fb = flatten(a), flatten(b)
    rows, regressed = [], []
    for metric in sorted(set(fa) & set(fb)):
        delta = fb[metric] - fa[metric]
        worse = -delta if not lower_is_better(metric) else delta
        chosen = not metrics or any(metric == m or metric.startswith(m + ".") for m in metrics)
        bad = chosen and worse > tolerance
        rows.append({"metric": metric, "a": fa[metric], "b": fb[metric], "delta": delta, "regressed": bad})
        if bad:
            regressed.append(metric)
    return rows, regressed


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'metric':<60}{'A':>12}{'B':>12}{'delta':>12}  "]
    for r in rows:
        lines.append(f"{r['metric']:<60}{r['a']:>12.4g}{r['b']:>12.4g}{r['delta']:>+12.4g}  {'WORSE' if r['regressed'] else ''}")
    return "\n".join(lines)
