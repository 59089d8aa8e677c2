"""`python -m loracle.evals.world.bench_mixes`: how the world's style LoRAs hold up merged one, two and three
at a time, the way the agent merges them (every requested style's adapter at one weight, its trigger word in
the prompt, DDIM, CFG).

Per mix size and setting (weight, CFG scale, steps) it prints the share of images with the right digit, with
every requested style seen, with no other style seen, and with all three (the judge reads them). Mixes are
drawn once, seeded, from the compatible sets on which every style can show (no mirrored 0/1/8, no inverted and
boxed together: the frame hides in the inked border), so every LoRA folder (`--root`) is scored on the same
images' digits, seeds and prompts.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch

from loracle.evals.world.bench import World, _cfg, finish
from loracle.evals.world.catalog import lora_filename
from loracle.evals.world.data import DIGIT_WORDS
from loracle.evals.world.styles import HIDDEN_BY, STYLE_NAMES, SYMMETRIC_DIGITS, compatible_sets, style
from loracle.generation.world.paths import world_paths


def draw_mixes(size: int, n_mixes: int, rng: random.Random) -> list[tuple[str, ...]]:
    """`n_mixes` distinct compatible sets of `size` styles that the judge can see together."""
    sets = [c for c in compatible_sets(STYLE_NAMES, size) if not any(h in c and by in c for h, by in HIDDEN_BY.items())]
    return rng.sample(sets, min(n_mixes, len(sets)))


def score_mix(w: World, names: tuple[str, ...], digits: list[int], weight: float, steps: int, cfg_w: float,
              seed0: int) -> list[tuple[bool, bool, bool]]:
    """Per image: right digit, every style of `names` seen, no other style seen."""
    from loracle.generation.engine import GenerationRequest

    mix = {lora_filename(style(x))[:-12]: weight for x in names}
    suffix = "".join(f", {style(x).trigger}" for x in names)
    rows = []
    for d in sorted(set(digits)):
        seeds = [seed0 + i for i, x in enumerate(digits) if x == d]
        out = w.engine.generate(GenerationRequest(prompt=f"a handwritten {DIGIT_WORDS[d]}{suffix}",
                                                  mixes=[dict(mix)] * len(seeds), seeds=seeds, steps=steps,
                                                  scheduler="ddim", guidance=_cfg(cfg_w)))
        read = w.judge.digits(out.images).tolist()
        found = w.judge.detect(out.images)
        rows += [(r == d, set(names) <= f, not (f - set(names))) for r, f in zip(read, found)]
    return rows


def bench_mixes(w: World, settings: list[tuple[int, float, float, int]], n_mixes: int, per_mix: int,
                seed: int = 0) -> list[dict]:
    """One row per (mix size, weight, CFG, steps): rates over `n_mixes` mixes x `per_mix` images."""
    rng = random.Random(seed)
    mixes = {k: draw_mixes(k, n_mixes, rng) for k in sorted({s[0] for s in settings})}
    rows = []
    for size, weight, cfg_w, steps in settings:
        t0 = time.perf_counter()
        images = []
        for j, names in enumerate(mixes[size]):
            allowed = [d for d in range(10) if "mirrored" not in names or d not in SYMMETRIC_DIGITS]
            digits = [allowed[(j + i) % len(allowed)] for i in range(per_mix)]
            images += score_mix(w, names, digits, weight, steps, cfg_w, seed0=500_000 + 1000 * j)
        a = np.array(images, dtype=float)
        rows.append({"size": size, "weight": weight, "cfg": cfg_w, "steps": steps, "n": len(images),
                     "digit": round(a[:, 0].mean(), 3), "styles": round(a[:, 1].mean(), 3),
                     "no_other": round(a[:, 2].mean(), 3), "faithful": round(a.all(1).mean(), 3),
                     "seconds": round(time.perf_counter() - t0, 1)})
        r = rows[-1]
        print(f"{size:4d} {weight:6.2f} {cfg_w:5.2f} {steps:5d} {r['n']:5d} {r['digit']:7.3f} {r['styles']:7.3f} "
              f"{r['no_other']:8.3f} {r['faithful']:9.3f} {r['seconds']:6.0f}s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="world folder (default: the committed artifacts)")
    ap.add_argument("--mixes", type=int, default=12, help="mixes drawn per size")
    ap.add_argument("--per-mix", type=int, default=10, help="images per mix and setting")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.8, 1.0], help="the agent's weight, and a repair's")
    ap.add_argument("--cfg", type=float, nargs="+", default=[1.5])
    ap.add_argument("--steps", type=int, nargs="+", default=[30])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    w = World(world_paths(args.root))
    settings = [(k, wt, c, s) for k in args.sizes for wt in args.weights for c in args.cfg for s in args.steps]
    print(f"== Style LoRAs merged k at a time, {args.mixes} mixes per size x {args.per_mix} images "
          "(judge: right digit, every requested style seen, no other style seen, all three)")
    print(f"{'k':>4s} {'weight':>6s} {'cfg':>5s} {'steps':>5s} {'n':>5s} {'digit':>7s} {'styles':>7s} "
          f"{'no other':>8s} {'faithful':>9s}")
    out = {"args": vars(args), "rows": bench_mixes(w, settings, args.mixes, args.per_mix)}
    return finish(out, t0, args.json)


if __name__ == "__main__":
    main()
