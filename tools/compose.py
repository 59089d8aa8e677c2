"""The composer tool: picked adapters per task -> one adapter mix per image (binary masks over each task's picks,
every task served in every image), each mix with its task groups for the switch and composite methods."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from loracle.generation.masks import Candidate, ComposerSettings, Composition, Task, compose
from loracle.tools.adapter_files import locate_adapter

DEFAULT_WEIGHT = 0.8  # Stylus's default when neither card nor examples give one


class ComposablePick(Protocol):
    """What the composer reads of a picked adapter (the agent's `Pick` has these fields)."""

    ref: str
    file: str | None
    weight: float | None
    trigger_words: list[str]


def adapter_file(file_hint: str | None, file_name: str | None, adapter_dirs: list[Path]) -> str | None:
    """The adapter's usable file, by its name relative to the adapter folder that has it (the engine resolves
    it the same way, folder by folder); None when it is not here or cannot be used (tools/adapter_files.py)."""
    return locate_adapter(file_hint, file_name, adapter_dirs).file


def compose_mixes(
    picks_by_task: dict[str, Sequence[ComposablePick]],
    n_images: int,
    settings: ComposerSettings,
    *,
    seed: int,
    weight_scale: dict[str, float] | None = None,
) -> Composition:
    """Masks per task over its picks (each pick needs a local `file`), drawn per image, seeded."""
    weight_scale = weight_scale or {}
    tasks = []
    for task, picks in picks_by_task.items():
        candidates = [
            Candidate(
                ref=pick.file,
                weight=min(4.0, max(0.05, abs(pick.weight or DEFAULT_WEIGHT) * weight_scale.get(pick.ref, 1.0))),
                trigger_words=tuple(pick.trigger_words),
            )
            for pick in picks
            if pick.file
        ]
        tasks.append(Task(task, tuple(candidates)))
    return compose(tasks, n_images, settings, seed=seed)
