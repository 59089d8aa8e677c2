"""The offline planner (agent/planner.py) and its picks (agent/picks.py), each rule on an input where getting it
wrong changes the result: the relative threshold (within a fraction of the task's best), the per-task and total
caps (which keep the best scored, not the first chosen), the catalog's relevance floor on top of `min_score`,
the limits of task splitting, and the user's edits (exclusions, weights, pins, trigger words, rivals)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from loracle.agent.picks import (
    _choose_offline,
    apply_edits,
    with_llm_edits,
    without_excluded_triggers,
    without_rival_candidates,
)
from loracle.agent.plan import Candidate, Edits, Pick, Plan
from loracle.agent.planner import SelectionSettings, is_tag_list, plan_prompt, select_offline, split_tasks
from loracle.agent.selector import SubmitSelection
from loracle.agent.settings import Settings
from loracle.tools.relevance import relevance_floor

# fox's scores are low but it comes first; forest's are the best; the worst of each is above min_score but
# below 0.9 x its task's best
SCORED = {
    "fox": [(3, 0.60), (1, 0.70), (2, 0.66)],
    "forest": [(4, 0.95), (6, 0.80), (5, 0.90)],
    "sky": [(7, 0.55)],
}


def _settings(**changes) -> SelectionSettings:
    return SelectionSettings(**{"min_score": 0.5, "relative": 0.9, "max_per_task": 3, "max_total": 6, **changes})


def test_relative_threshold_keeps_only_those_near_the_tasks_best() -> None:
    assert select_offline(SCORED, _settings()) == {"fox": [1, 2], "forest": [4, 5], "sky": [7]}
    assert select_offline(SCORED, _settings(relative=0.0, max_total=7)) == {"fox": [1, 2, 3], "forest": [4, 5, 6], "sky": [7]}


def test_min_score_and_the_exact_threshold_count() -> None:
    assert select_offline(SCORED, _settings(min_score=0.6)) == {"fox": [1, 2], "forest": [4, 5], "sky": []}
    # a score equal to a threshold clears it
    assert select_offline({"t": [(1, 0.8), (2, 0.4)]}, _settings(min_score=0.4, relative=0.5)) == {"t": [1, 2]}


def test_total_cap_keeps_the_best_scored_not_the_first_chosen() -> None:
    assert select_offline(SCORED, _settings(max_total=3)) == {"fox": [1], "forest": [4, 5], "sky": []}
    assert select_offline(SCORED, _settings(max_total=5)) == {"fox": [1, 2], "forest": [4, 5], "sky": [7]}


def test_per_task_cap_keeps_each_tasks_best() -> None:
    assert select_offline(SCORED, _settings(max_per_task=1)) == {"fox": [1], "forest": [4], "sky": [7]}


def test_an_adapter_serves_only_the_task_it_scores_best_for() -> None:
    scored = {"a": [(1, 0.7), (2, 0.69)], "b": [(1, 0.9), (3, 0.5)], "c": []}
    assert select_offline(scored, _settings(relative=0.0)) == {"a": [2], "b": [1, 3], "c": []}
    tie = {"first": [(1, 0.8)], "second": [(1, 0.8), (2, 0.8)]}
    assert select_offline(tie, _settings()) == {"first": [1], "second": [2]}, "a tie goes to the earlier task"


def _candidate(i: int, score: float, **fields) -> Candidate:
    return Candidate(adapter_id=i, ref=f"c:{i}", name=f"Adapter {i}", score=score, **fields)


def _ctx(family: str) -> SimpleNamespace:
    return SimpleNamespace(settings=Settings(ranker="rerank"), db=None, family=family, static_conflicts=[])


def test_the_relevance_floor_raises_min_score_where_the_catalog_has_one() -> None:
    floor = relevance_floor("digits")
    if floor is None:
        pytest.skip("no relevance floor calibrated for the digits catalog")
    assert relevance_floor("no such family") is None
    candidates = {"seven": [_candidate(1, floor + 0.05), _candidate(2, floor - 0.05)]}
    plan = Plan(prompt="a seven")
    with_floor = _choose_offline(_ctx("digits"), plan, candidates, "offline")
    assert [p.adapter_id for p in with_floor.picks["seven"]] == [1]
    assert with_floor.planner == "offline" and with_floor.candidates is candidates and with_floor.llm_calls == 0
    without = _choose_offline(_ctx("no such family"), plan, candidates, "offline")
    assert [p.adapter_id for p in without.picks["seven"]] == [1, 2]


def test_the_floor_never_lowers_min_score() -> None:
    candidates = {"seven": [_candidate(1, 0.30)]}
    assert _choose_offline(_ctx("digits"), Plan(prompt="a seven"), candidates, "offline").picks == {"seven": []}


def _pick(i: int, **fields) -> Pick:
    return Pick(adapter_id=i, ref=f"c:{i}", name=f"Adapter {i}", weight=0.5, **fields)


def test_edits_exclude_scale_and_pin() -> None:
    picks = {"fox": [_pick(1, tags=["fur", "lowkey"]), _pick(2, trigger_words=["glow"])], "sky": [_pick(1), _pick(3)]}
    edits = Edits(excluded=["c:3"], weight_scale={"c:1": 2.0, "id:1": 1.5, "term:glow": 1 / 3, "term:none": 9.0})
    pinned = [_candidate(2, 1.0), _candidate(8, 1.0)]
    result = apply_edits(picks, edits, pinned)
    assert [(p.adapter_id, p.weight) for p in result["fox"]] == [(1, 1.5), (2, 0.167)]  # shown to 3 decimals
    assert result["sky"] == [], "adapter 1 is used once, adapter 3 is excluded"
    assert [p.adapter_id for p in result["pinned"]] == [8] and result["pinned"][0].reason == "pinned by the user"
    terms = apply_edits(picks, Edits(excluded_terms=["FUR".lower()]), [])
    assert [p.adapter_id for p in terms["fox"]] == [2] and "pinned" not in terms


def test_llm_edits_join_the_plans_own() -> None:
    plan = Plan(prompt="a fox", negative="blur", edits=Edits(pinned=["c:1"], excluded=["c:9"], weight_scale={"c:7": 2.0}))
    answer = SubmitSelection(tasks=[], pin=[1, 2, 5], exclude=[3], reweight={"4": 0.5}, keep_seed=True, negative="")
    edited = with_llm_edits(plan, answer, {1: "c:1", 2: "c:2", 3: "c:3"})
    assert edited.edits.pinned == ["c:1", "c:2"] and edited.edits.excluded == ["c:9", "c:3"]
    assert edited.edits.weight_scale == {"c:7": 2.0, "id:4": 0.5} and edited.edits.keep_seed and edited.negative == "blur"
    assert plan.edits.pinned == ["c:1"] and plan.edits.weight_scale == {"c:7": 2.0}, "the plan itself is left as it was"


def test_excluded_adapters_take_their_trigger_words_out_of_the_prompt() -> None:
    candidates = {"look": [_candidate(1, 1.0, trigger_words=["boldface"]), _candidate(2, 1.0, trigger_words=["inked", "thin"])]}
    plan = Plan(prompt="a boldface seven, thin strokes", edits=Edits(excluded=["c:1"]))
    kept = {"look": [_pick(2, trigger_words=["inked", "thin"])]}
    assert without_excluded_triggers(plan, candidates, kept).prompt == "a seven, thin strokes"
    by_term = Plan(prompt="a boldface seven, thin strokes", edits=Edits(excluded_terms=["Thin"]))
    assert without_excluded_triggers(by_term, candidates, {"look": []}).prompt == "a boldface seven, strokes"
    assert without_excluded_triggers(Plan(prompt="a seven"), candidates, kept).prompt == "a seven"


def test_splitting_limits() -> None:
    """Four short segments already make a tag list; a phrase of stop words is no task; at most 8 tasks."""
    assert is_tag_list("1girl, blue hair, smile, outdoors") and not is_tag_list("1girl, blue hair, smile")
    # three of four segments short is enough, one of four is not
    assert is_tag_list("1girl, blue hair, smile, a girl standing in the rain at night")
    assert not is_tag_list("1girl, a girl standing in the rain, under a big red umbrella, at night in the city")
    # a segment of up to four words is short
    assert is_tag_list("1girl, red hair, one two three four, five six seven eight")
    assert not is_tag_list("1girl, red hair, one two three four five, six seven eight nine ten")
    assert len(split_tasks("a " + "very " * 30 + "long " * 40 + "fox")[0].phrase) == 200
    assert [(t.phrase, t.kind) for t in split_tasks("1girl, fox, fox, pixel art")] == [
        ("1girl", "concept"), ("fox", "concept"), ("pixel art", "style")]
    assert [t.phrase for t in split_tasks("a fox, it is, a forest")] == ["fox", "forest"]
    many = ", ".join(f"thing{i}" for i in range(12))
    assert [t.phrase for t in split_tasks(many)] == [f"thing{i}" for i in range(8)]


def test_at_most_three_adapters_a_task_by_default() -> None:
    """The planner's contract, the LLM's too (0-3 per task)."""
    scored = {"t": [(i, 0.99) for i in range(1, 6)]}
    assert select_offline(scored, SelectionSettings()) == {"t": [1, 2, 3]}


def test_a_plans_subject_is_its_first_task() -> None:
    assert plan_prompt("a fox in a misty forest").subject == "fox"
    assert plan_prompt("").subject == "" and plan_prompt("").tasks == []


def test_selection_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SelectionSettings().__setattr__("min_score", 0.0)


def test_a_rival_named_by_a_word_of_three_letters_or_more_wins() -> None:
    """Words of the task shorter than three letters ("ox", "a") name nothing."""
    plain = Pick(adapter_id=1, ref="w:plain", name="Plain Digits", tags=["ox"])
    red = Pick(adapter_id=2, ref="w:red", name="Crimson Digits", tags=["red"])
    conflict = [("w:plain", "w:red", "colour")]
    assert without_rival_candidates({"red ox": [plain, red]}, conflict) == {"red ox": [red]}
