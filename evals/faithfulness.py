"""Faithfulness in the digits world: does the whole agent (plan, pick, compose, sample, inspect, retry) deliver
the digit asked for, every style asked for, and no style that was not?

Prompts hold a digit and 0-3 styles named in plain words ("a bold, slanted seven"). Each turn runs through the
agent as a front end calls it; the world's eval judge (trained apart from the agent's) reads every image.
Before-retry numbers use the turn's first attempt, after-retry numbers the images the turn delivered. Multi-turn
cases ("make it X too", "drop the X look") are judged on the next turn's images. Used by the harness's
`faithfulness` suite and by `python -m loracle.evals.faithfulness`. For a baseline on an older commit (any with
`open_agent`), copy this file and `generation/world/artifacts/eval_judge/` onto it; hence its own copies of the
world's style rules.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from loracle.generation.world.judge import DIGIT_WORDS, load_judge
from loracle.generation.world.paths import world_paths

STYLE_WORDS = {"bold": "bold", "thin": "thin", "slanted": "slanted", "mirrored": "mirrored", "inverted": "inverted",
               "outlined": "outlined", "blurred": "blurred", "boxed": "boxed"}
EXCLUSIVE = ({"bold", "thin"}, {"outlined", "blurred"})  # pairs the world's conflicts.json says undo each other
SYMMETRIC = {0, 1, 8}  # "mirrored" cannot show on these (evals/world/README.md)
HIDDEN = ({"inverted", "boxed"},)  # inverted's inked border hides the frame: the renders are pixel-identical
TURN_STYLES = ["bold", "slanted", "inverted", "boxed", "outlined"]  # what multi-turn cases add and drop
T_95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57}

RunTurn = Callable[[str, str, int, int], dict]  # (thread id, message, seed, n images) -> the turn's final state


@dataclass(frozen=True)
class Case:
    digit: int
    styles: tuple[str, ...]

    @property
    def prompt(self) -> str:
        words = [STYLE_WORDS[s] for s in self.styles]
        return f"a {', '.join(words) + ' ' if words else ''}{DIGIT_WORDS[self.digit]}"


def cases(per_count: int, counts: Iterable[int] = (0, 1, 2, 3), seed: int = 0) -> list[Case]:
    """`per_count` prompts per number of styles: compatible styles, digits on which every style can show."""
    rng = random.Random(seed)
    out: list[Case] = []
    for k in counts:
        made = 0
        while made < per_count:
            styles = tuple(rng.sample(sorted(STYLE_WORDS), k))
            if any(pair <= set(styles) for pair in EXCLUSIVE + HIDDEN):
                continue
            digits = [d for d in range(10) if "mirrored" not in styles or d not in SYMMETRIC]
            out.append(Case(rng.choice(digits), styles))
            made += 1
    return out


class Reader:
    """Digit and detected styles per stored image, read by the eval judge: a judge trained apart from the one the
    agent inspects with (the agent retries until its own judge accepts an image, so that judge would count its own
    misreadings as successes). `agent_judge=True` reads with the agent's judge instead, to show the difference."""

    def __init__(self, images_dir: Path) -> None:
        paths = world_paths()
        if not (paths.eval_judge / "judge.safetensors").is_file():
            raise FileNotFoundError("the digits world has no eval judge; build it with `loracle world train --only eval-judge`")
        self.judges = {False: load_judge(paths.eval_judge), True: load_judge(paths.judge)}
        self.images_dir = images_dir

    def read(self, paths: list[str], agent_judge: bool = False) -> list[tuple[int, set[str]]]:
        if not paths:
            return []
        judge = self.judges[agent_judge]
        images = [Image.open(self.images_dir / p).convert("L") for p in paths]
        return list(zip((int(d) for d in judge.digits(images)), judge.detect(images)))


def score_images(reads: list[tuple[int, set[str]]], case: Case) -> dict[str, float]:
    """Per-image rates: right digit, every requested style seen, no unrequested style seen, all three."""
    wanted = set(case.styles)
    rows = [(d == case.digit, wanted <= seen, not (seen - wanted)) for d, seen in reads]
    n = max(len(rows), 1)
    return {"digit": sum(r[0] for r in rows) / n, "requested": sum(r[1] for r in rows) / n,
            "no_unrequested": sum(r[2] for r in rows) / n, "faithful": sum(all(r) for r in rows) / n, "images": len(rows)}


def first_attempt_paths(state: dict) -> list[str]:
    """The first images sampled (an attempt retried before sampling, for a finding on its mixes, made none)."""
    sampled = [a["images"] for a in state.get("attempts") or [] if a["images"]]
    return list(sampled[0]) if sampled else [i["path"] for i in state["images"]]


def interval(values: list[float]) -> dict[str, float]:
    """Mean over seeds with a 95% t half-width."""
    mean = statistics.fmean(values)
    half = T_95.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return {"mean": round(mean, 4), "ci95": round(half, 4)}


def _pool(rows: list[dict[str, float]]) -> dict[str, float]:
    total = sum(r["images"] for r in rows) or 1
    return {k: sum(r[k] * r["images"] for r in rows) / total for k in ("digit", "requested", "no_unrequested", "faithful")}


def single_turns(run_turn: RunTurn, reader: Reader, prompts: list[Case], seeds: list[int], n_images: int,
                 tag: str, progress: Callable[[Iterable, str], Iterable] = lambda x, _d: x) -> dict[str, Any]:
    """Per number of styles: before/after-retry rates with intervals over seeds, NFE per delivered image."""
    per_seed: dict[tuple[int, str], list[dict[str, float]]] = {}
    nfe: list[float] = []
    retried = 0
    jobs = [(seed, i, case) for seed in seeds for i, case in enumerate(prompts)]
    for seed, i, case in progress(jobs, f"faithfulness {tag}"):
        state = run_turn(f"faith-{tag}-{seed}-{i}-{time.time_ns()}", case.prompt, seed * 1000 + i, n_images)
        k = len(case.styles)
        per_seed.setdefault((seed, f"{k} before"), []).append(score_images(reader.read(first_attempt_paths(state)), case))
        delivered = [im["path"] for im in state["images"]]
        per_seed.setdefault((seed, f"{k} after"), []).append(score_images(reader.read(delivered), case))
        per_seed.setdefault((seed, f"{k} agent"), []).append(score_images(reader.read(delivered, agent_judge=True), case))
        nfe.append(state["nfe"] / max(len(state["images"]), 1))
        retried += bool(state.get("attempts"))
    result: dict[str, Any] = {}
    names = {"before": "before retries", "after": "after retries", "agent": "after retries, by the agent's own judge"}
    for key in sorted({key for _, key in per_seed}):
        pooled = [_pool(per_seed[(seed, key)]) for seed in seeds if (seed, key) in per_seed]
        count, when = key.split()
        result[f"{count} styles, {names[when]}"] = {
            metric: interval([p[metric] for p in pooled]) for metric in ("faithful", "digit", "requested", "no_unrequested")}
    result["nfe_per_image"] = round(statistics.fmean(nfe), 1) if nfe else 0.0
    result["turns_retried"] = retried / max(len(jobs), 1)
    return result


def multi_turn(run_turn: RunTurn, reader: Reader, seeds: list[int], n_images: int, tag: str, per_seed: int = 4,
               progress: Callable[[Iterable, str], Iterable] = lambda x, _d: x, prompt_seed: int = 1) -> dict[str, Any]:
    """"make it X too" (X then seen in the next turn's images) and "drop the X look" (X then absent)."""
    rng = random.Random(prompt_seed)
    adds, drops = [], []
    for seed in seeds:
        for i in range(per_seed):
            digit = rng.choice([2, 3, 4, 5, 6, 7, 9])
            first, second = rng.sample(TURN_STYLES, 2)
            while {first, second} in HIDDEN:
                first, second = rng.sample(TURN_STYLES, 2)
            adds.append((seed, i, Case(digit, (first,)), second))
            drops.append((seed, i, Case(digit, (first, second)), first))
    added: dict[int, list[float]] = {}
    removed: dict[int, list[float]] = {}
    for seed, i, case, style in progress(adds, f"make it X too {tag}"):
        thread = f"faith-add-{tag}-{seed}-{i}-{time.time_ns()}"
        run_turn(thread, case.prompt, seed * 1000 + i, n_images)
        state = run_turn(thread, f"make it {STYLE_WORDS[style]} too", seed * 1000 + i + 500, n_images)
        reads = reader.read([im["path"] for im in state["images"]])
        added.setdefault(seed, []).extend(style in seen for _, seen in reads)
    for seed, i, case, style in progress(drops, f"drop the X look {tag}"):
        thread = f"faith-drop-{tag}-{seed}-{i}-{time.time_ns()}"
        run_turn(thread, case.prompt, seed * 1000 + i, n_images)
        state = run_turn(thread, f"drop the {STYLE_WORDS[style]} look", seed * 1000 + i + 500, n_images)
        reads = reader.read([im["path"] for im in state["images"]])
        removed.setdefault(seed, []).extend(style not in seen for _, seen in reads)
    return {"make it X too: X present": interval([statistics.fmean(v) for v in added.values()]),
            "drop the X look: X absent": interval([statistics.fmean(v) for v in removed.values()])}


def repeated_example(run_turn: RunTurn, reader: Reader, runs: int = 10, n_images: int = 4,
                     prompt: str = "a bold, slanted seven", first_seed: int = 7000) -> dict[str, Any]:
    """The README's example run `runs` times in a row on one home: images per run with both styles seen."""
    both = []
    for i in range(runs):
        state = run_turn(f"faith-readme-{i}-{time.time_ns()}", prompt, first_seed + i, n_images)
        both.append(sum({"bold", "slanted"} <= seen for _, seen in reader.read([im["path"] for im in state["images"]])))
    return {"both_styles_per_run": both, "runs_with_at_least_3_of_4": sum(b >= 3 for b in both) / runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-count", type=int, default=4, help="prompts per number of styles (0-3)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--methods", default="merge", help="comma-separated composition methods")
    parser.add_argument("--multi-turn", type=int, default=3, help="cases per seed for each multi-turn kind (0: none)")
    parser.add_argument("--readme-runs", type=int, default=10)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--dev", action="store_true",
                        help="other prompts and seeds than the reported ones: for choosing settings")
    args = parser.parse_args()

    from loracle.agent.service import open_agent
    from loracle.agent.settings import Settings

    home = args.home or Path(tempfile.mkdtemp(prefix="loracle-faith-"))
    report: dict[str, Any] = {"per_count": args.per_count, "seeds": args.seeds, "n_images": args.n_images, "steps": args.steps}
    seeds = [s + 100 * args.dev for s in range(args.seeds)]
    prompt_seed = 1 + 10 * args.dev
    for method in args.methods.split(","):
        update: dict[str, Any] = {"home": home, "base_model": "world", "steps": args.steps, "llm_model": None}
        if "composition_method" in Settings.model_fields:
            update["composition_method"] = method
        settings = Settings().model_copy(update=update)
        with open_agent(settings) as agent:
            reader = Reader(settings.images_dir)

            def run_turn(thread: str, message: str, seed: int, n: int) -> dict:
                return agent.run_turn(thread, message, seed=seed, n_images=n)

            started = time.perf_counter()
            prompts = cases(args.per_count, seed=prompt_seed - 1)
            report[method] = single_turns(run_turn, reader, prompts, seeds, args.n_images, method)
            if args.multi_turn:
                report[method]["multi_turn"] = multi_turn(run_turn, reader, seeds, args.n_images, method, args.multi_turn,
                                                          prompt_seed=prompt_seed)
            if args.readme_runs and method == args.methods.split(",")[0]:
                report["readme_example"] = repeated_example(run_turn, reader, args.readme_runs,
                                                            first_seed=7000 + 1000 * args.dev)
            report[method]["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps({method: report[method]}, indent=1), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
