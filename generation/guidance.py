"""Guidance: how the per-branch noise predictions of one step are combined.

Branches: "cond" (main model, prompt), "uncond" (main model, negative prompt), "guide" (a weaker model,
prompt). D is affine in the noise prediction, so the formulas apply to epsilon directly (Karras et al. 2024).
* none: D = D_m
* cfg:  D = D_u + w (D_m - D_u)
* auto: D = w D_m + (1 - w) D_g                      (autoguidance)
* both: D = D_m + (w_u - 1)(D_m - D_u) + (w_c - 1)(D_m - D_g),  w_u = (1-a)(w-1)+1, w_c = a(w-1)+1
        (Appendix B.2: a = 0 is CFG, a = 1 is autoguidance)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

GuidanceKind = Literal["none", "cfg", "auto", "both"]


@dataclass(frozen=True)
class GuideSpec:
    """The weaker model for autoguidance.

    kind="no_adapters": the same base with adapters disabled (a LoRA model guided by its base);
    kind="model": a separately registered model (smaller or earlier checkpoint), named by `model`;
    kind="mix": the same base with another adapter mix, e.g. an earlier epoch of the same LoRA.
    """

    kind: Literal["no_adapters", "model", "mix"] = "no_adapters"
    model: str | None = None
    mix: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("no_adapters", "model", "mix"):
            raise ValueError(f"guide kind must be no_adapters|model|mix, got {self.kind!r}")
        if self.kind == "model" and not self.model:
            raise ValueError("guide kind 'model' needs the name of a registered guide model")
        if self.kind == "mix" and not self.mix:
            raise ValueError("guide kind 'mix' needs a non-empty adapter mix")

    def __hash__(self) -> int:
        return hash((self.kind, self.model, tuple(sorted(self.mix.items()))))


@dataclass(frozen=True)
class GuidanceSettings:
    kind: GuidanceKind = "cfg"
    scale: float = 7.5  # w
    a: float = 0.5  # share of autoguidance in "both"
    guide: GuideSpec = field(default_factory=GuideSpec)

    def __post_init__(self) -> None:
        if self.kind not in ("none", "cfg", "auto", "both"):
            raise ValueError(f"guidance kind must be none|cfg|auto|both, got {self.kind!r}")
        if not (0.0 <= self.scale <= 50.0):
            raise ValueError(f"guidance scale must be in [0, 50], got {self.scale}")
        if not (0.0 <= self.a <= 1.0):
            raise ValueError(f"guidance a must be in [0, 1], got {self.a}")

    @classmethod
    def cfg_and_guide(cls, cfg: float, guide_w: float, guide: GuideSpec) -> GuidanceSettings:
        """CFG at `cfg` plus guidance by `guide` at `guide_w` (each 1 = off), as kind "both": w_u = cfg, w_c =
        guide_w, so w = cfg + guide_w - 1 and a = (guide_w - 1) / (w - 1). With the `no_adapters` guide this is
        adapter guidance alongside CFG."""
        if cfg < 1 or guide_w < 1:
            raise ValueError(f"cfg and guide weights must be >= 1, got {cfg} and {guide_w}")
        w = cfg + guide_w - 1
        return cls("both", w, a=(guide_w - 1) / (w - 1) if w > 1 else 0.0, guide=guide)

    @property
    def branches(self) -> tuple[str, ...]:
        return {"none": ("cond",), "cfg": ("uncond", "cond"), "auto": ("cond", "guide"),
                "both": ("uncond", "cond", "guide")}[self.kind]


def combine(settings: GuidanceSettings, preds: dict[str, torch.Tensor]) -> torch.Tensor:
    """One guided noise prediction from the branch predictions of a step."""
    w, m = settings.scale, preds["cond"]
    if settings.kind == "none":
        return m
    if settings.kind == "cfg":
        u = preds["uncond"]
        return u + w * (m - u)
    if settings.kind == "auto":
        return w * m + (1 - w) * preds["guide"]
    w_u = (1 - settings.a) * (w - 1) + 1
    w_c = settings.a * (w - 1) + 1
    return m + (w_u - 1) * (m - preds["uncond"]) + (w_c - 1) * (m - preds["guide"])


def combine_groups(settings: GuidanceSettings, preds: dict[tuple[str, int | None], torch.Tensor],
                   groups: list[int]) -> torch.Tensor:
    """The mean over adapter `groups` of each group's guided prediction. `preds` is keyed by (branch, group);
    a branch of group None (a guide) joins every group (LoRA Composite averages; one group is plain `combine`)."""
    shared = {name: pred for (name, g), pred in preds.items() if g is None}
    guided = [combine(settings, {**shared, **{name: pred for (name, g), pred in preds.items() if g == group}})
              for group in groups]
    return guided[0] if len(guided) == 1 else torch.stack(guided).mean(0)
