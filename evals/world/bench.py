"""`python -m loracle.evals.world.bench`: the digits world's numbers, all sampled through `generation.Engine`.

Prints, side by side: the judge's held-out accuracy; digit adherence with CFG at 50 DDIM steps; every scheduler
against DDIM at 20 and 50 steps (adherence and FD, over 3 seeds); adaptive step skipping with a chosen
scheduler (model evaluations, PSNR against the full run on the same seeds, adherence), forecasting and reusing,
against the same scheduler run plainly with the same number of evaluations; none / CFG / autoguidance over a
sweep of w (FD and adherence, pooled); style detection for each adapter alone, for compatible pairs and for a
conflicting pair; each composition method on every compatible pair of styles (both styles and the digit seen,
NFE per image, over 3 seeds).
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
    nfe: np.ndarray | None = None  # noise predictions per image (every branch and adapter group counted)


def sample_by_digit(n: int, generate: Callable[[int, list[int]], Any], nfe_divisor: int = 1) -> Samples:
    """n images, digit i % 10 for image i, one `generate(digit, image indices)` call (an engine result) per digit."""
    t0, c0 = time.perf_counter(), time.process_time()
    labels = torch.arange(n) % 10
    images = torch.empty(n, 1, 16, 16)
    nfe = np.zeros(n)
    for d in range(10):
        idx = (labels == d).nonzero().flatten().tolist()
        if not idx:
            continue
        out = generate(d, idx)
        images[idx] = to_tensor(out.images)
        nfe[idx] = np.array(out.nfe)
    return Samples(images, labels, nfe / nfe_divisor, time.perf_counter() - t0, time.process_time() - c0, nfe)


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

    def sample(self, n: int, *, steps: int, guidance, skipping=None, mix=None, suffix: str = "", seed0: int = 0,
               batch: int = 100, scheduler: str = "ddim", composition=None) -> Samples:
        """n images, digit i % 10 with seed seed0 + i: every setting sees the same (digit, seed) pairs.
        `mix`: {adapter: weight}, or a `Mix` with its task groups (for switch and composite)."""
        from loracle.generation.composition import CompositionMethod
        from loracle.generation.engine import GenerationRequest
        from loracle.generation.masks import Composition, Mix
        from loracle.generation.skipping import SkipSettings

        skipping = skipping or SkipSettings(threshold=0.0)

        def generate(d: int, idx: list[int]):
            mixes = Composition([mix] * len(idx)) if isinstance(mix, Mix) else [dict(mix or {})] * len(idx)
            return self.engine.generate(GenerationRequest(
                prompt=f"a handwritten {DIGIT_WORDS[d]}{suffix}", mixes=mixes,
                seeds=[seed0 + i for i in idx], steps=steps, scheduler=scheduler, guidance=guidance,
                skipping=skipping, max_batch=batch, composition_method=composition or CompositionMethod()))

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


T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student's t, 97.5th percentile, by degrees of freedom


def over_seeds(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% interval (Student's t) over per-seed values."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(T975.get(len(v) - 1, 1.96) * v.std(ddof=1) / math.sqrt(len(v)))


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


def bench_skipping(w: World, full: Samples, n: int, cfg_w: float, scheduler: str = "ddim",
                   thresholds=(0.02, 0.05, 0.1)) -> list[dict]:
    """Skipping at 50 steps (forecast, and the reference's reuse) next to plain `scheduler` at equal NFE."""
    from loracle.generation.skipping import SkipSettings

    ref = Samples(full.images[:n], full.labels[:n], full.evals[:n], full.seconds)
    ref_acc = w.adherence(ref)
    rows = [{"method": "full 50 steps", "evals": 50.0, "speedup": 1.0, "psnr": 60.0, "adherence": round(ref_acc, 4)}]
    configs = [(f"skip {t} forecast", SkipSettings(threshold=t)) for t in thresholds]
    configs += [(f"skip {t} reuse", SkipSettings(threshold=t, forecast=False)) for t in thresholds]
    for name, sk in configs:
        s = w.sample(n, steps=50, guidance=_cfg(cfg_w), skipping=sk, scheduler=scheduler)
        ev = float(s.evals.mean())
        k = int(round(ev))
        plain = next((r for r in rows if r["method"] == f"plain {k} steps"), None)
        if plain is None:
            u = w.sample(n, steps=k, guidance=_cfg(cfg_w), scheduler=scheduler)
            plain = {"method": f"plain {k} steps", "evals": float(k), "speedup": round(50 / k, 2),
                     "psnr": round(psnr(u.images, ref.images), 1), "adherence": round(w.adherence(u), 4),
                     "seconds": round(u.seconds, 1)}
        row = {"method": name, "evals": round(ev, 1), "speedup": round(50 / ev, 2),
               "psnr": round(psnr(s.images, ref.images), 1), "adherence": round(w.adherence(s), 4),
               "seconds": round(s.seconds, 1)}
        row["psnr_over_plain"] = round(row["psnr"] - plain["psnr"], 1)
        rows += [row] + ([plain] if plain not in rows else [])
    print(f"\n== Adaptive step skipping at 50 steps, {scheduler}, CFG {cfg_w}, n={n} (PSNR vs the full run, same seeds; "
          "evals = model evaluations per image, one batched cond+uncond call per step; plain = the same scheduler "
          "with that many steps)")
    print(f"{'method':24s} {'evals':>6s} {'speedup':>8s} {'PSNR dB':>8s} {'vs plain':>9s} {'adherence':>10s}")
    for r in rows:
        over = f"{r['psnr_over_plain']:+8.1f}" if "psnr_over_plain" in r else " " * 8
        print(f"{r['method']:24s} {r['evals']:6.1f} {r['speedup']:7.2f}x {r['psnr']:8.1f} {over} {r['adherence']:10.4f}")
    return rows


def bench_schedulers(w: World, n: int, cfg_w: float, steps=(20, 50), seeds=(0, 1, 2)) -> list[dict]:
    """Every scheduler at each step count: adherence and FD per seed set (n images each), mean and 95% interval."""
    from loracle.generation.schedulers import SCHEDULERS

    rows = []
    for scheduler in SCHEDULERS:
        for k in steps:
            per = [w.sample(n, steps=k, guidance=_cfg(cfg_w), scheduler=scheduler, seed0=300_000 + 10_000 * seed)
                   for seed in seeds]
            adh, adh_ci = over_seeds([w.adherence(s) for s in per])
            fd, fd_ci = over_seeds([w.fd(s) for s in per])
            ink = float(np.mean([(s.images > 0.98).float().mean().item() for s in per]))
            rows.append({"scheduler": scheduler, "steps": k, "adherence": round(adh, 4), "adherence_ci": round(adh_ci, 4),
                         "fd": round(fd, 2), "fd_ci": round(fd_ci, 2), "full_ink_share": round(ink, 4)})
    real_ink = float((w.held_out.images > 0.98).float().mean())
    print(f"\n== Schedulers, CFG {cfg_w}, n={n} per seed, {len(seeds)} seeds (mean +/- 95% interval over seeds; "
          f"FD vs the training digits; full-ink share: pixels > 0.98, real held-out digits {real_ink:.4f})")
    print(f"{'scheduler':16s} {'steps':>5s} {'adherence':>17s} {'FD':>16s} {'full ink':>9s}")
    for r in rows:
        print(f"{r['scheduler']:16s} {r['steps']:5d} {r['adherence']:8.4f} +/-{r['adherence_ci']:.3f} "
              f"{r['fd']:8.2f} +/-{r['fd_ci']:5.2f} {r['full_ink_share']:9.4f}")
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


def bench_styles(w: World, n: int, steps: int, cfg_w: float, mixes: list[tuple[tuple[str, ...], float]]) -> list[dict]:
    """Each adapter alone at weight 1, then each of `mixes` (styles, weight of each)."""
    rows = []
    jobs = [((s.name,), {lora_filename(s)[:-12]: 1.0}) for s in STYLES if (w.paths.loras / lora_filename(s)).is_file()]
    jobs += [(names, {lora_filename(style(x))[:-12]: wt for x in names}) for names, wt in mixes]
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
    print(f"{'adapters':26s} {'weights':>10s} {'each detected':>40s} {'all':>6s} {'digit ok':>9s} {'other style':>12s}")
    for r in rows:
        each = " ".join(f"{k} {v:.2f}" for k, v in r["detected"].items())
        print(f"{r['styles']:26s} {'/'.join(f'{x:g}' for x in r['weights']):>10s} {each:>40s} {r['all_detected']:6.2f} "
              f"{r['digit_ok']:9.2f} {r['other_style_detected']:12.2f}")
    return rows


def pair_mix(a: str, b: str, weight: float):
    """Two requested styles as the composer makes them: one task group each, at `weight` each."""
    from loracle.generation.masks import Mix

    ra, rb = lora_filename(style(a))[:-12], lora_filename(style(b))[:-12]
    return Mix.from_dict({ra: weight, rb: weight}, groups={a: {ra: weight}, b: {rb: weight}})


def adapter_guidance(cfg_w: float, guide_w: float):
    """CFG at `cfg_w` plus adapter guidance (the base without adapters as the guide) at `guide_w`: guidance
    'both' with w_u = cfg_w and w_c = guide_w."""
    from loracle.generation.guidance import GuidanceSettings, GuideSpec

    return GuidanceSettings.cfg_and_guide(cfg_w, guide_w, GuideSpec("no_adapters"))


COMPOSITION_METHODS = (("merge", "merge", 1, 1.0), ("switch every step", "switch", 1, 1.0),
                       ("switch every 5 steps", "switch", 5, 1.0), ("composite", "composite", 1, 1.0),
                       ("merge + adapter guidance 1.5", "merge", 1, 1.5), ("merge + adapter guidance 2", "merge", 1, 2.0))


def bench_composition(w: World, n: int, steps: int, cfg_w: float, weight: float = 0.8, seeds=(0, 1, 2),
                      methods=COMPOSITION_METHODS) -> list[dict]:
    """Each composition method on every compatible pair of styles (both requested, triggers in the prompt, the
    composer's weight): share of images where the judge sees both styles and the right digit, per seed set."""
    from itertools import combinations

    from loracle.evals.world.styles import compatible
    from loracle.generation.composition import CompositionMethod

    pairs = [(a.name, b.name) for a, b in combinations(STYLES, 2) if compatible((a.name, b.name))
             and (w.paths.loras / lora_filename(a)).is_file() and (w.paths.loras / lora_filename(b)).is_file()]
    rows = []
    for label, kind, every, guide_w in methods:
        guidance = _cfg(cfg_w) if guide_w == 1.0 else adapter_guidance(cfg_w, guide_w)
        per_seed, each, digit, nfe, seconds = [], [], [], [], 0.0
        for seed in seeds:
            hits = []
            for a, b in pairs:
                s = w.sample(n, steps=steps, guidance=guidance, mix=pair_mix(a, b, weight),
                             suffix=f", {style(a).trigger}, {style(b).trigger}", seed0=400_000 + 10_000 * seed,
                             composition=CompositionMethod(kind, every))
                found = w.judge.detect(s.images)
                right = (w.judge.digits(s.images) == s.labels).tolist()
                hits += [{a, b} <= f and ok for f, ok in zip(found, right)]
                each += [x in f for f in found for x in (a, b)]
                digit += right
                nfe += s.nfe.tolist()
                seconds += s.cpu_seconds
            per_seed.append(float(np.mean(hits)))
        share, ci = over_seeds(per_seed)
        rows.append({"method": label, "both_styles_and_digit": round(share, 4), "ci": round(ci, 4),
                     "per_seed": [round(x, 4) for x in per_seed], "each_style": round(float(np.mean(each)), 4),
                     "digit_ok": round(float(np.mean(digit)), 4), "nfe": round(float(np.mean(nfe)), 1),
                     "cpu_s_per_image": round(seconds / len(nfe), 3)})
    print(f"\n== Composition methods, {len(pairs)} compatible style pairs x {n} images x {len(seeds)} seeds, weight "
          f"{weight:g} each, {steps} DDIM steps, CFG {cfg_w} (judge: both styles seen and the right digit; mean "
          "+/- 95% interval over seeds; NFE per image)")
    print(f"{'method':34s} {'both + digit':>18s} {'each style':>11s} {'digit ok':>9s} {'NFE':>6s} {'CPU s/img':>10s}")
    for r in rows:
        print(f"{r['method']:34s} {r['both_styles_and_digit']:8.4f} +/-{r['ci']:.3f} {r['each_style']:11.4f} "
              f"{r['digit_ok']:9.4f} {r['nfe']:6.1f} {r['cpu_s_per_image']:10.3f}")
    return rows


SECTIONS = ("judge", "adherence", "schedulers", "skipping", "guidance", "styles", "composition")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=500, help="images for the CFG adherence number")
    ap.add_argument("--sched-samples", type=int, default=200, help="images per scheduler, step count and seed")
    ap.add_argument("--skip-samples", type=int, default=200)
    ap.add_argument("--skip-scheduler", default="ddim", help="the scheduler step skipping runs with")
    ap.add_argument("--sweep-samples", type=int, default=600)
    ap.add_argument("--sweep-steps", type=int, default=20)
    ap.add_argument("--sweep-w", type=float, nargs="+", default=[1.25, 1.5, 2.0])
    ap.add_argument("--style-samples", type=int, default=100)
    ap.add_argument("--pair-samples", type=int, default=10, help="images per style pair and seed (composition)")
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
    if "schedulers" in args.only:
        out["schedulers"] = bench_schedulers(w, args.sched_samples, args.cfg)
    if "skipping" in args.only:
        n = args.skip_samples
        if full is None or args.skip_scheduler != "ddim" or len(full.images) < n:
            full = w.sample(n, steps=50, guidance=_cfg(args.cfg), scheduler=args.skip_scheduler)
        out["skipping"] = bench_skipping(w, full, n, args.cfg, args.skip_scheduler)
    if "guidance" in args.only:
        out["guidance"] = bench_guidance(w, args.sweep_samples, args.sweep_steps, tuple(args.sweep_w))
    if "styles" in args.only:
        # Compatible pairs and a triple at full and the composer's weight, then both incompatible pairs.
        mixes = [(("slanted", "boxed"), 1.0), (("bold", "inverted"), 1.0), (("slanted", "boxed"), 0.8),
                 (("bold", "inverted"), 0.8), (("bold", "slanted", "boxed"), 0.8),
                 (("bold", "thin"), 1.0), (("outlined", "blurred"), 1.0)]
        out["styles"] = bench_styles(w, args.style_samples, args.sweep_steps, args.cfg, mixes)
    if "composition" in args.only:
        out["composition"] = bench_composition(w, args.pair_samples, args.sweep_steps, args.cfg)
    return finish(out, t0, args.json)


if __name__ == "__main__":
    main()
