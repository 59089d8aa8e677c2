"""Training loops for the world's models: the base model, the weaker guide, and the style LoRAs.

Plain torch with diffusers' DDPMScheduler for noising. Every loop is seeded and single-threaded by the caller
(`torch.set_num_threads(1)`), so the same command rebuilds the same weights. Each loop also reports the loss on
a fixed held-out batch (fixed noise and timesteps) before and after training: the honest "did it learn" number.
"""

from __future__ import annotations

import copy
import math
import random
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from loracle.evals.world.data import Split, captions
from loracle.evals.world.styles import Style, apply_styles, compatible_sets

# Cosine betas; DDIM sampling with trailing spacing and x0 clipping (the models draw pixels in [-1, 1]).
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}
LORA_TARGETS = r".*(resnets\.\d+\.(conv1|conv2|time_emb_proj)|attn[12]\.(to_q|to_k|to_v|to_out\.0)|proj_in|proj_out)$"


@dataclass(frozen=True)
class RunConfig:
    """One training run's knobs."""

    steps: int
    batch: int = 64
    lr: float = 2e-3
    warmup: int = 50
    ema: float = 0.999
    cond_dropout: float = 0.1
    seed: int = 0
    eval_n: int = 200  # held-out images in the fixed before/after loss
    eval_repeats: int = 3
    text_pretrain: int = 100  # steps of the text encoder alone on the digit-from-caption task
    aux_weight: float = 0.1  # that task's loss during joint training


@dataclass
class RunReport:
    """What a run did: loss curve (every step), held-out loss before/after, seconds."""

    name: str
    losses: list[float] = field(default_factory=list)
    eval_before: float = float("nan")
    eval_after: float = float("nan")
    seconds: float = 0.0
    params: int = 0
    pairs: tuple[float | None, float | None] | None = None  # a LoRA's mean held-out loss in pairs, before/after
    triples: tuple[float | None, float | None] | None = None  # the same in triples

    def summary(self) -> dict:
        k = max(1, min(20, len(self.losses) // 5))
        mixes = {f"eval_loss_{kind}_{when}": round(loss, 4)
                 for kind, losses in (("pairs", self.pairs), ("triples", self.triples))
                 if losses is not None and None not in losses for when, loss in zip(("before", "after"), losses)}
        return {
            "name": self.name, "steps": len(self.losses), "params": self.params, "seconds": round(self.seconds, 1),
            "train_loss_first": round(sum(self.losses[:k]) / k, 4),
            "train_loss_last": round(sum(self.losses[-k:]) / k, 4),
            "eval_loss_before": round(self.eval_before, 4), "eval_loss_after": round(self.eval_after, 4), **mixes,
        }


def noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config({k: v for k, v in SCHEDULER_CONFIG.items() if k != "steps_offset"})


def _lr(step: int, cfg: RunConfig) -> float:
    """Linear warmup, then cosine decay to 10%."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


class Ema:
    """EMA of parameters with a warmup (decay grows as (1+n)/(10+n)), so short runs are not dominated by init."""

    def __init__(self, modules: list[torch.nn.Module], decay: float):
        self.decay = decay
        self.params = [p for m in modules for p in m.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.n = 0

    @torch.no_grad()
    def update(self) -> None:
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)


def _encode(tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0]


class _Batches:
    """Seeded minibatches of (images, captions) from a split, optionally styled."""

    def __init__(self, data: Split, cfg: RunConfig, style: Style | None = None, seed_offset: int = 0):
        self.images = apply_styles(data.images, [style.name]) if style else data.images
        self.labels = data.labels
        self.style = style
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(cfg.seed + seed_offset)
        self.rng = random.Random(cfg.seed + seed_offset)

    def next(self) -> tuple[torch.Tensor, list[str]]:
        x, texts, _ = self.next_labelled()
        return x, texts

    def next_labelled(self) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """Images, captions, and the digit each caption names (-100 for a dropped caption)."""
        idx = torch.randint(0, len(self.labels), (self.cfg.batch,), generator=self.gen)
        suffix = f", {self.style.trigger}" if self.style else ""
        texts = captions(self.labels[idx], self.rng, self.cfg.cond_dropout, suffix)
        named = torch.where(torch.tensor([bool(t) for t in texts]), self.labels[idx], torch.tensor(-100))
        return self.images[idx], texts, named


def _loss(unet, tokenizer, text_encoder, sched, x0: torch.Tensor, texts: list[str], gen: torch.Generator,
          aux_head: torch.nn.Module | None = None, named: torch.Tensor | None = None):
    """Noise-prediction MSE; with `aux_head`, plus the text encoder's digit-from-caption cross-entropy."""
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=gen)
    xt = sched.add_noise(x0, noise, t)
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    out = text_encoder(ids)
    loss = F.mse_loss(unet(xt, t, encoder_hidden_states=out[0]).sample, noise)
    if aux_head is None:
        return loss
    return loss, _aux_loss(aux_head, out[0], named)


def _aux_loss(head: torch.nn.Module, states: torch.Tensor, named: torch.Tensor) -> torch.Tensor:
    """Every token state after the digit word must name the digit (mean over positions). Without this push,
    a UNet trained from scratch learned to ignore the prompt entirely: the unconditional digit prior already
    gives a low loss, and the text pathway, random at first, was switched off within 50 steps."""
    if not (named >= 0).any():
        return states.sum() * 0
    logits = head(states[:, 1:])  # (B, L-1, 10); every position from the first word on
    target = named[:, None].expand(-1, logits.shape[1])
    return F.cross_entropy(logits.reshape(-1, 10), target.reshape(-1), ignore_index=-100)


@torch.no_grad()
def eval_loss(unet, tokenizer, text_encoder, held_out: Split, styles: tuple[Style, ...] = (), n: int = 200,
              repeats: int = 3) -> float:
    """Loss on a fixed held-out batch with fixed noise, timesteps and captions (carrying every style's trigger)."""
    sched = noise_scheduler()
    x0 = apply_styles(held_out.images[:n], [s.name for s in styles]) if styles else held_out.images[:n]
    texts = captions(held_out.labels[:n], random.Random(1234), 0.0, "".join(f", {s.trigger}" for s in styles))
    losses = [_loss(unet, tokenizer, text_encoder, sched, x0, texts, torch.Generator().manual_seed(99 + r)).item()
              for r in range(repeats)]
    return sum(losses) / len(losses)


def train_diffusion(name: str, unet, text_encoder, tokenizer, data: Split, held_out: Split, cfg: RunConfig,
                    log=print) -> RunReport:
    """Joint training of a UNet and its text encoder (the base model and the guide); EMA weights at the end."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    report = RunReport(name, params=sum(p.numel() for m in (unet, text_encoder) for p in m.parameters()))
    unet.eval(), text_encoder.eval()
    report.eval_before = eval_loss(unet, tokenizer, text_encoder, held_out, (), cfg.eval_n, cfg.eval_repeats)
    unet.train(), text_encoder.train()
    aux_head = torch.nn.Linear(text_encoder.config.hidden_size, 10)  # training-only; not saved
    sched, batches = noise_scheduler(), _Batches(data, cfg)
    te_opt = torch.optim.AdamW(list(text_encoder.parameters()) + list(aux_head.parameters()), lr=cfg.lr)
    for _ in range(cfg.text_pretrain):  # make the prompt informative before the UNet can learn to ignore it
        _, texts, named = batches.next_labelled()
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        aux = _aux_loss(aux_head, text_encoder(ids)[0], named)
        te_opt.zero_grad(set_to_none=True)
        aux.backward()
        te_opt.step()
    params = list(unet.parameters()) + list(text_encoder.parameters()) + list(aux_head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    ema = Ema([unet, text_encoder], cfg.ema)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        x0, texts, named = batches.next_labelled()
        loss, aux = _loss(unet, tokenizer, text_encoder, sched, x0, texts, gen, aux_head, named)
        opt.zero_grad(set_to_none=True)
        (loss + cfg.aux_weight * aux).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        report.losses.append(loss.item())
        if log and (step + 1) % 100 == 0:
            log(f"  {name} step {step + 1}/{cfg.steps} loss {sum(report.losses[-100:]) / 100:.4f} "
                f"text aux {aux.item():.3f} ({time.perf_counter() - t0:.0f}s)")
    ema.copy_to()
    unet.eval(), text_encoder.eval()
    report.eval_after = eval_loss(unet, tokenizer, text_encoder, held_out, (), cfg.eval_n, cfg.eval_repeats)
    report.seconds = time.perf_counter() - t0
    return report


@dataclass(frozen=True)
class MixConfig:
    """How joint LoRA training draws each step's active adapters: a subset size (1, 2 or 3, by `size_p`), a
    random compatible subset of that size, and a weight per adapter from `weights` (the agent's range: 0.8 by
    default, x1.25 per repair, a share when two candidates serve one task). Mixes are drawn more often than
    single styles: there are 8 singles but 26 pairs and 44 triples to learn, and at (0.5, 0.3, 0.2) the
    triples were the ones that lost the digit."""

    size_p: tuple[float, ...] = (0.25, 0.35, 0.4)
    weights: tuple[float, float] = (0.6, 1.25)
    # (style, weight) pairs: within a size, a subset is drawn in proportion to its styles' mean weight (default
    # 1), so a style that merges badly gets more of the steps without changing how often each size comes up.
    style_weights: tuple[tuple[str, float], ...] = ()


def _compatible_subsets(names: list[str], max_size: int) -> list[list[tuple[str, ...]]]:
    """Compatible subsets of `names` by size (index 0: singles); sizes with none are left out."""
    by_size = [compatible_sets(names, k) for k in range(1, max_size + 1)]
    return [subs for subs in by_size if subs]


class _MixBatches:
    """Seeded minibatches for joint training: a compatible subset of styles at random weights, its images
    (`apply_styles` of every active style) and captions ending in every active trigger word, in random order."""

    def __init__(self, data: Split, cfg: RunConfig, styles: list[Style], mix: MixConfig, seed_offset: int = 7):
        self.data, self.cfg, self.mix = data, cfg, mix
        self.triggers = {s.name: s.trigger for s in styles}
        self.subsets = _compatible_subsets([s.name for s in styles], len(mix.size_p))
        self.size_p = list(mix.size_p[:len(self.subsets)])
        weight = dict(mix.style_weights)
        self.subset_p = [[sum(weight.get(n, 1.0) for n in sub) / len(sub) for sub in subs] for subs in self.subsets]
        self.gen = torch.Generator().manual_seed(cfg.seed + seed_offset)
        self.rng = random.Random(cfg.seed + seed_offset)

    def next(self) -> tuple[dict[str, float], torch.Tensor, list[str]]:
        size = self.rng.choices(range(len(self.subsets)), weights=self.size_p)[0]
        subs = self.subsets[size]  # rng.choice when unweighted: the same draws as before weights existed
        subset = self.rng.choices(subs, weights=self.subset_p[size])[0] if self.mix.style_weights else self.rng.choice(subs)
        lo, hi = self.mix.weights
        weights = {name: self.rng.uniform(lo, hi) for name in subset}
        idx = torch.randint(0, len(self.data.labels), (self.cfg.batch,), generator=self.gen)
        triggers = [self.triggers[n] for n in subset]
        texts = []
        for lab in self.data.labels[idx].tolist():
            self.rng.shuffle(triggers)
            texts += captions(torch.tensor([lab]), self.rng, self.cfg.cond_dropout, "".join(f", {t}" for t in triggers))
        return weights, apply_styles(self.data.images[idx], subset), texts


def mix_losses(unet, tokenizer, text_encoder, data: Split, styles: list[Style], cfg: RunConfig,
               size: int = 2) -> dict[str, float]:
    """Held-out loss of every compatible set of `size` styles at weight 1, averaged per style: how well each
    adapter composes in pairs (size 2) or triples (size 3)."""
    by_name = {s.name: s for s in styles}
    per_style: dict[str, list[float]] = {name: [] for name in by_name}
    for names in compatible_sets(list(by_name), size):
        unet.set_adapters(list(names), [1.0] * size)
        loss = eval_loss(unet, tokenizer, text_encoder, data, tuple(by_name[n] for n in names), cfg.eval_n, 1)
        for n in names:
            per_style[n].append(loss)
    return {name: sum(v) / len(v) for name, v in per_style.items() if v}


def train_loras(base_unet, text_encoder, tokenizer, styles: list[Style], data: Split, held_out: Split,
                cfg: RunConfig, rank: int = 8, mix: MixConfig = MixConfig(), log=print,
                init: dict[str, dict[str, torch.Tensor]] | None = None,
                ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, RunReport]]:
    """One LoRA per style, trained jointly on a frozen copy of the base UNet (convs, attention, time
    projections) so that they compose: each step activates a compatible subset of them at random weights
    (peft multi-adapter), on images carrying every active style. Trained alone, each adapter learned its style
    only over plain digits, and merged two or three at a time they rarely drew every style on a readable digit.

    `init` (a style's tensors as returned here) warm-starts adapters: a second phase with other mix settings.

    Returns each style's peft-layout tensors ({module}.lora_A.weight / lora_B.weight, scale folded in as alpha
    = rank) and report (its losses: the steps it was active in; `seconds`: the whole joint run)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    unet = copy.deepcopy(base_unet).requires_grad_(False)
    with warnings.catch_warnings():  # peft warns on every adapter after the first: several are the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        for s in styles:
            unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS,
                                        init_lora_weights="gaussian"), adapter_name=s.name)
            if init and s.name in init:
                set_peft_model_state_dict(unet, init[s.name], adapter_name=s.name)
    text_encoder.requires_grad_(False).eval()
    unet.eval()
    reports = {}
    for s in styles:
        unet.set_adapters([s.name], [1.0])
        reports[s.name] = RunReport(f"lora-{s.name}", params=sum(p.numel() for p in unet.parameters() if p.requires_grad))
        reports[s.name].eval_before = eval_loss(unet, tokenizer, text_encoder, held_out, (s,), cfg.eval_n, cfg.eval_repeats)
    pairs_before = mix_losses(unet, tokenizer, text_encoder, held_out, styles, cfg)
    triples_before = mix_losses(unet, tokenizer, text_encoder, held_out, styles, cfg, 3)
    unet.set_adapters([s.name for s in styles], [1.0] * len(styles))  # every adapter's parameters trainable
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched, batches = noise_scheduler(), _MixBatches(data, cfg, styles, mix)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    by_size: dict[int, list[float]] = {}  # the last 100 steps' losses per number of active adapters
    unet.train()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        weights, x0, texts = batches.next()
        unet.set_adapters(list(weights), list(weights.values()))  # inactive adapters get no gradient
        loss = _loss(unet, tokenizer, text_encoder, sched, x0, texts, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for name in weights:
            reports[name].losses.append(loss.item())
        by_size.setdefault(len(weights), []).append(loss.item())
        if (step + 1) % 100 == 0:
            sizes = ", ".join(f"{k}: {sum(v) / len(v):.4f}" for k, v in sorted(by_size.items()))
            if log:
                log(f"  loras step {step + 1}/{cfg.steps}, loss by active adapters {sizes} ({time.perf_counter() - t0:.0f}s)")
            by_size.clear()
    unet.eval()
    tensors = {}
    for s in styles:
        unet.set_adapters([s.name], [1.0])
        reports[s.name].eval_after = eval_loss(unet, tokenizer, text_encoder, held_out, (s,), cfg.eval_n, cfg.eval_repeats)
        tensors[s.name] = {k: v.detach().clone().contiguous()
                           for k, v in get_peft_model_state_dict(unet, adapter_name=s.name).items()}
    pairs_after = mix_losses(unet, tokenizer, text_encoder, held_out, styles, cfg)
    triples_after = mix_losses(unet, tokenizer, text_encoder, held_out, styles, cfg, 3)
    seconds = time.perf_counter() - t0
    for s in styles:
        reports[s.name].seconds = seconds
        reports[s.name].pairs = (pairs_before.get(s.name), pairs_after.get(s.name))
        reports[s.name].triples = (triples_before.get(s.name), triples_after.get(s.name))
        if log:
            r = reports[s.name]
            log(f"  {r.name}: active in {len(r.losses)} of {cfg.steps} steps, held-out loss {r.eval_before:.4f} -> "
                f"{r.eval_after:.4f}" + (f", in pairs {pairs_before[s.name]:.4f} -> {pairs_after[s.name]:.4f}"
                                        if s.name in pairs_after else "")
                + (f", in triples {triples_before[s.name]:.4f} -> {triples_after[s.name]:.4f}"
                   if s.name in triples_after else ""))
    return tensors, reports
