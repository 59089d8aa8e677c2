"""The binary-mask composer: tasks -> candidate adapters in, one adapter mix per image out.

Stylus's scheme (stylus/utils/masking.py): per task a binary mask over that task's adapters, drawn per
image; an active adapter's weight = recommended weight x scale (0.8) / number of active adapters in its task.
Stylus's masks may also switch a whole task off, so an image can miss a style the user asked for; here masks
vary which of a task's candidates are active, never whether a task is served: every task with a candidate
has at least one active adapter in every image (`allow_all_off=True` restores Stylus's masks).
Other settings: `max_active` per task, `append_triggers` (A1111 users expect trigger words; Stylus did not add
them) and `distinct` (prefer masks not yet used in the batch, so a batch is diverse instead of repeating
draws). Seeded: the same inputs and seed give the same mixes. Each mix records its task groups, which the
switch and composite composition methods act on (`generation.composition`).
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
    allow_all_off: bool = False  # may a task's mask switch all its adapters off (Stylus: yes; a task goes unserved)
    append_triggers: bool = False  # Stylus: no; A1111 habit: yes
    distinct: bool = True  # avoid repeating a mask within a batch while unused ones remain

    def __post_init__(self) -> None:
        if not (0.0 < self.scale <= 4.0):
            raise ValueError(f"scale must be in (0, 4], got {self.scale}")
        if self.max_active < 1:
            raise ValueError(f"max_active must be >= 1, got {self.max_active}")


Weights = tuple[tuple[str, float], ...]


def _weights(weights: dict[str, float]) -> Weights:
    return tuple(sorted((r, round(float(w), 6)) for r, w in weights.items()))


@dataclass(frozen=True)
class Mix:
    """One image's adapters: ((ref, weight), ...) sorted by ref, trigger words to append, and the task groups
    the composer drew them for ((task, its active adapters' weights), ...). Hashable, so identical mixes group
    into one pipeline call; the groups are part of the identity, since switch and composite act on them."""

    weights: Weights = ()
    triggers: tuple[str, ...] = ()
    groups: tuple[tuple[str, Weights], ...] = ()

    @classmethod
    def from_dict(cls, weights: dict[str, float], triggers: tuple[str, ...] = (),
                  groups: dict[str, dict[str, float]] | None = None) -> Mix:
        """`groups`: {task: {ref: weight}}; `weights` is their sum per adapter when not given."""
        tasks = tuple((task, _weights(ws)) for task, ws in (groups or {}).items() if ws)
        return cls(_weights(weights), tuple(triggers), tasks)

    def as_dict(self) -> dict[str, float]:
        return dict(self.weights)

    def adapter_groups(self) -> list[dict[str, float]]:
        """The adapters per group with their weights: the composer's task groups, then one group for each
        adapter of the mix that no task holds (a `<lora:...>` tag, a hand-written mix)."""
        grouped = [dict(ws) for _, ws in self.groups]
        held = {ref for ws in grouped for ref in ws}
        return grouped + [{ref: w} for ref, w in self.weights if ref not in held]

    def with_adapters(self, extra: dict[str, float]) -> Mix:
        """This mix with `extra` adapters set at their weights (explicit picks win; each is its own group)."""
        if not extra:
            return self
        groups = {task: {r: w for r, w in ws if r not in extra} for task, ws in self.groups}
        return Mix.from_dict({**self.as_dict(), **extra}, self.triggers, groups)

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


def _task_masks(task: Task, settings: ComposerSettings) -> list[tuple[bool, ...]]:
    """A task's allowed masks: at most `max_active` on, and at least one unless Stylus's all-off is allowed."""
    n = len(task.candidates)
    least = 0 if settings.allow_all_off or n == 0 else 1
    return [m for m in itertools.product((False, True), repeat=n) if least <= sum(m) <= settings.max_active]


def mix_from_masks(tasks: list[Task], masks: dict[str, tuple[bool, ...]], settings: ComposerSettings) -> Mix:
    """Weights from masks: recommended weight x scale / active count in the task (Stylus); one group per task."""
    weights: dict[str, float] = {}
    groups: dict[str, dict[str, float]] = {}
    triggers: list[str] = []
    for task in tasks:
        active = [c for c, on in zip(task.candidates, masks[task.name]) if on]
        for c in active:
            w = c.weight * settings.scale / len(active)
            weights[c.ref] = weights.get(c.ref, 0.0) + w
            groups.setdefault(task.name, {})[c.ref] = w
            if settings.append_triggers:
                triggers.extend(t for t in c.trigger_words if t not in triggers)
    return Mix.from_dict(weights, tuple(triggers), groups)


def compose(tasks: list[Task], n_images: int, settings: ComposerSettings | None = None, *, seed: int = 0) -> Composition:
    """Draw one mask per task per image (uniform over the allowed subsets) and turn each into a Mix."""
    settings = settings or ComposerSettings()
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"Task names must be unique, got {names}")
    rng = random.Random(seed)
    options = {t.name: _task_masks(t, settings) for t in tasks}
    n_total = 1
    for opts in options.values():
        n_total *= len(opts)
    keys: list[tuple] = []
    if n_total <= 4096:  # small space: enumerate, then draw (without replacement per round if distinct)
        space = list(itertools.product(*(options[n] for n in names)))
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
            if not (settings.distinct and key in used):
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
