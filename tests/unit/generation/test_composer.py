"""The composer's pure parts, each rule on an input where breaking it shows: input validation, weights per
task and across tasks, draws (distinct, seeded, uniform enough to differ by seed, on both the enumerated and
the sampled path), the composition methods' group schedule, and the composer tool's weight scaling."""

from __future__ import annotations

import dataclasses

import pytest

from loracle.generation.composition import CompositionMethod, adapter_state
from loracle.generation.masks import Candidate, ComposerSettings, Mix, Task, compose, mix_from_masks
from loracle.tools.compose import DEFAULT_WEIGHT, compose_mixes


def test_candidates_and_tasks_are_validated_and_frozen() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Candidate("")
    for weight in (0.0, -0.5, 4.01):
        with pytest.raises(ValueError, match="weight"):
            Candidate("a", weight)
    assert Candidate("a", 4.0).weight == 4.0 and Candidate("a", 0.01).weight == 0.01
    assert Candidate("a", trigger_words=["x", "y"]).trigger_words == ("x", "y")
    task = Task("t", [Candidate("a"), Candidate("b")])
    assert isinstance(task.candidates, tuple) and hash(task) == hash(Task("t", (Candidate("a"), Candidate("b"))))
    with pytest.raises(ValueError, match="twice"):
        Task("t", (Candidate("a"), Candidate("a", 0.5)))
    for frozen in (Candidate("a"), task, ComposerSettings(), Mix()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            frozen.__setattr__("x", 1)


def test_settings_defaults_are_stylus_and_limits_are_checked() -> None:
    """Stylus's recommended-weight default and scale (0.8), up to 3 adapters a task, no all-off masks, no
    trigger words appended; `distinct` is loracle's."""
    assert Candidate("a").weight == 0.8
    assert ComposerSettings() == ComposerSettings(scale=0.8, max_active=3, allow_all_off=False, append_triggers=False,
                                                  distinct=True)
    for bad in ({"scale": 0.0}, {"scale": 4.01}, {"max_active": 0}):
        with pytest.raises(ValueError):
            ComposerSettings(**bad)
    assert ComposerSettings(scale=4.0, max_active=1).max_active == 1


def test_weights_split_within_a_task_and_add_across_tasks() -> None:
    tasks = [Task("a", (Candidate("x", 1.0, ("tx",)), Candidate("y", 0.5, ("ty", "tx")))), Task("b", (Candidate("x", 0.6),))]
    mix = mix_from_masks(tasks, {"a": (True, True), "b": (True,)}, ComposerSettings(scale=0.5, append_triggers=True))
    assert mix.as_dict() == {"x": pytest.approx(1.0 * 0.5 / 2 + 0.6 * 0.5), "y": pytest.approx(0.5 * 0.5 / 2)}
    assert mix.groups == (("a", (("x", 0.25), ("y", 0.125))), ("b", (("x", 0.3),)))
    assert mix.triggers == ("tx", "ty")  # in order, once each
    assert mix_from_masks(tasks, {"a": (False, True), "b": (False,)}, ComposerSettings()).triggers == ()
    assert mix_from_masks(tasks, {"a": (False, True), "b": (False,)}, ComposerSettings()).as_dict() == {"y": pytest.approx(0.4)}


def test_triggers_already_in_the_prompt_are_not_repeated() -> None:
    mix = Mix.from_dict({"x": 1.0}, ("Wtrcolor", "glow"))
    assert mix.apply_to_prompt("a wtrcolor fox") == "a wtrcolor fox, glow"
    assert Mix.from_dict({"x": 1.0}, ("fox",)).apply_to_prompt("a Fox") == "a Fox"


def test_a_mix_without_extra_adapters_is_itself() -> None:
    mix = Mix.from_dict({"a": 0.4}, groups={"t": {"a": 0.4}})
    assert mix.with_adapters({}) is mix
    assert Mix.from_dict({"a": 0.4}, groups={"t": {}}).groups == ()


def test_compose_refuses_bad_requests() -> None:
    tasks = [Task("t", (Candidate("a"),))]
    with pytest.raises(ValueError, match="n_images"):
        compose(tasks, 0)
    assert len(compose(tasks, 1).mixes) == 1
    with pytest.raises(ValueError, match="unique"):
        compose([*tasks, Task("t", (Candidate("b"),))], 2)


def test_every_image_gets_a_mix_and_its_masks() -> None:
    tasks = [Task("t", (Candidate("a"), Candidate("b"), Candidate("c")))]
    comp = compose(tasks, 10, seed=4)
    assert len(comp.mixes) == len(comp.masks) == 10
    for mix, mask in zip(comp.mixes, comp.masks):
        assert set(mix.as_dict()) == {c.ref for c, on in zip(tasks[0].candidates, mask["t"]) if on}
    # 7 allowed masks: the first 7 images use each once, the next round starts again
    assert len(set(comp.mixes[:7])) == 7 and set(comp.mixes[7:]) <= set(comp.mixes[:7])


def test_draws_depend_on_the_seed() -> None:
    tasks = [Task("t", (Candidate("a"), Candidate("b"), Candidate("c")))]
    firsts = {compose(tasks, 1, seed=seed).mixes[0] for seed in range(20)}
    assert len(firsts) > 2
    assert compose(tasks, 5, seed=3).mixes == compose(tasks, 5, seed=3).mixes


def test_a_huge_mask_space_is_sampled_distinct_unless_asked_otherwise() -> None:
    # 13 candidates, up to 13 active: 8191 masks, more than are enumerated
    task = Task("t", tuple(Candidate(f"c{i}") for i in range(13)))
    settings = ComposerSettings(max_active=13)
    distinct = compose([task], 300, settings, seed=1)
    assert len(distinct.mixes) == 300 and len(set(distinct.mixes)) == 300
    assert all(any(m["t"]) for m in distinct.masks)
    repeats = compose([task], 300, dataclasses.replace(settings, distinct=False), seed=1)
    assert len(repeats.mixes) == 300 and len(set(repeats.mixes)) < 300  # ~5 repeats expected among 300 of 8191


def test_composition_defaults_and_validation() -> None:
    assert CompositionMethod() == CompositionMethod("merge", 5)  # Zhong et al.'s reference switches every 5 steps
    with pytest.raises(ValueError, match="one of"):
        CompositionMethod("blend")
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="switch_every"):
            CompositionMethod("switch", bad)
    assert CompositionMethod("switch", 1).switch_every == 1


TWO_GROUPS = Mix.from_dict({"a": 0.4, "b": 0.4, "t": 0.7}, groups={"style": {"a": 0.4}, "subject": {"b": 0.4}})


def test_adapter_states_per_method() -> None:
    assert CompositionMethod("merge").adapter_states(TWO_GROUPS) == [None]
    groups = [{"a": 0.4}, {"b": 0.4}, {"t": 0.7}]
    assert CompositionMethod("switch").adapter_states(TWO_GROUPS) == groups
    assert CompositionMethod("composite").adapter_states(TWO_GROUPS) == groups
    assert CompositionMethod("composite").adapter_states(Mix()) == [None]


def test_switch_schedule_and_turns() -> None:
    switch = CompositionMethod("switch", 2)
    assert [switch.active_groups(step, 3) for step in range(8)] == [[0], [0], [1], [1], [2], [2], [0], [0]]
    assert [switch.starts_turn(step) for step in range(5)] == [True, False, True, False, True]
    composite = CompositionMethod("composite", 2)
    assert composite.active_groups(3, 3) == [0, 1, 2] and not composite.starts_turn(2)
    assert CompositionMethod("merge").active_groups(0, 1) == [0] and not CompositionMethod("merge").starts_turn(0)


def test_switch_must_give_every_group_a_turn() -> None:
    switch = CompositionMethod("switch", 2)
    with pytest.raises(ValueError, match="needs more than 4"):
        switch.check(TWO_GROUPS, 4)
    switch.check(TWO_GROUPS, 5)
    CompositionMethod("switch", 5).check(Mix.from_dict({"a": 1.0}), 1)  # one group: no turns to share
    CompositionMethod("composite", 5).check(TWO_GROUPS, 1)
    CompositionMethod("merge", 5).check(TWO_GROUPS, 1)


def test_parameters_name_the_method() -> None:
    assert CompositionMethod("merge", 3).parameters() == {"Composition": "merge"}
    assert CompositionMethod("switch", 3).parameters() == {"Composition": "switch", "Switch every": 3}


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []

    def activate(self, mix: dict[str, float]) -> None:
        self.calls.append(dict(mix))


def test_a_branch_state_activates_its_weights_and_restores_the_mix() -> None:
    adapters = _Recorder()
    with adapter_state(adapters, {"a": 0.4}, restore=TWO_GROUPS)():
        assert adapters.calls == [{"a": 0.4}]
    assert adapters.calls == [{"a": 0.4}, TWO_GROUPS.as_dict()]
    with pytest.raises(RuntimeError), adapter_state(adapters, {}, restore=Mix())():
        raise RuntimeError("a failing branch still restores")
    assert adapters.calls[-1] == {}
    plain = _Recorder()
    with adapter_state(plain, {"b": 1.0})():
        pass
    assert plain.calls == [{"b": 1.0}]


class _Pick:
    def __init__(self, ref: str, file: str | None, weight: float | None, triggers: tuple[str, ...] = ()) -> None:
        self.ref, self.file, self.weight, self.trigger_words = ref, file, weight, list(triggers)


def test_compose_mixes_scales_clamps_and_skips_picks_without_a_file() -> None:
    picks = {"style": [_Pick("c:1", "one.safetensors", 1.0), _Pick("c:2", None, 1.0)],
             "subject": [_Pick("c:3", "three.safetensors", None)],
             "detail": [_Pick("c:4", "four.safetensors", -3.0)],
             "faint": [_Pick("c:5", "five.safetensors", 0.02)],
             "missing": [_Pick("c:6", None, 1.0)]}
    settings = ComposerSettings(scale=1.0)
    comp = compose_mixes(picks, 1, settings, seed=0, weight_scale={"c:1": 0.5, "c:4": 2.0})
    assert comp.mixes[0].as_dict() == {"one.safetensors": pytest.approx(0.5), "three.safetensors": pytest.approx(DEFAULT_WEIGHT),
                                       "four.safetensors": pytest.approx(4.0), "five.safetensors": pytest.approx(0.05)}
    assert set(comp.masks[0]) == set(picks), "a task without a usable file is still a task"
    assert compose_mixes(picks, 1, settings, seed=0).mixes[0].as_dict()["one.safetensors"] == pytest.approx(1.0)


def test_more_images_than_masks_use_every_mask_then_repeat() -> None:
    """At the largest space still enumerated (4096 masks), a batch larger than the space uses each mask once
    before repeating; only an enumerated space can (a sampled one would look for an unused mask forever)."""
    task = Task("t", tuple(Candidate(f"c{i}") for i in range(12)))
    comp = compose([task], 4097, ComposerSettings(max_active=12, allow_all_off=True), seed=2)
    assert len(set(comp.mixes[:4096])) == 4096 and comp.mixes[4096] in set(comp.mixes[:4096])
