"""MAR's sampler: K autoregressive steps over a fresh random order per image; at step k the tokens leaving
the mask are drawn by the diffusion head, with a linearly ramped CFG scale and a temperature.

Schedules (Li et al., 2024, and LTH14/mar's sample_tokens):
  mask_len(k) = floor(N * cos(pi/2 * (k+1)/K)), clipped to [1, remaining - 1]; the last step takes the rest;
  cfg(k) = 1 + (cfg - 1) * (N - mask_len(k)) / N.
Counting, as in `generation.loop`: `model_calls` = transformer forward calls (a batched cond+uncond call is
one), `nfe` per image = transformer evaluations (branches x AR steps); the head's denoising steps are counted
apart (`head_calls`), since they cost a small MLP, not the transformer. Every random draw for an image comes
from its own seeded generator, so an image depends only on its seed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from loracle.generation.loop import GenerationCancelled, Progress
from loracle.generation.mar.diffloss import Diffusion, respaced_timesteps
from loracle.generation.mar.model import MAR


def mask_schedule(seq_len: int, num_iter: int) -> list[int]:
    """Tokens still masked after each AR step (ends at 0); every step unmasks at least one token."""
    if not (1 <= num_iter <= seq_len):
        raise ValueError(f"AR steps must be in [1, {seq_len}] (the number of tokens), got {num_iter}")
    remaining, out = seq_len, []
    for k in range(num_iter):
        if k == num_iter - 1:
            out.append(0)
            break
        mask_len = math.floor(seq_len * math.cos(math.pi / 2.0 * (k + 1) / num_iter))
        mask_len = max(1, min(remaining - 1, mask_len))
        out.append(mask_len)
        remaining = mask_len
    return out


def cfg_schedule(cfg: float, seq_len: int, mask_lens: list[int], kind: str = "linear") -> list[float]:
    """Guidance scale per AR step: linear ramps from ~1 (nothing known) to cfg (everything known)."""
    if kind == "constant":
        return [float(cfg)] * len(mask_lens)
    if kind != "linear":
        raise ValueError(f"cfg schedule must be 'linear' or 'constant', got {kind!r}")
    return [1.0 + (cfg - 1.0) * (seq_len - m) / seq_len for m in mask_lens]


@dataclass(frozen=True)
class MARSampleSettings:
    num_iter: int = 16
    cfg: float = 1.0
    cfg_schedule: str = "linear"
    temperature: float = 1.0
    head_steps: int | None = None  # respaced diffusion steps of the head; None = the config's
    clip_x0: bool = False  # clamp the head's predicted clean token to [-1, 1] (pixel tokens; not KL-16 latents)

    def check(self, seq_len: int) -> None:
        mask_schedule(seq_len, self.num_iter)
        if not (self.cfg >= 1.0):
            raise ValueError(f"cfg must be >= 1, got {self.cfg}")
        if not (self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        cfg_schedule(self.cfg, seq_len, [0], self.cfg_schedule)
        if self.head_steps is not None:
            respaced_timesteps(self.head_steps)


@dataclass
class MARSampleOutput:
    images: torch.Tensor  # (B, C, H, W) in the token space (pixels, or KL-16 latents)
    nfe: list[int]
    model_calls: int
    head_calls: int
    orders: torch.Tensor


def _head_sample(model: MAR, z: torch.Tensor, counts: int, gens: list[torch.Generator], cfg: float,
                 temperature: float, diffusion: Diffusion, clip_x0: bool = False) -> torch.Tensor:
    """Denoise `counts` tokens per image (rows of z grouped by image; with cfg the uncond half follows)."""
    head = model.diffloss
    d = head.in_channels

    def noise() -> torch.Tensor:
        e = torch.cat([torch.randn((counts, d), generator=g) for g in gens]).to(z)
        return torch.cat([e, e]) if cfg != 1.0 else e

    x = noise()
    for i in reversed(range(diffusion.num_steps)):
        t = torch.full((x.shape[0],), diffusion.timestep_map[i], dtype=torch.long, device=z.device)
        out = head.net.forward_with_cfg(x, t, z, cfg) if cfg != 1.0 else head.net(x, t, z)
        x = diffusion.p_step(out, x, i, d, head.learn_sigma, noise(), temperature, clip_x0)
    return x[: counts * len(gens)]


@torch.no_grad()
def sample(model: MAR, cond: torch.Tensor | None, seeds: list[int], settings: MARSampleSettings,
           uncond: torch.Tensor | None = None, callback: Callable[[Progress], None] | None = None,
           cancel: threading.Event | None = None) -> MARSampleOutput:
    """Generate len(seeds) images. `cond`: labels or text states for the batch (None: unconditional);
    `uncond`: the CFG branch's condition (None: the fake latent, as the paper does)."""
    settings.check(model.seq_len)
    model.eval()
    bsz, n = len(seeds), model.seq_len
    device = model.fake_latent.device
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
    mask = torch.ones(bsz, n, device=device)
    tokens = torch.zeros(bsz, n, model.token_embed_dim, device=device)
    c = model.condition(cond, bsz)
    guided = settings.cfg != 1.0
    if guided:
        c = torch.cat([c, model.condition(uncond, bsz) if uncond is not None else model.condition(None, bsz)])
    mask_lens = mask_schedule(n, settings.num_iter)
    cfgs = cfg_schedule(settings.cfg, n, mask_lens, settings.cfg_schedule)
    diffusion = Diffusion(respaced_timesteps(settings.head_steps or model.config.num_sampling_steps))
    calls = head_calls = 0
    for k, (mask_len, cfg_k) in enumerate(zip(mask_lens, cfgs)):
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"cancelled before AR step {k + 1}/{settings.num_iter}")
        tok_in, mask_in = (torch.cat([tokens, tokens]), torch.cat([mask, mask])) if guided else (tokens, mask)
        z = model.forward_mae_decoder(model.forward_mae_encoder(tok_in, mask_in, c), mask_in)
        calls += 1
        mask_next = torch.zeros(bsz, n, device=device)
        if mask_len:
            mask_next.scatter_(1, orders[:, :mask_len], 1.0)
        to_pred = mask.bool() & ~mask_next.bool()
        counts = int(to_pred[0].sum())
        sel = torch.cat([to_pred, to_pred]) if guided else to_pred
        z_sel = z[sel.nonzero(as_tuple=True)]
        new = _head_sample(model, z_sel, counts, gens, cfg_k, settings.temperature, diffusion, settings.clip_x0)
        head_calls += diffusion.num_steps
        tokens[to_pred.nonzero(as_tuple=True)] = new.to(tokens.dtype)
        mask = mask_next
        if callback is not None:
            callback(Progress(k + 1, settings.num_iter, bsz, calls))
    nfe = [settings.num_iter * (2 if guided else 1)] * bsz
    return MARSampleOutput(model.unpatchify(tokens), nfe, calls, head_calls, orders)
