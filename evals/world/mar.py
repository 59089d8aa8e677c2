"""The digits world's MAR: a masked-autoregressive model over 2x2 pixel patches (the paper's pixel-space
variant), and its style LoRAs.

Conditioned the way the world's diffusion model is: on the caption, through the base model's trained (and here
frozen) CLIP text encoder, one buffer token per text position; caption dropout is MAR's own label dropout
(the condition becomes the learned fake latent, which is also CFG's unconditional branch). Same data, same
seeded batches, same LR schedule and EMA as `evals.world.train`; held-out loss with fixed noise before/after.
"""

from __future__ import annotations

import copy
import random
import time

import torch

from loracle.evals.world.data import Split, captions
from loracle.evals.world.styles import Style, apply_styles
from loracle.evals.world.tokenizer import MAX_LENGTH
from loracle.evals.world.train import Ema, RunConfig, RunReport, _Batches, _encode, _lr
from loracle.generation.mar import MAR, MARConfig

# 64 tokens of 4 pixels; ~0.56M parameters; 50 respaced head steps when sampling (the head is a small MLP).
MAR_CONFIG = MARConfig(img_size=16, patch_size=2, channels=1, cond="text", text_dim=64, buffer_size=MAX_LENGTH,
                       encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=4, decoder_embed_dim=64,
                       decoder_depth=2, decoder_num_heads=4, diffloss_d=3, diffloss_w=128, num_sampling_steps=50,
                       diffusion_batch_mul=2, label_drop_prob=0.1)
# peft targets: every transformer linear and the head's residual MLPs and condition projection (a style changes
# the pixel distribution of each token, which the head draws; the transformer alone would have to smuggle it in z).
MAR_LORA_TARGETS = r".*((encoder|decoder)_blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)|diffloss\.net\.(cond_embed|res_blocks\.\d+\.mlp\.[02]))$"


def _texts(batches: _Batches) -> tuple[torch.Tensor, list[str]]:
    """Images and captions (no empty captions: MAR drops the condition itself, label_drop_prob)."""
    idx = torch.randint(0, len(batches.labels), (batches.cfg.batch,), generator=batches.gen)
    suffix = f", {batches.style.trigger}" if batches.style else ""
    return batches.images[idx], captions(batches.labels[idx], batches.rng, 0.0, suffix)


@torch.no_grad()
def mar_eval_loss(model: MAR, tokenizer, text_encoder, held_out: Split, style: Style | None = None, n: int = 200,
                  repeats: int = 3) -> float:
    """Loss on a fixed held-out batch: fixed captions, orders, masks, timesteps and noise (eval mode: no dropout)."""
    was = model.training
    model.eval()
    x0 = held_out.images[:n]
    if style:
        x0 = apply_styles(x0, [style.name])
    texts = captions(held_out.labels[:n], random.Random(1234), 0.0, f", {style.trigger}" if style else "")
    cond = _encode(tokenizer, text_encoder, texts)
    losses = [model(x0, cond, torch.Generator().manual_seed(99 + r)).item() for r in range(repeats)]
    model.train(was)
    return sum(losses) / len(losses)


def train_mar(model: MAR, text_encoder, tokenizer, data: Split, held_out: Split, cfg: RunConfig, log=print,
              name: str = "mar") -> RunReport:
    """Train a MAR from scratch on the world's captions (text encoder frozen); EMA weights at the end."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    text_encoder.requires_grad_(False).eval()
    report = RunReport(name, params=sum(p.numel() for p in model.parameters()))
    report.eval_before = mar_eval_loss(model, tokenizer, text_encoder, held_out, None, cfg.eval_n, cfg.eval_repeats)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.02, betas=(0.9, 0.95))
    ema = Ema([model], cfg.ema)
    batches = _Batches(data, cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        x0, texts = _texts(batches)
        with torch.no_grad():
            cond = _encode(tokenizer, text_encoder, texts)
        loss = model(x0, cond, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update()
        report.losses.append(loss.item())
        if log and (step + 1) % 100 == 0:
            log(f"  {name} step {step + 1}/{cfg.steps} loss {sum(report.losses[-100:]) / 100:.4f} "
                f"({time.perf_counter() - t0:.0f}s)")
    ema.copy_to()
    model.eval()
    report.eval_after = mar_eval_loss(model, tokenizer, text_encoder, held_out, None, cfg.eval_n, cfg.eval_repeats)
    report.seconds = time.perf_counter() - t0
    return report


def train_mar_lora(base: MAR, text_encoder, tokenizer, style: Style, data: Split, held_out: Split, cfg: RunConfig,
                   rank: int = 8, log=print) -> tuple[dict[str, torch.Tensor], RunReport]:
    """A peft LoRA on a frozen copy of the MAR (transformer linears + head MLPs), trained on styled digits with
    the style's trigger word in the caption. Returns peft-layout tensors (alpha = rank: scale 1) and the report."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(base).requires_grad_(False)
    lcfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=MAR_LORA_TARGETS, init_lora_weights="gaussian")
    inject_adapter_in_model(lcfg, model)
    params = [p for p in model.parameters() if p.requires_grad]
    report = RunReport(f"mar-lora-{style.name}", params=sum(p.numel() for p in params))
    text_encoder.requires_grad_(False).eval()
    report.eval_before = mar_eval_loss(model, tokenizer, text_encoder, held_out, style, cfg.eval_n, cfg.eval_repeats)
    model.train()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    batches = _Batches(data, cfg, style, seed_offset=7)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        x0, texts = _texts(batches)
        with torch.no_grad():
            cond = _encode(tokenizer, text_encoder, texts)
        loss = model(x0, cond, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        report.losses.append(loss.item())
    model.eval()
    report.eval_after = mar_eval_loss(model, tokenizer, text_encoder, held_out, style, cfg.eval_n, cfg.eval_repeats)
    report.seconds = time.perf_counter() - t0
    if log:
        log(f"  {report.name}: {cfg.steps} steps, held-out loss {report.eval_before:.4f} -> {report.eval_after:.4f} "
            f"({report.seconds:.0f}s)")
    tensors = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    return tensors, report
