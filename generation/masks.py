"""The binary-mask composer: tasks -> candidate adapters in, one adapter mix per image out.

Stylus's scheme (stylus/utils/masking.py): per task a binary mask over that task's adapters, drawn per
image; an active adapter's weight = recommended weight x scale (0.8) / number of active adapters in its task.
Differences, all settings: `max_active` per task, `allow_all_off`, `append_triggers` (A1111 users expect
trigger words; Stylus did not add them) and `distinct` (prefer masks not yet used in the batch, so a batch is
diverse instead of repeating draws). Seeded: the same inputs and seed give the same mixes.
"""

from __future__ import annotations

import itertools
import random
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Candidate:
    """One adapter proposed for a task, with its recommended weight and trigger words."""

    ref: str
    weight: float = 0.8
    trigger_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.ref:
            raise ValueError("Candidate.ref must be a non-empty adapter reference")
        if not (0.0 < self.weight <= 4.0):
            raise ValueError(f"Candidate {self.ref!r}: weight must be in (0, 4], got {self.weight}")
        object.__setattr__(self, "trigger_words", tuple(self.trigger_words))


@dataclass(frozen=True)
class Task:
    """A topic of the prompt and its candidate adapters (best first)."""

    name: str
    candidates: tuple[Candidate, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        refs = [c.ref for c in self.candidates]
        if len(set(refs)) != len(refs):
            raise ValueError(f"Task {self.name!r} lists an adapter twice: {refs}")


@dataclass(frozen=True)
class ComposerSettings:
    """Knobs of the composer; defaults reproduce Stylus except `distinct`."""

    scale: float = 0.8
    max_active: int = 3  # per task: most adapters a mask may switch on
    allow_all_off: bool = True  # may an image get no adapter at all (Stylus: yes)
    append_triggers: bool = False  # Stylus: no; A1111 habit: yes
    distinct: bool = True  # avoid repeating a mask within a batch while unused ones remain

    def __post_init__(self) -> None:
        if not (0.0 < self.scale <= 4.0):
            raise ValueError(f"scale must be in (0, 4], got {self.scale}")
        if self.max_active < 1:
            raise ValueError(f"max_active must be >= 1, got {self.max_active}")


@dataclass(frozen=True)
class Mix:
    """One image's adapters: ((ref, weight), ...) sorted by ref, plus trigger words to append. Hashable, so
    identical mixes group into one pipeline call."""

    weights: tuple[tuple[str, float], ...] = ()
    triggers: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, weights: dict[str, float], triggers: tuple[str, ...] = ()) -> Mix:
        return cls(tuple(sorted((r, round(float(w), 6)) for r, w in weights.items())), tuple(triggers))

    def as_dict(self) -> dict[str, float]:
        return dict(self.weights)

    def apply_to_prompt(self, prompt: str) -> str:
        extra = [t for t in self.triggers if t.lower() not in prompt.lower()]
        return ", ".join([prompt, *extra]) if extra else prompt


@dataclass
class Composition:
    """Composer output: one mix per image and the masks that produced them (for records and inspection)."""

    mixes: list[Mix]
    masks: list[dict[str, tuple[bool, ...]]] = field(default_factory=list)

    def groups(self) -> OrderedDict[Mix, list[int]]:
        return group_mixes(self.mixes)


def _task_masks(task: Task, max_active: int) -> list[tuple[bool, ...]]:
    n = len(task.candidates)
    return [m for m in itertools.product((False, True), repeat=n) if sum(m) <= max_active]


def mix_from_masks(tasks: list[Task], masks: dict[str, tuple[bool, ...]], settings: ComposerSettings) -> Mix:
    """Weights from masks: recommended weight x scale / active count in the task (Stylus)."""
    weights: dict[str, float] = {}
    triggers: list[str] = []
    for task in tasks:
        active = [c for c, on in zip(task.candidates, masks[task.name]) if on]
        for c in active:
            weights[c.ref] = weights.get(c.ref, 0.0) + c.weight * settings.scale / len(active)
            if settings.append_triggers:
                triggers.extend(t for t in c.trigger_words if t not in triggers)
    return Mix.from_dict(weights, tuple(triggers))


def compose(tasks: list[Task], n_images: int, settings: ComposerSettings | None = None, *, seed: int = 0) -> Composition:
    """Draw one mask per task per image (uniform over allowed subsets) and turn each into a Mix."""
    settings = settings or ComposerSettings()
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"Task names must be unique, got {names}")
    rng = random.Random(seed)
    options = {t.name: _task_masks(t, settings.max_active) for t in tasks}
    n_total = 1
    for opts in options.values():
        n_total *= len(opts)
    n_allowed = n_total - (0 if settings.allow_all_off else 1)
    if n_allowed <= 0:  # no candidates at all: every image is the plain base model
        return Composition([Mix() for _ in range(n_images)], [{t.name: () for t in tasks}] * n_images)
    def allowed(key: tuple) -> bool:
        return settings.allow_all_off or any(any(m) for m in key)

    keys: list[tuple] = []
    if n_total <= 4096:  # small space: enumerate, then draw (without replacement per round if distinct)
        space = [k for k in itertools.product(*(options[n] for n in names)) if allowed(k)]
        pool: list[tuple] = []
        for _ in range(n_images):
            if not settings.distinct:
                keys.append(rng.choice(space))
                continue
            if not pool:
                pool = list(space)
                rng.shuffle(pool)
            keys.append(pool.pop())
    else:  # huge space: rejection sampling; repeats are unlikely anyway
        used: set[tuple] = set()
        while len(keys) < n_images:
            key = tuple(rng.choice(options[n]) for n in names)
            if allowed(key) and not (settings.distinct and key in used):
                used.add(key)
                keys.append(key)
    mixes, masks = [], []
    for key in keys:
        draw = dict(zip(names, key))
        masks.append(draw)
        mixes.append(mix_from_masks(tasks, draw, settings))
    return Composition(mixes, masks)


def group_mixes(mixes: list[Mix]) -> OrderedDict[Mix, list[int]]:
    """Image indices per distinct mix, in first-seen order: each key is one pipeline call."""
    groups: OrderedDict[Mix, list[int]] = OrderedDict()
    for i, mix in enumerate(mixes):
        groups.setdefault(mix, []).append(i)
    return groups
