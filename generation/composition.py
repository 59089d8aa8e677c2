"""How the adapter groups of one mix act on the denoiser: merged, switched per step, or composited.

A mix's groups are its tasks' active adapters (`masks.Mix.adapter_groups`; an adapter the composer did not place
in a task, such as a `<lora:...>` tag, is a group of its own). Zhong et al. 2024 ("Multi-LoRA Composition for
Image Generation") compared three training-free ways to use several LoRAs at once:
* merge: every adapter active at its weight at every step (what Stylus, A1111 and ComfyUI do);
* switch ("LoRA Switch"): one group active per step, moving to the next group every `switch_every` steps;
* composite ("LoRA Composite"): at every step one guided prediction per group (its own CFG pair), averaged;
  it costs one set of branch evaluations per group, and NFE counts them.
Adapter guidance (the base without adapters as the guide, `guidance.GuideSpec(kind="no_adapters")`) combines
with each: its guide branch is shared by every group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from loracle.generation.masks import Mix

CompositionKind = Literal["merge", "switch", "composite"]
COMPOSITION_KINDS: tuple[str, ...] = get_args(CompositionKind)


@dataclass(frozen=True)
class CompositionMethod:
    """`switch_every`: steps one group stays active under switch (Zhong et al.'s reference uses 5)."""

    kind: CompositionKind = "merge"
    switch_every: int = 5

    def __post_init__(self) -> None:
        if self.kind not in COMPOSITION_KINDS:
            raise ValueError(f"composition method must be one of {', '.join(COMPOSITION_KINDS)}, got {self.kind!r}")
        if isinstance(self.switch_every, bool) or not isinstance(self.switch_every, int) or self.switch_every < 1:
            raise ValueError(f"switch_every must be an integer >= 1, got {self.switch_every!r}")

    def adapter_states(self, mix: Mix) -> list[dict[str, float] | None]:
        """The adapters each group of branches runs with: under merge one group on the mix as activated (None),
        else one per adapter group of the mix (a mix without adapters is one group)."""
        if self.kind == "merge":
            return [None]
        return mix.adapter_groups() or [None]

    def active_groups(self, step: int, n_groups: int) -> list[int]:
        """The groups whose predictions make step `step` (0-based, counted from the first step run)."""
        if self.kind == "switch":
            return [(step // self.switch_every) % n_groups]
        return list(range(n_groups))

    def starts_turn(self, step: int) -> bool:
        """Under switch, a step where another group takes over: a cached prediction of the last one is stale."""
        return self.kind == "switch" and step % self.switch_every == 0

    def check(self, mix: Mix, n_steps: int) -> None:
        """Refuse a switch that would leave a group of `mix` without a single one of the `n_steps` steps."""
        n_groups = len(self.adapter_states(mix))
        if self.kind == "switch" and n_groups > 1 and n_steps <= (n_groups - 1) * self.switch_every:
            raise ValueError(
                f"switch with {n_groups} adapter groups and switch_every {self.switch_every} needs more than "
                f"{(n_groups - 1) * self.switch_every} denoising steps so every group gets a turn; this run has "
                f"{n_steps} (lower switch_every, add steps, or use merge or composite)")

    def parameters(self) -> dict[str, object]:
        """The fields written into an image's `parameters` text."""
        out: dict[str, object] = {"Composition": self.kind}
        if self.kind == "switch":
            out["Switch every"] = self.switch_every
        return out


class Activates(Protocol):
    def activate(self, mix: dict[str, float]) -> None: ...


def adapter_state(adapters: Activates, weights: dict[str, float],
                  restore: Mix | None = None) -> Callable[[], AbstractContextManager]:
    """A branch's adapter state: `weights` active while it runs, then `restore` (a guide mix under merge, whose
    other branches run on the mix as activated; switched and composited groups each enter their own)."""
    @contextmanager
    def state() -> Iterator[None]:
        adapters.activate(weights)
        try:
            yield
        finally:
            if restore is not None:
                adapters.activate(restore.as_dict())

    return state
