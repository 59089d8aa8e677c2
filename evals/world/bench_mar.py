"""`python -m loracle.evals.world.bench_mar`: the digits world's MAR next to its diffusion base model.

Prints: MAR's digit adherence (the judge names the digit asked for) and FD (the world's FD: Frechet distance of
the judge's features to the training digits), next to the diffusion base model at matched compute (its DDIM
steps chosen so one image costs the CPU time a MAR image costs, measured on this machine: on a shared machine
wall time follows other people's load; wall seconds are printed too); quality vs AR steps
(4, 8, 16, N); MAR's CFG scale; each MAR style adapter with its trigger word (judge's style detector), and a
pair mixed by the binary-mask composer. Every MAR image goes through `generation.mar.engine.MAREngine`, every
diffusion image through `generation.Engine`; both see the same (digit, seed) pairs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from loracle.evals.world.bench import Samples, World, _cfg, ci95, finish, sample_by_digit
from loracle.evals.world.catalog import mar_lora_filename
from loracle.evals.world.data import DIGIT_WORDS
from loracle.evals.world.styles import STYLES, style
from loracle.generation.world.paths import world_paths


class MARWorld:
    """The world's MAR engine and its adapters (the judge and real features come from `World`)."""

    def __init__(self, w: World):
        from loracle.generation.mar.engine import MAREngine
        from loracle.generation.mar.io import load_mar

        self.bundle = load_mar(w.paths.mar)
        self.engine = MAREngine(self.bundle, [w.paths.mar_loras])
        self.n_tokens = self.bundle.model.seq_len

    def sample(self, n: int, *, ar_steps: int, cfg: float, mixes=None, suffix: str = "", seed0: int = 0,
               temperature: float | None = None, batch: int = 100) -> Samples:
        """n images, digit i % 10 with seed seed0 + i (as `World.sample`); `mixes`: one dict per image, or a
        Composition for the whole batch (its mixes are used in order)."""
        from loracle.generation.engine import GenerationRequest
        from loracle.generation.masks import Composition

        if temperature is not None:
            self.engine.temperature = temperature
        per_image = list(mixes.mixes) if isinstance(mixes, Composition) else (mixes or [{}] * n)

        def generate(d: int, idx: list[int]):
            picked = [per_image[i] for i in idx]
            req_mixes = Composition(picked) if isinstance(mixes, Composition) else [dict(m) for m in picked]
            return self.engine.generate(GenerationRequest(
                prompt=f"a handwritten {DIGIT_WORDS[d]}{suffix}", mixes=req_mixes, seeds=[seed0 + i for i in idx],
                steps=ar_steps, guidance=_cfg(cfg) if cfg != 1.0 else _none(), max_batch=batch))

        return sample_by_digit(n, generate)


def _none():
    from loracle.generation.guidance import GuidanceSettings

    return GuidanceSettings(kind="none", scale=1.0)


def _row(w: World, name: str, s: Samples, **extra) -> dict:
    acc = w.adherence(s)
    n = len(s.labels)
    return {"method": name, "n": n, "adherence": round(acc, 4), "ci95": round(ci95(acc, n), 4),
            "fd": round(w.fd(s), 2), "cpu_s_per_image": round(s.cpu_seconds / n, 4),
            "wall_s_per_image": round(s.seconds / n, 4), "nfe": float(s.evals.mean()), **extra}


def _print(title: str, rows: list[dict]) -> None:
    print(f"\n== {title}")
    print(f"{'method':36s} {'adherence':>16s} {'FD':>8s} {'CPU s/img':>10s} {'wall s/img':>11s} {'NFE':>6s}")
    for r in rows:
        print(f"{r['method']:36s} {r['adherence']:8.4f} +/-{r['ci95']:.3f} {r['fd']:8.2f} {r['cpu_s_per_image']:10.4f} "
              f"{r['wall_s_per_image']:11.4f} {r['nfe']:6.1f}")


def bench_matched(w: World, m: MARWorld, n: int, ar_steps: int, cfg: float, diff_cfg: float) -> list[dict]:
    """MAR at its default AR steps vs diffusion at the DDIM steps that cost the same wall time per image."""
    mar = m.sample(n, ar_steps=ar_steps, cfg=cfg)
    rows = [_row(w, f"MAR {ar_steps} AR steps, CFG {cfg:g}", mar)]
    probe_steps = 10
    probe = w.sample(min(n, 100), steps=probe_steps, guidance=_cfg(diff_cfg), seed0=50_000)
    per_step = probe.cpu_seconds / len(probe.labels) / probe_steps
    steps = int(np.clip(round(mar.cpu_seconds / n / per_step), 1, 200))
    diff = w.sample(n, steps=steps, guidance=_cfg(diff_cfg))
    rows.append(_row(w, f"diffusion {steps} DDIM steps, CFG {diff_cfg:g}", diff, matched_steps=steps))
    ref = w.sample(n, steps=50, guidance=_cfg(diff_cfg))
    rows.append(_row(w, f"diffusion 50 DDIM steps, CFG {diff_cfg:g}", ref))
    _print(f"MAR vs the diffusion base at matched compute per image (CPU seconds, one thread), n={n} (same digits "
           "and seeds)", rows)
    return rows


def bench_ar_steps(w: World, m: MARWorld, n: int, cfg: float, steps=(4, 8, 16)) -> list[dict]:
    rows = []
    for k in (*steps, m.n_tokens):
        rows.append(_row(w, f"MAR {k} AR steps" + (" (= N tokens)" if k == m.n_tokens else ""),
                         m.sample(n, ar_steps=k, cfg=cfg, seed0=100_000), ar_steps=k))
    _print(f"MAR quality vs AR steps, CFG {cfg:g}, n={n}", rows)
    return rows


def bench_cfg(w: World, m: MARWorld, n: int, ar_steps: int, scales=(1.0, 2.0, 3.0), temps=(0.7, 1.0)) -> list[dict]:
    rows = []
    for t in temps:
        for c in scales:
            rows.append(_row(w, f"MAR CFG {c:g}, temperature {t:g}", m.sample(n, ar_steps=ar_steps, cfg=c,
                                                                                 seed0=150_000, temperature=t), cfg=c,
                             temperature=t))
    m.engine.temperature = float(m.bundle.sampling.get("temperature", 1.0))
    _print(f"MAR CFG scale and temperature, {ar_steps} AR steps, n={n}", rows)
    return rows


def bench_styles(w: World, m: MARWorld, n: int, ar_steps: int, cfg: float) -> list[dict]:
    from loracle.generation.masks import Candidate, ComposerSettings, Task, compose

    built = [s for s in STYLES if (w.paths.mar_loras / mar_lora_filename(s)).is_file()]
    jobs = [((s.name,), [{mar_lora_filename(s)[:-12]: 1.0}] * n) for s in built]
    names = [s.name for s in built]
    pair = [p for p in (("slanted", "boxed"), ("bold", "boxed")) if all(x in names for x in p)][:1]
    for a, b in pair:  # the composer's per-image masks over the two adapters (each image: a, b, or both)
        task = Task("style", tuple(Candidate(mar_lora_filename(style(x))[:-12], 1.0) for x in (a, b)))
        jobs.append(((a, b), compose([task], n, ComposerSettings(scale=1.0, allow_all_off=False), seed=0)))
    rows = []
    for picked, mixes in jobs:
        suffix = "".join(f", {style(x).trigger}" for x in picked)
        s = m.sample(n, ar_steps=ar_steps, cfg=cfg, mixes=mixes, suffix=suffix, seed0=200_000)
        found = w.judge.detect(s.images)
        per_image = [m_ for m_ in (mixes.mixes if hasattr(mixes, "mixes") else [None] * n)]
        row = {"styles": "+".join(picked), "digit_ok": round(w.adherence(s), 3),
               "detected": {x: round(float(np.mean([x in f for f in found])), 3) for x in picked},
               "other_style_detected": round(float(np.mean([bool(f - set(picked)) for f in found])), 3)}
        if per_image[0] is not None:  # composer mix: detection where the adapter was switched on
            on = {x: [i for i, mx in enumerate(per_image) if mar_lora_filename(style(x))[:-12] in mx.as_dict()]
                  for x in picked}
            row["detected_when_on"] = {x: round(float(np.mean([x in found[i] for i in ix])), 3) if ix else None
                                       for x, ix in on.items()}
        rows.append(row)
    plain = m.sample(n, ar_steps=ar_steps, cfg=cfg, seed0=200_000)
    false_rate = {s.name: round(float(np.mean([s.name in f for f in w.judge.detect(plain.images)])), 3) for s in built}
    print(f"\n== MAR style adapters (trigger word in the prompt), {ar_steps} AR steps, CFG {cfg:g}, n={n} each; "
          "target: detected in >= 0.70")
    print(f"{'adapters':18s} {'detected':>28s} {'digit ok':>9s} {'other style':>12s} {'no adapter: falsely seen':>25s}")
    for r in rows:
        each = " ".join(f"{k} {v:.2f}" for k, v in (r.get("detected_when_on") or r["detected"]).items())
        fr = " ".join(f"{k} {false_rate[k]:.2f}" for k in r["detected"])
        label = r["styles"] + (" (composer)" if "detected_when_on" in r else "")
        print(f"{label:18s} {each:>28s} {r['digit_ok']:9.2f} {r['other_style_detected']:12.2f} {fr:>25s}")
    return rows


SECTIONS = ("matched", "ar_steps", "cfg", "styles")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200, help="images per setting")
    ap.add_argument("--style-samples", type=int, default=100)
    ap.add_argument("--ar-steps", type=int, default=None, help="MAR's AR steps (default: its folder's)")
    ap.add_argument("--cfg", type=float, default=None, help="MAR's CFG scale (default: its folder's)")
    ap.add_argument("--temperature", type=float, default=None, help="MAR's temperature (default: its folder's)")
    ap.add_argument("--diffusion-cfg", type=float, default=1.5)
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--root", default=None, help="world folder (default: the committed artifacts)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    w = World(world_paths(args.root))
    m = MARWorld(w)
    k = args.ar_steps or int(m.bundle.sampling.get("num_iter", 16))
    cfg = args.cfg if args.cfg is not None else float(m.bundle.sampling.get("cfg", 2.0))
    if args.temperature is not None:
        m.bundle.sampling["temperature"] = m.engine.temperature = args.temperature
    print(f"MAR '{m.bundle.name}': {sum(p.numel() for p in m.bundle.model.parameters())} parameters, "
          f"{m.n_tokens} tokens of {m.bundle.model.token_embed_dim} pixels; load {os.getloadavg()[0]:.2f}")
    out: dict = {"args": vars(args)}
    if "matched" in args.only:
        out["matched"] = bench_matched(w, m, args.samples, k, cfg, args.diffusion_cfg)
    if "ar_steps" in args.only:
        out["ar_steps"] = bench_ar_steps(w, m, args.samples, cfg)
    if "cfg" in args.only:
        out["cfg"] = bench_cfg(w, m, args.samples, k)
    if "styles" in args.only:
        out["styles"] = bench_styles(w, m, args.style_samples, k, cfg)
    return finish(out, t0, args.json)


if __name__ == "__main__":
    main()
