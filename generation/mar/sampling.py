"""MAR's sampler: K autoregressive steps over a fresh random order per image; at step k the tokens leaving
the mask are drawn by the diffusion head, with a linearly ramped CFG scale and a temperature.

Schedules (Li et al., 2024, and LTH14/mar's sample_tokens):
  mask_len(k) = floor(N * cos(pi/2 * (k+1)/K)), clipped to [1, remaining - 1]; the last step takes the rest;
  cfg(k) = 1 + (cfg - 1) * (N - mask_len(k)) / N.
Branches and composition, as in `generation.loop`: a branch is a condition (the prompt, or the fake latent
for CFG's unconditional branch) under an adapter state; the branches of one adapter group are combined by the
guidance formula (`generation.guidance`, its scale ramped like cfg) on the head's noise prediction at every
head step, and composite averages the groups' guided predictions; switch runs one group per AR step, moving
on every `switch_every` AR steps. The no-adapters guide (adapter guidance) is one branch shared by every group.
Counting, as in `generation.loop`: `model_calls` = transformer forward calls (a batched cond+uncond call is
one), `nfe` per image = transformer evaluations (evaluated branches x AR steps); the head's denoising steps
are counted apart (`head_calls`: head forward calls), since they cost a small MLP, not the transformer. Every
random draw for an image comes from its own seeded generator, so an image depends only on its seed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import torch

from loracle.generation.composition import CompositionMethod
from loracle.generation.guidance import GuidanceSettings, combine_groups
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


@dataclass
class MARBranch:
    """One prediction branch: its condition (labels or text states; None = the learned fake latent, CFG's
    unconditional branch), the adapter state it runs under (None: the adapters as activated) and its adapter
    group (None: shared by every group, as a guide is)."""

    name: str
    cond: torch.Tensor | None
    state: Callable[[], AbstractContextManager] | None = None
    group: int | None = 0


def _calls(branches: list[MARBranch]) -> list[list[MARBranch]]:
    """Branches batched per forward call: same adapter state."""
    calls: dict[Hashable, list[MARBranch]] = {}
    for b in branches:
        calls.setdefault(id(b.state), []).append(b)
    return list(calls.values())


def _head_sample(model: MAR, calls: list[list[MARBranch]], zs: list[torch.Tensor], counts: int,
                 gens: list[torch.Generator], guidance: GuidanceSettings, groups: list[int], temperature: float,
                 diffusion: Diffusion, clip_x0: bool = False) -> torch.Tensor:
    """Denoise `counts` tokens per image; `zs[i]` holds the transformer states of call i's branches, stacked
    (rows grouped by image). Every branch sees the same noisy tokens; their noise predictions are combined."""
    head = model.diffloss
    d = head.in_channels

    def noise() -> torch.Tensor:
        return torch.cat([torch.randn((counts, d), generator=g) for g in gens]).to(zs[0])

    x = noise()
    for i in reversed(range(diffusion.num_steps)):
        t = torch.full((x.shape[0],), diffusion.timestep_map[i], dtype=torch.long, device=x.device)
        eps: dict[tuple[str, int | None], torch.Tensor] = {}
        rests = []
        for call, z in zip(calls, zs):
            with call[0].state() if call[0].state else nullcontext():
                out = head.net(x.repeat(len(call), 1), t.repeat(len(call)), z)
            for b, o in zip(call, out.chunk(len(call))):
                eps[(b.name, b.group)] = o[:, :d]
                if b.name == "cond":
                    rests.append(o[:, d:])  # the learned variance, when the head has one
        out = torch.cat([combine_groups(guidance, eps, groups), torch.stack(rests).mean(0)], dim=1)
        x = diffusion.p_step(out, x, i, d, head.learn_sigma, noise(), temperature, clip_x0)
    return x


@torch.no_grad()
def sample(model: MAR, cond: torch.Tensor | None, seeds: list[int], settings: MARSampleSettings,
           uncond: torch.Tensor | None = None, callback: Callable[[Progress], None] | None = None,
           cancel: threading.Event | None = None) -> MARSampleOutput:
    """Generate len(seeds) images with the adapters as activated. `cond`: labels or text states for the batch
    (None: unconditional); `uncond`: the CFG branch's condition (None: the fake latent, as the paper does)."""
    guided = settings.cfg != 1.0
    branches = [MARBranch("cond", cond)] + ([MARBranch("uncond", uncond)] if guided else [])
    guidance = GuidanceSettings("cfg", settings.cfg) if guided else GuidanceSettings("none", 1.0)
    return sample_branches(model, branches, seeds, settings, guidance, callback=callback, cancel=cancel)


@torch.no_grad()
def sample_branches(model: MAR, branches: list[MARBranch], seeds: list[int], settings: MARSampleSettings,
                    guidance: GuidanceSettings, composition: CompositionMethod | None = None,
                    callback: Callable[[Progress], None] | None = None,
                    cancel: threading.Event | None = None) -> MARSampleOutput:
    """Generate len(seeds) images from `branches` (see the module docstring); `guidance.scale` ramps over the
    AR steps by `settings.cfg_schedule`, as cfg does."""
    settings.check(model.seq_len)
    composition = composition or CompositionMethod()
    model.eval()
    bsz, n = len(seeds), model.seq_len
    device = model.fake_latent.device
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
    mask = torch.ones(bsz, n, device=device)
    tokens = torch.zeros(bsz, n, model.token_embed_dim, device=device)
    conds = {id(b): model.condition(b.cond, bsz) for b in branches}
    mask_lens = mask_schedule(n, settings.num_iter)
    scales = cfg_schedule(guidance.scale, n, mask_lens, settings.cfg_schedule)
    diffusion = Diffusion(respaced_timesteps(settings.head_steps or model.config.num_sampling_steps))
    groups = sorted({b.group for b in branches if b.group is not None})
    calls = head_calls = 0
    nfe = [0] * bsz
    for k, (mask_len, scale) in enumerate(zip(mask_lens, scales)):
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"cancelled before AR step {k + 1}/{settings.num_iter}")
        active = [groups[i] for i in composition.active_groups(k, len(groups))]
        evaluated = [b for b in branches if b.group is None or b.group in active]
        mask_next = torch.zeros(bsz, n, device=device)
        if mask_len:
            mask_next.scatter_(1, orders[:, :mask_len], 1.0)
        to_pred = mask.bool() & ~mask_next.bool()
        rows = to_pred.nonzero(as_tuple=True)
        batched, zs = _calls(evaluated), []
        for call in batched:
            r = len(call)
            c = torch.cat([conds[id(b)] for b in call])
            with call[0].state() if call[0].state else nullcontext():
                z = model.forward_mae_decoder(model.forward_mae_encoder(tokens.repeat(r, 1, 1), mask.repeat(r, 1), c),
                                              mask.repeat(r, 1))
            calls += 1
            zs.append(torch.cat([part[rows] for part in z.chunk(r)]))
        new = _head_sample(model, batched, zs, int(to_pred[0].sum()), gens, replace(guidance, scale=scale), active,
                           settings.temperature, diffusion, settings.clip_x0)
        head_calls += diffusion.num_steps * len(batched)
        tokens[rows] = new.to(tokens.dtype)
        mask = mask_next
        nfe = [x + len(evaluated) for x in nfe]
        if callback is not None:
            callback(Progress(k + 1, settings.num_iter, bsz, calls))
    return MARSampleOutput(model.unpatchify(tokens), nfe, calls, head_calls, orders)
