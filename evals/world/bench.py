"""`python -m loracle.evals.world.bench`: the digits world's numbers, all sampled through `generation.Engine`.

Prints, side by side: the judge's held-out accuracy; digit adherence with CFG at 50 DDIM steps; adaptive
step skipping (model evaluations, PSNR against the full run on the same seeds, adherence) against plain
DDIM with the same number of evaluations; none / CFG / autoguidance over a sweep of w (FD and adherence,
pooled); style detection for each adapter alone, for compatible pairs and for a conflicting pair.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from loracle.evals.world.catalog import lora_filename
from loracle.evals.world.data import DIGIT_WORDS, load_splits
from loracle.evals.world.judge import Judge, evaluate_judge, frechet_distance, load_judge, to_tensor
from loracle.evals.world.styles import STYLES, style
from loracle.generation.world.paths import WorldPaths, world_paths


@dataclass
class Samples:
    images: torch.Tensor  # (N, 1, 16, 16) in [-1, 1], as the engine wrote them (uint8 round trip)
    labels: torch.Tensor
    evals: np.ndarray  # model evaluations (evaluated steps) per image
    seconds: float
    cpu_seconds: float = 0.0  # this process's CPU time: on a shared machine, wall time follows others' load


def sample_by_digit(n: int, generate: Callable[[int, list[int]], Any], nfe_divisor: int = 1) -> Samples:
    """n images, digit i % 10 for image i, one `generate(digit, image indices)` call (an engine result) per digit."""
    t0, c0 = time.perf_counter(), time.process_time()
    labels = torch.arange(n) % 10
    images = torch.empty(n, 1, 16, 16)
    evals = np.zeros(n)
    for d in range(10):
        idx = (labels == d).nonzero().flatten().tolist()
        if not idx:
            continue
        out = generate(d, idx)
        images[idx] = to_tensor(out.images)
        evals[idx] = np.array(out.nfe) / nfe_divisor
    return Samples(images, labels, evals, time.perf_counter() - t0, time.process_time() - c0)


class World:
    """The built world, loaded once: engine (base + guide + adapters), judge, real data."""

    def __init__(self, paths: WorldPaths):
        from loracle.generation.base_models import load_base_model
        from loracle.generation.engine import Engine

        self.paths = paths
        self.base = load_base_model(paths.base, device="cpu")
        self.guide = load_base_model(paths.guide, device="cpu")
        self.engine = Engine(self.base, [paths.loras], guide_models={"guide": self.guide})
        self.judge: Judge = load_judge(paths.judge)
        self.train, self.held_out = load_splits()
        self.real_features = self.judge.features(self.train.images)

    def sample(self, n: int, *, steps: int, guidance, skipping=None, mix: dict[str, float] | None = None,
               suffix: str = "", seed0: int = 0, batch: int = 100, scheduler: str = "ddim") -> Samples:
        """n images, digit i % 10 with seed seed0 + i: every setting sees the same (digit, seed) pairs."""
        from loracle.generation.engine import GenerationRequest
        from loracle.generation.skipping import SkipSettings

        skipping = skipping or SkipSettings(threshold=0.0)

        def generate(d: int, idx: list[int]):
            return self.engine.generate(GenerationRequest(
                prompt=f"a handwritten {DIGIT_WORDS[d]}{suffix}", mixes=[dict(mix or {})] * len(idx),
                seeds=[seed0 + i for i in idx], steps=steps, scheduler=scheduler, guidance=guidance,
                skipping=skipping, max_batch=batch))

        return sample_by_digit(n, generate, nfe_divisor=len(guidance.branches))

    def adherence(self, s: Samples) -> float:
        return (self.judge.digits(s.images) == s.labels).float().mean().item()

    def fd(self, s: Samples) -> float:
        return frechet_distance(self.judge.features(s.images), self.real_features)


def finish(out: dict, t0: float, json_path: str | None) -> dict:
    """The benches' last step: total time and load on stdout and, when asked, the results as JSON."""
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\ntotal {out['seconds']:.0f}s, load {os.getloadavg()[0]:.2f}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(out, f, indent=2)
    return out


def _cfg(w: float):
    from loracle.generation.guidance import GuidanceSettings

    return GuidanceSettings(kind="cfg", scale=w)


def _auto(w: float):
    from loracle.generation.guidance import GuidanceSettings, GuideSpec

    return GuidanceSettings(kind="auto", scale=w, guide=GuideSpec(kind="model", model="guide"))


def _none():
    from loracle.generation.guidance import GuidanceSettings

    return GuidanceSettings(kind="none", scale=1.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-image PSNR in dB on 8-bit pixels (images in [-1, 1]); identical images count as 60 dB."""
    mse = (((a - b) * 127.5) ** 2).flatten(1).mean(1)
    return float(torch.where(mse > 0, 10 * torch.log10(255**2 / mse.clamp_min(1e-12)), torch.tensor(60.0)).clamp(max=60).mean())


def ci95(p: float, n: int) -> float:
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-9) / n)


def bench_judge(w: World) -> dict:
    r = evaluate_judge(w.judge, w.held_out)
    r["fd_floor_real_heldout_vs_train"] = round(frechet_distance(w.judge.features(w.held_out.images), w.real_features), 2)
    print(f"\n== Judge (held-out real digits, n={r['n_held_out']})")
    print(f"digit accuracy: plain {r['digit_accuracy_real']:.4f} (target >= 0.97), styled {r['digit_accuracy_styled']:.4f}; "
          f"style accuracy {r['style_accuracy_mean']:.4f}; plain images with a false style {r['plain_images_with_a_false_style']:.3f}")
    print("style detected when applied: " + ", ".join(f"{k} {v['detected_when_applied']:.2f}" for k, v in r["per_style"].items()))
    print(f"FD floor (360 held-out real vs train): {r['fd_floor_real_heldout_vs_train']:.2f}")
    return r


def bench_adherence(w: World, n: int, cfg_w: float) -> tuple[dict, Samples]:
    s = w.sample(n, steps=50, guidance=_cfg(cfg_w))
    acc = w.adherence(s)
    false_style = np.mean([bool(x) for x in w.judge.detect(s.images)])
    r = {"n": n, "cfg": cfg_w, "steps": 50, "adherence": round(acc, 4), "ci95": round(ci95(acc, n), 4),
         "fd": round(w.fd(s), 2), "plain_samples_with_a_false_style": round(float(false_style), 4), "seconds": round(s.seconds, 1)}
    print(f"\n== Base model, CFG {cfg_w}, 50 DDIM steps, n={n}")
    print(f"digit adherence {acc:.4f} +/- {r['ci95']:.3f} (target >= 0.90); FD {r['fd']:.2f}; "
          f"samples with a falsely detected style {false_style:.3f}; {s.seconds:.0f}s")
    return r, s


def bench_skipping(w: World, full: Samples, n: int, cfg_w: float, thresholds=(0.01, 0.02, 0.05)) -> list[dict]:
    from loracle.generation.skipping import SkipSettings

    ref = Samples(full.images[:n], full.labels[:n], full.evals[:n], full.seconds)
    ref_acc = w.adherence(ref)
    rows = [{"method": "full 50 steps", "evals": 50.0, "speedup": 1.0, "psnr": 60.0, "adherence": round(ref_acc, 4)}]
    configs = [(f"skip thr {t} per-sample", SkipSettings(threshold=t)) for t in thresholds]
    configs.append(("skip thr 0.02 whole batch", SkipSettings(threshold=0.02, per_sample=False)))
    for name, sk in configs:
        s = w.sample(n, steps=50, guidance=_cfg(cfg_w), skipping=sk)
        ev = float(s.evals.mean())
        rows.append({"method": name, "evals": round(ev, 1), "speedup": round(50 / ev, 2),
                     "psnr": round(psnr(s.images, ref.images), 1), "adherence": round(w.adherence(s), 4),
                     "seconds": round(s.seconds, 1)})
        k = int(round(ev))
        if not any(r["method"] == f"uniform DDIM {k} steps" for r in rows):
            u = w.sample(n, steps=k, guidance=_cfg(cfg_w))
            rows.append({"method": f"uniform DDIM {k} steps", "evals": float(k), "speedup": round(50 / k, 2),
                         "psnr": round(psnr(u.images, ref.images), 1), "adherence": round(w.adherence(u), 4),
                         "seconds": round(u.seconds, 1)})
    print(f"\n== Adaptive step skipping at 50 steps, CFG {cfg_w}, n={n} (PSNR vs the full run, same seeds; "
          "evals = model evaluations per image, one batched cond+uncond call per step)")
    print(f"{'method':32s} {'evals':>6s} {'speedup':>8s} {'PSNR dB':>8s} {'adherence':>10s}")
    for r in rows:
        print(f"{r['method']:32s} {r['evals']:6.1f} {r['speedup']:7.2f}x {r['psnr']:8.1f} {r['adherence']:10.4f}")
    return rows


def bench_guidance(w: World, n: int, steps: int, ws=(1.25, 1.5, 2.0)) -> list[dict]:
    settings = [("none", 1.0, _none())] + [("cfg", x, _cfg(x)) for x in ws] + [("auto", x, _auto(x)) for x in ws]
    rows = []
    for kind, x, g in settings:
        s = w.sample(n, steps=steps, guidance=g, seed0=100_000)
        acc = w.adherence(s)
        feats = w.judge.features(s.images)
        rng = np.random.default_rng(0)
        boots = [frechet_distance(feats[rng.integers(0, n, n)], w.real_features) for _ in range(20)]
        rows.append({"guidance": kind, "w": x, "adherence": round(acc, 4), "ci95": round(ci95(acc, n), 4),
                     "fd": round(frechet_distance(feats, w.real_features), 2), "fd_boot_sd": round(float(np.std(boots)), 2),
                     "seconds": round(s.seconds, 1)})
    print(f"\n== Guidance sweep, {steps} DDIM steps, n={n} per setting, FD vs the training digits")
    print(f"{'guidance':9s} {'w':>5s} {'adherence':>15s} {'FD':>14s}")
    for r in rows:
        print(f"{r['guidance']:9s} {r['w']:5.2f} {r['adherence']:8.4f} +/-{r['ci95']:.3f} {r['fd']:7.2f} +/-{r['fd_boot_sd']:.2f}")
    best = {k: min((r for r in rows if r["guidance"] == k), key=lambda r: r["fd"]) for k in ("none", "cfg", "auto")}
    verdict = "beats" if best["auto"]["fd"] + best["auto"]["fd_boot_sd"] < best["cfg"]["fd"] - best["cfg"]["fd_boot_sd"] else (
        "does not beat" if best["auto"]["fd"] > best["cfg"]["fd"] else "ties (within noise)")
    print(f"best FD: none {best['none']['fd']:.2f}; CFG {best['cfg']['fd']:.2f} (w {best['cfg']['w']}); "
          f"autoguidance {best['auto']['fd']:.2f} (w {best['auto']['w']}) -> autoguidance {verdict} CFG's best FD")
    return rows


def bench_styles(w: World, n: int, steps: int, cfg_w: float, pairs) -> list[dict]:
    rows = []
    jobs = [((s.name,), {lora_filename(s)[:-12]: 1.0}) for s in STYLES if (w.paths.loras / lora_filename(s)).is_file()]
    for a, b, wt in pairs:
        jobs.append(((a, b), {lora_filename(style(a))[:-12]: wt, lora_filename(style(b))[:-12]: wt}))
    for names, mix in jobs:
        suffix = "".join(f", {style(x).trigger}" for x in names)
        s = w.sample(n, steps=steps, guidance=_cfg(cfg_w), mix=mix, suffix=suffix, seed0=200_000)
        found = w.judge.detect(s.images)
        per = {x: float(np.mean([x in f for f in found])) for x in names}
        both = float(np.mean([all(x in f for x in names) for f in found]))
        others = float(np.mean([bool(f - set(names)) for f in found]))
        rows.append({"styles": "+".join(names), "weights": list(mix.values()), "detected": {k: round(v, 3) for k, v in per.items()},
                     "all_detected": round(both, 3), "digit_ok": round(w.adherence(s), 3), "other_style_detected": round(others, 3)})
    print(f"\n== Style adapters, CFG {cfg_w}, {steps} DDIM steps, n={n} each (judge's style detector)")
    print(f"{'adapters':22s} {'weights':>10s} {'each detected':>26s} {'all':>6s} {'digit ok':>9s} {'other style':>12s}")
    for r in rows:
        each = " ".join(f"{k} {v:.2f}" for k, v in r["detected"].items())
        print(f"{r['styles']:22s} {'/'.join(f'{x:g}' for x in r['weights']):>10s} {each:>26s} {r['all_detected']:6.2f} "
              f"{r['digit_ok']:9.2f} {r['other_style_detected']:12.2f}")
    return rows


SECTIONS = ("judge", "adherence", "skipping", "guidance", "styles")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=500, help="images for the CFG adherence number")
    ap.add_argument("--skip-samples", type=int, default=200)
    ap.add_argument("--sweep-samples", type=int, default=600)
    ap.add_argument("--sweep-steps", type=int, default=20)
    ap.add_argument("--sweep-w", type=float, nargs="+", default=[1.25, 1.5, 2.0])
    ap.add_argument("--style-samples", type=int, default=100)
    ap.add_argument("--cfg", type=float, default=1.5)
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="run only these sections")
    ap.add_argument("--root", default=None, help="world folder (default: the committed artifacts)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    w = World(world_paths(args.root))
    out: dict = {"args": vars(args)}
    if "judge" in args.only:
        out["judge"] = bench_judge(w)
    full = None
    if "adherence" in args.only:
        out["adherence"], full = bench_adherence(w, args.samples, args.cfg)
    if "skipping" in args.only:
        n = min(args.skip_samples, args.samples) if full is not None else args.skip_samples
        full = full or w.sample(n, steps=50, guidance=_cfg(args.cfg))
        out["skipping"] = bench_skipping(w, full, n, args.cfg)
    if "guidance" in args.only:
        out["guidance"] = bench_guidance(w, args.sweep_samples, args.sweep_steps, tuple(args.sweep_w))
    if "styles" in args.only:
        pairs = [("slanted", "boxed", 1.0), ("bold", "inverted", 1.0), ("slanted", "boxed", 0.8), ("bold", "thin", 1.0)]
        out["styles"] = bench_styles(w, args.style_samples, args.sweep_steps, args.cfg, pairs)
    return finish(out, t0, args.json)


if __name__ == "__main__":
    main()
