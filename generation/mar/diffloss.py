"""The diffusion loss head: a small MLP with AdaLN residual blocks that denoises one token given the
transformer's output z for that token (Li et al., 2024, section 3). Module names follow LTH14/mar's
`diffloss.py` (net.time_embed / cond_embed / input_proj / res_blocks / final_layer), so official weights load.

Diffusion: cosine noise schedule over 1000 training steps; sampling on a respaced subset of them (DDPM
ancestral steps), with a temperature that scales the injected noise, as in the paper's sampler.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

TRAIN_STEPS = 1000


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features -> MLP (DiT's embedder)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class ResBlock(nn.Module):
    """LayerNorm -> AdaLN shift/scale from (t + z) -> MLP -> gated residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, model_channels: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(model_channels, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(model_channels, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 2 * model_channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """Noise predictor for one token: eps(x_t, t, z) (plus variance values when `out_channels` = 2x)."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, z_channels: int,
                 num_res_blocks: int):
        super().__init__()
        self.in_channels = in_channels
        self.time_embed = TimestepEmbedder(model_channels)
        self.cond_embed = nn.Linear(z_channels, model_channels)
        self.input_proj = nn.Linear(in_channels, model_channels)
        self.res_blocks = nn.ModuleList([ResBlock(model_channels) for _ in range(num_res_blocks)])
        self.final_layer = FinalLayer(model_channels, out_channels)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        for block in self.res_blocks:  # AdaLN-zero: every block starts as the identity
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        y = self.time_embed(t) + self.cond_embed(c)
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """First half of the batch is conditional, second half unconditional (same noise in both)."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half]), t, c)
        eps, rest = out[:, : self.in_channels], out[:, self.in_channels:]
        cond_eps, uncond_eps = eps.chunk(2)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)


def cosine_alphas_cumprod(steps: int = TRAIN_STEPS, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule (the one MAR's head is trained with), as cumulative alphas."""
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = np.array([min(1 - f((i + 1) / steps) / f(i / steps), max_beta) for i in range(steps)], dtype=np.float64)
    return np.cumprod(1.0 - betas)


def respaced_timesteps(n: int, steps: int = TRAIN_STEPS) -> list[int]:
    """`n` evenly spaced training steps, first and last included (guided-diffusion's space_timesteps)."""
    if not (1 <= n <= steps):
        raise ValueError(f"sampling steps must be in [1, {steps}], got {n}")
    if n == 1:
        return [steps - 1]
    stride = (steps - 1) / (n - 1)
    return sorted({round(i * stride) for i in range(n)})


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log p(x) for x in [-1, 1] under a Gaussian discretised into 256 bins (guided-diffusion's, used at t = 0)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_mid = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_mid))


class Diffusion:
    """Gaussian diffusion on a subset of the training steps (all of them for training)."""

    def __init__(self, timesteps: list[int] | None = None):
        acp_full = cosine_alphas_cumprod()
        self.timestep_map = list(range(TRAIN_STEPS)) if timesteps is None else list(timesteps)
        acp = acp_full[self.timestep_map]
        prev = np.append(1.0, acp[:-1])
        self.betas = 1.0 - acp / prev
        self.acp, self.acp_prev = acp, prev
        self.posterior_variance = self.betas * (1.0 - prev) / (1.0 - acp)
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = np.log(np.append(pv[1], pv[1:]) if len(pv) > 1 else np.array([self.betas[0]]))
        self.coef1 = self.betas * np.sqrt(prev) / (1.0 - acp)
        self.coef2 = (1.0 - prev) * np.sqrt(1.0 - self.betas) / (1.0 - acp)

    @property
    def num_steps(self) -> int:
        return len(self.timestep_map)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = torch.as_tensor(self.acp, dtype=x0.dtype, device=x0.device)[t][:, None]
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def vb_term(self, out: torch.Tensor, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, in_channels: int) -> torch.Tensor:
        """Per-row VLB term in bits: KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t > 0, the decoder NLL at
        t = 0 (guided-diffusion's _vb_terms_bpd). The mean comes from the detached eps, so this term trains
        only the variance, as in ADM's hybrid loss."""
        def col(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=xt.dtype, device=xt.device)[t][:, None]

        eps, v = out[:, :in_channels].detach(), out[:, in_channels:]
        acp = col(self.acp)
        pred_x0 = (1.0 / acp).sqrt() * xt - (1.0 / acp - 1.0).sqrt() * eps
        c1, c2 = col(self.coef1), col(self.coef2)
        true_mean, model_mean = c1 * x0 + c2 * xt, c1 * pred_x0 + c2 * xt
        true_logvar = col(self.posterior_log_variance_clipped)
        frac = (v + 1) / 2
        model_logvar = frac * col(np.log(self.betas)) + (1 - frac) * true_logvar
        kl = 0.5 * (-1.0 + model_logvar - true_logvar + torch.exp(true_logvar - model_logvar)
                    + (true_mean - model_mean) ** 2 * torch.exp(-model_logvar))
        kl = kl.mean(dim=-1) / math.log(2.0)
        nll = -_discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar).mean(dim=-1) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def p_step(self, out: torch.Tensor, x: torch.Tensor, i: int, in_channels: int, learn_sigma: bool,
               noise: torch.Tensor, temperature: float, clip_x0: bool = False) -> torch.Tensor:
        """One ancestral step from respaced index i to i-1 (the last step adds no noise). `clip_x0`: clamp the
        predicted clean token to [-1, 1] (pixel tokens have that range; KL-16 latents do not, the official
        sampler never clips)."""
        eps = out[:, :in_channels]
        acp = self.acp[i]
        x0 = math.sqrt(1.0 / acp) * x - math.sqrt(1.0 / acp - 1.0) * eps
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        mean = self.coef1[i] * x0 + self.coef2[i] * x
        if learn_sigma:
            frac = (out[:, in_channels:] + 1) / 2
            log_var = frac * math.log(self.betas[i]) + (1 - frac) * float(self.posterior_log_variance_clipped[i])
        else:
            log_var = torch.full_like(x, float(self.posterior_log_variance_clipped[i]))
        if i == 0:
            return mean
        return mean + torch.exp(0.5 * log_var) * noise * temperature


class DiffLoss(nn.Module):
    """Per-token diffusion loss (training) and per-token sampler (generation), conditioned on z."""

    def __init__(self, target_channels: int, z_channels: int, depth: int, width: int, num_sampling_steps: int,
                 learn_sigma: bool = False):
        super().__init__()
        self.in_channels = target_channels
        self.learn_sigma = learn_sigma
        self.net = SimpleMLPAdaLN(target_channels, width, target_channels * (2 if learn_sigma else 1), z_channels,
                                  depth)
        self.train_diffusion = Diffusion()
        self.num_sampling_steps = num_sampling_steps

    def forward(self, target: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise-prediction MSE averaged over the tokens where `mask` is 1; with a learned variance, plus the
        variational bound term that trains it (guided-diffusion's loss "mse + vb", as the official head)."""
        t = torch.randint(0, TRAIN_STEPS, (target.shape[0],), generator=generator).to(target.device)
        noise = torch.randn(target.shape, generator=generator).to(target)
        xt = self.train_diffusion.q_sample(target, t, noise)
        out = self.net(xt, t, z)
        loss = ((out[:, : self.in_channels] - noise) ** 2).mean(dim=-1)
        if self.learn_sigma:
            loss = loss + self.train_diffusion.vb_term(out, xt, target, t, self.in_channels)
        if mask is None:
            return loss.mean()
        return (loss * mask).sum() / mask.sum().clamp(min=1)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, temperature: float = 1.0, cfg: float = 1.0, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Tokens for the rows of z; with cfg != 1 the second half of z is the unconditional branch."""
        diffusion = Diffusion(respaced_timesteps(steps or self.num_sampling_steps))
        n = z.shape[0] // 2 if cfg != 1.0 else z.shape[0]

        def randn() -> torch.Tensor:
            e = torch.randn((n, self.in_channels), generator=generator).to(z)
            return torch.cat([e, e]) if cfg != 1.0 else e

        x = randn()
        for i in reversed(range(diffusion.num_steps)):
            t = torch.full((x.shape[0],), diffusion.timestep_map[i], dtype=torch.long, device=z.device)
            out = self.net.forward_with_cfg(x, t, z, cfg) if cfg != 1.0 else self.net(x, t, z)
            x = diffusion.p_step(out, x, i, self.in_channels, self.learn_sigma, randn(), temperature)
        return x
