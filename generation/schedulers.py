"""The samplers a request can name, and the one rule they share: the predicted clean image stays in range.

DDIM clips its predicted x0 when the model's config says `clip_sample`; diffusers' sigma schedulers (DPM++ 2M,
Euler, Euler a) have no such switch, so on a pixel-space model an x0 predicted at a high noise level (sigma in
the thousands under a cosine schedule) lands far outside the pixel range and the sample saturates to speckle.
`clamp_x0` applies the clip to their prediction instead: it rewrites the model output so that the x0 the
scheduler derives from it is clamped (the noise is re-derived from the clamped x0, as GLIDE does; DDIM keeps
its own clip, which keeps the raw noise, so its numbers stay what they were). Pixel-space models always clamp
to [-1, 1] (their samples are the pixels); latent models clamp only when their config asks for it.

Parametrisation (diffusers' conventions): with sigma = sqrt((1 - alpha_bar) / alpha_bar), DDIM and DPM++ keep
the variance-preserving sample x = alpha (x0 + sigma eps), alpha = 1 / sqrt(1 + sigma^2); Euler and Euler a keep
the variance-exploding sample x0 + sigma eps.
"""

from __future__ import annotations

import torch

SCHEDULERS = ("ddim", "dpmpp_2m", "dpmpp_2m_karras", "euler", "euler_a")
CLIPS_ITSELF = ("ddim",)  # schedulers that clip x0 inside their own step
ANCESTRAL = ("euler_a",)  # schedulers that add fresh noise every step: consecutive predictions jump
_VARIANCE_EXPLODING = ("euler", "euler_a")


def make_scheduler(name: str, config: dict, x0_bound: float | None = None):
    """A fresh diffusers scheduler per call (schedulers are stateful, so never share one across calls).
    `x0_bound`: DDIM clips its predicted x0 there itself; the others need `clamp_x0` in the loop."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    if name == "ddim":
        clip = {"clip_sample": True, "clip_sample_range": x0_bound} if x0_bound is not None else {}
        return DDIMScheduler.from_config({**cfg, **clip})
    if name == "dpmpp_2m":
        return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2)
    if name == "dpmpp_2m_karras":
        return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2,
                                                       use_karras_sigmas=True)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(cfg)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(cfg)
    raise ValueError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


def x0_range(config: dict, pixel_space: bool) -> float | None:
    """The bound the predicted x0 is clamped to, or None when it is left free (latent models by default)."""
    if config.get("clip_sample"):
        return float(config.get("clip_sample_range", 1.0))
    return 1.0 if pixel_space else None


def step_sigma(scheduler, t: torch.Tensor, index: int) -> float:
    """The noise level of step `index` (timestep `t`) in sigma units, from the scheduler's own table where it
    has one (Karras spacing included), else from its cumulative alphas (DDIM)."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None:
        return float(sigmas[index])
    alpha_bar = float(scheduler.alphas_cumprod[int(t)])
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def clamp_x0(pred: torch.Tensor, sample: torch.Tensor, *, sigma: float, scheduler_name: str,
             prediction_type: str, bound: float) -> torch.Tensor:
    """The model output whose implied x0 (for this scheduler at this sigma) is clamped to [-bound, bound]."""
    if sigma <= 0:
        return pred
    alpha = (1 + sigma**2) ** -0.5
    sigma_t = sigma * alpha
    x = sample.float() * (alpha if scheduler_name in _VARIANCE_EXPLODING else 1.0)  # variance-preserving sample
    p = pred.float()
    if prediction_type == "epsilon":
        x0 = (x - sigma_t * p) / alpha
    elif prediction_type == "v_prediction":
        x0 = alpha * x - sigma_t * p
    elif prediction_type == "sample":
        x0 = p
    else:
        raise ValueError(f"Cannot clamp x0 for prediction type {prediction_type!r}")
    x0 = x0.clamp(-bound, bound)
    if prediction_type == "sample":
        return x0.to(pred.dtype)
    eps = (x - alpha * x0) / sigma_t
    out = eps if prediction_type == "epsilon" else alpha * eps - sigma_t * x0
    return out.to(pred.dtype)
