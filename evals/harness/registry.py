"""Suites by name, and running them so that one failing suite is reported while the others still run."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm


@dataclass
class RunContext:
    """What every suite gets: the run folder, quick mode, the seed and lazily opened shared resources."""

    out: Path
    quick: bool
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    def progress(self, iterable, desc: str, total: int | None = None):
        """A tqdm bar per suite (on stderr)."""
        return tqdm(iterable, desc=desc, total=total, leave=True)


SuiteFn = Callable[[RunContext], dict]
SUITES: dict[str, SuiteFn] = {}
OPT_IN: set[str] = set()  # suites that run only when named, because they need the user's own models


def suite(name: str, *, opt_in: bool = False) -> Callable[[SuiteFn], SuiteFn]:
    def register(fn: SuiteFn) -> SuiteFn:
        SUITES[name] = fn
        if opt_in:
            OPT_IN.add(name)
        return fn

    return register


def default_suites() -> list[str]:
    return [name for name in SUITES if name not in OPT_IN]


def run_suites(ctx: RunContext, names: list[str]) -> dict[str, dict]:
    """{name: {status: ok|failed, seconds, metrics... | error}} for each suite, in order."""
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ValueError(f"unknown suites {unknown}; known: {sorted(SUITES)}")
    results: dict[str, dict] = {}
    for name in names:
        started = time.perf_counter()
        try:
            out = SUITES[name](ctx)
            results[name] = {"status": "ok", **out}
        except Exception as exc:  # a failing suite is reported; the rest still run
            results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc(limit=6)}
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
    return results
