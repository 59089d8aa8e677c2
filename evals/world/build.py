"""`loracle world train`: rebuild every artifact of the digits world, seeded, on one CPU thread.

Parts can be built alone (`only=`); each part seeds itself, so building in parts gives the same files as
building all at once. The quick plan trains every kind of artifact for a few steps (for tests).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from loracle.evals.world.catalog import lora_filename, write_catalog
from loracle.evals.world.data import load_splits, vocabulary_words
from loracle.evals.world.judge import JudgeTraining, save_judge, train_judge
from loracle.evals.world.modelio import BASE_MODEL_NAME, save_lora, save_model
from loracle.evals.world.nets import BASE_SIZE, GUIDE_SIZE, build_text_encoder, build_unet
from loracle.evals.world.styles import STYLE_NAMES, style
from loracle.evals.world.tokenizer import build_tokenizer
from loracle.evals.world.train import MixConfig, RunConfig, train_diffusion, train_loras
from loracle.generation.world.judge import JudgeConfig
from loracle.generation.world.paths import world_paths

# The MAR's sampling defaults, saved in its folder: the head's x0 is clipped to the pixel range because the
# world's MAR draws pixel tokens, which never leave [-1, 1] (`python -m loracle.evals.world.bench_mar` reports
# adherence and FD with these settings).
MAR_SAMPLING = {"num_iter": 16, "cfg": 2.0, "temperature": 0.7, "clip_x0": True}
PARTS = ("base", "guide", "loras", "judge", "eval-judge", "catalog", "mar", "mar-loras")
# The faithfulness eval's judge: the agent retries until its own judge accepts an image, so scoring the delivered
# images with that judge would count its misreadings as successes. This one is trained apart: another seed, other
# conv widths, stronger pixel noise.
EVAL_JUDGE = JudgeTraining(net=JudgeConfig(widths=(24, 40, 64)), noise=0.08)
EVAL_JUDGE_SEED = 13


@dataclass(frozen=True)
class Plan:
    base: RunConfig
    guide: RunConfig
    lora: RunConfig
    judge_steps: int
    styles: tuple[str, ...]
    lora_rank: int = 8
    lora_mix: MixConfig = MixConfig()
    lora_phase2: RunConfig | None = None  # a second joint phase, warm-started from the first, with its own mix
    lora_mix2: MixConfig = MixConfig()
    mar: RunConfig = RunConfig(steps=30, batch=16, lr=1.5e-3, warmup=5, ema=0.9, seed=4, eval_n=64, eval_repeats=2)
    mar_lora: RunConfig = RunConfig(steps=12, batch=16, lr=5e-3, warmup=3, ema=0.0, seed=5, eval_n=64, eval_repeats=2)
    mar_styles: tuple[str, ...] = ("bold",)


FULL = Plan(
    base=RunConfig(steps=800, batch=64, lr=2e-3, warmup=50, ema=0.999, seed=0),
    # Same layout, about a quarter of the parameters, a quarter of the training (Karras et al.'s best guides).
    guide=RunConfig(steps=250, batch=64, lr=2e-3, warmup=25, ema=0.99, seed=1),
    # All eight jointly, 1-3 active per step (about 2.15 on average): each adapter is active in ~800 steps. At
    # 1000 steps (~210 each) merged triples kept the digit in 0.55 of images (bench_mixes), at 3000 in 0.83.
    lora=RunConfig(steps=3000, batch=32, lr=5e-3, warmup=50, ema=0.0, cond_dropout=0.1, seed=2),
    # Phase 2, mostly triples, thin-heavy: merged three at a time thin was the style that went missing (seen in
    # 0.41 of thin triples at the agent's weight 0.8, every other style in >= 0.96 of the agent's triples).
    # Three-style images with every style and no other (bench_mixes, dev seeds): 0.45 -> 0.56; thin 0.41 -> 0.49.
    lora_phase2=RunConfig(steps=2000, batch=32, lr=2e-3, warmup=50, ema=0.0, cond_dropout=0.1, seed=3),
    lora_mix2=MixConfig(size_p=(0.1, 0.2, 0.7), style_weights=(("thin", 5.0),)),
    judge_steps=24000,  # uniform over 0-3 styles, drawn from pre-rendered sets (~23 min on a loaded core, ~5 idle)
    styles=STYLE_NAMES,
    # MAR: ~0.4 s/step at batch 32 on one loaded core (the head's per-token MLP dominates), ~11 min in all.
    mar=RunConfig(steps=1400, batch=32, lr=1.5e-3, warmup=100, ema=0.999, seed=4),
    mar_lora=RunConfig(steps=150, batch=32, lr=5e-3, warmup=20, ema=0.0, seed=5),
    mar_styles=("bold", "inverted", "boxed"),
)
QUICK = Plan(
    base=RunConfig(steps=30, batch=16, lr=2e-3, warmup=5, ema=0.9, seed=0, eval_n=64, eval_repeats=2, text_pretrain=10),
    guide=RunConfig(steps=15, batch=16, lr=2e-3, warmup=3, ema=0.9, seed=1, eval_n=64, eval_repeats=2, text_pretrain=10),
    lora=RunConfig(steps=12, batch=16, lr=5e-3, warmup=3, ema=0.0, seed=2, eval_n=64, eval_repeats=2),
    lora_phase2=RunConfig(steps=4, batch=16, lr=2e-3, warmup=1, ema=0.0, seed=3, eval_n=64, eval_repeats=2),
    lora_mix2=MixConfig(size_p=(0.15, 0.25, 0.6), style_weights=(("thin", 3.0),)),
    judge_steps=40,
    styles=("bold", "thin"),  # one diffusers-format and one kohya-format adapter, and a conflicting pair
)


def build_world(out: Path | None = None, quick: bool = False, only: tuple[str, ...] = PARTS, log=print,
                styles: tuple[str, ...] | None = None) -> dict:
    """Train and save the parts in `only` (LoRAs and MAR LoRAs: `styles`, default the plan's); returns (and
    writes) the training report."""
    torch.set_num_threads(1)
    say = log or (lambda *_: None)
    bad = set(only) - set(PARTS)
    if bad:
        raise ValueError(f"unknown parts {sorted(bad)}; choose from {', '.join(PARTS)}")
    plan = QUICK if quick else FULL
    paths = world_paths(out)
    paths.root.mkdir(parents=True, exist_ok=True)
    report = json.loads(paths.report.read_text()) if paths.report.is_file() else {}
    report.update(mode="quick" if quick else "full", plan=asdict(plan))
    t0 = time.perf_counter()
    train, held_out = load_splits()
    tokenizer = build_tokenizer(vocabulary_words())

    if "base" in only:
        say("base model")
        torch.manual_seed(plan.base.seed)
        unet, te = build_unet(BASE_SIZE), build_text_encoder(BASE_SIZE, len(tokenizer))
        r = train_diffusion("base", unet, te, tokenizer, train, held_out, plan.base, log)
        save_model(paths.base, unet, te, tokenizer, BASE_MODEL_NAME)
        report["base"] = r.summary()
    if "guide" in only:
        say("guide model")
        torch.manual_seed(plan.guide.seed)
        unet, te = build_unet(GUIDE_SIZE), build_text_encoder(GUIDE_SIZE, len(tokenizer))
        r = train_diffusion("guide", unet, te, tokenizer, train, held_out, plan.guide, log)
        save_model(paths.guide, unet, te, tokenizer, BASE_MODEL_NAME + " guide")
        report["guide"] = r.summary()
    if "loras" in only:
        say("style LoRAs")
        from loracle.generation.base_models import load_base_model

        base = load_base_model(paths.base, device="cpu")
        report["loras"] = dict(report.get("loras", {}))
        chosen = [style(name) for name in styles or plan.styles]
        tensors, runs = train_loras(base.unet, base.text_encoder, base.tokenizer, chosen, train, held_out, plan.lora,
                                    plan.lora_rank, plan.lora_mix, log)
        summaries = {s.name: runs[s.name].summary() for s in chosen}
        if plan.lora_phase2:
            say("style LoRAs, phase 2")
            tensors, runs = train_loras(base.unet, base.text_encoder, base.tokenizer, chosen, train, held_out,
                                        plan.lora_phase2, plan.lora_rank, plan.lora_mix2, log, init=tensors)
            summaries = {name: _after_phase2(first, runs[name].summary()) for name, first in summaries.items()}
        for s in chosen:
            save_lora(paths.loras / lora_filename(s), tensors[s.name], s.fmt, plan.lora_rank,
                      {"loracle.style": s.name, "loracle.trigger": s.trigger})
            report["loras"][s.name] = summaries[s.name]
    if "judge" in only:
        say("judge")
        judge, r = train_judge(train, held_out, plan.judge_steps, seed=3, log=log)
        save_judge(judge, paths.judge, r)
        report["judge"] = r
    if "eval-judge" in only:
        say("eval judge")
        judge, r = train_judge(train, held_out, plan.judge_steps, seed=EVAL_JUDGE_SEED, log=log, config=EVAL_JUDGE)
        save_judge(judge, paths.eval_judge, r)
        report["eval-judge"] = r
    if "catalog" in only:
        write_catalog(paths.root, paths.loras, [style(n) for n in plan.styles])
    if "mar" in only:
        say("MAR model")
        report["mar"] = _build_mar(paths, plan, train, held_out, log)
    if "mar-loras" in only:
        say("MAR style LoRAs")
        report["mar-loras"] = {**report.get("mar-loras", {}),
                               **_build_mar_loras(paths, plan, train, held_out, log, styles or plan.mar_styles)}
    report.setdefault("seconds", {})[",".join(only)] = round(time.perf_counter() - t0, 1)
    # Re-read before writing, so parts built by separate processes keep each other's entries.
    merged = json.loads(paths.report.read_text()) if paths.report.is_file() else {}
    merged.update({k: v for k, v in report.items() if k in only or k in ("mode", "plan")})
    if "mar-loras" in only:
        merged["mar-loras"] = {**(json.loads(paths.report.read_text()).get("mar-loras", {}) if paths.report.is_file() else {}),
                               **report["mar-loras"]}
    if "loras" in only:  # LoRAs may be built by several processes: merge per style
        merged["loras"] = {**(json.loads(paths.report.read_text()).get("loras", {}) if paths.report.is_file() else {}),
                           **report["loras"]}
    merged.setdefault("seconds", {}).update(report["seconds"])
    paths.report.write_text(json.dumps(merged, indent=2) + "\n")
    return merged


def _after_phase2(first: dict, second: dict) -> dict:
    """One LoRA's report over both phases: losses before phase 1 and after phase 2, steps and seconds of both,
    and each phase's own summary."""
    both = {**second, "phase1": first, "phase2": second}
    for key in ("eval_loss_before", "eval_loss_pairs_before", "eval_loss_triples_before", "train_loss_first"):
        if key in first:
            both[key] = first[key]
    both["steps"], both["seconds"] = first["steps"] + second["steps"], round(first["seconds"] + second["seconds"], 1)
    return both


def _base_text_encoder(paths):
    """The MAR reads captions with the base model's trained text encoder (frozen): the world's one tokenizer
    and text encoder, so prompts mean the same to both generator families."""
    from transformers import CLIPTextModel, CLIPTokenizer

    if not (paths.base / "text_encoder").is_dir():
        raise ValueError(f"the MAR needs the base model's text encoder; build 'base' first (no {paths.base}/text_encoder)")
    return CLIPTextModel.from_pretrained(paths.base / "text_encoder").eval(), CLIPTokenizer.from_pretrained(paths.base / "tokenizer")


def _build_mar(paths, plan: Plan, train, held_out, log) -> dict:
    from loracle.evals.world.mar import MAR_CONFIG, train_mar
    from loracle.evals.world.modelio import MAR_MODEL_NAME
    from loracle.generation.mar import MAR
    from loracle.generation.mar.io import save_mar

    te, tok = _base_text_encoder(paths)
    torch.manual_seed(plan.mar.seed)
    model = MAR(MAR_CONFIG)
    r = train_mar(model, te, tok, train, held_out, plan.mar, log)
    save_mar(paths.mar, model, MAR_MODEL_NAME, te, tok, sampling=dict(MAR_SAMPLING))
    return r.summary()


def _build_mar_loras(paths, plan: Plan, train, held_out, log, styles: tuple[str, ...]) -> dict:
    from loracle.evals.world.catalog import mar_lora_filename, write_mar_catalog
    from loracle.evals.world.mar import train_mar_lora
    from loracle.evals.world.modelio import save_mar_lora
    from loracle.generation.mar.io import load_mar

    bundle = load_mar(paths.mar)
    out = {}
    for name in styles:
        s = style(name)
        tensors, r = train_mar_lora(bundle.model, bundle.text_encoder, bundle.tokenizer, s, train, held_out,
                                    plan.mar_lora, plan.lora_rank, log)
        save_mar_lora(paths.mar_loras / mar_lora_filename(s), tensors, plan.lora_rank,
                      {"loracle.style": s.name, "loracle.trigger": s.trigger})
        out[name] = r.summary()
    built = sorted(p.stem.removeprefix("digits_mar_") for p in paths.mar_loras.glob("digits_mar_*.safetensors"))
    write_mar_catalog(paths.mar_catalog, paths.mar_loras, [s for s in map(style, STYLE_NAMES) if s.name in built])
    return out
