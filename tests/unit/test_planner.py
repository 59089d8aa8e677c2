"""The offline planner: task splitting, follow-up edits and threshold selection."""

from __future__ import annotations

import pytest

from loracle.agent.edits import merge_edits, read_follow_up
from loracle.agent.plan import Edits, Plan
from loracle.agent.planner import SelectionSettings, is_tag_list, negative_wishes, select_offline, split_tasks, strip_prompt_syntax


def phrases(prompt: str) -> list[str]:
    return [t.phrase for t in split_tasks(prompt)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a watercolor painting of a fox in a misty forest", ["watercolor painting", "fox", "misty forest"]),
        ("A white tour bus on a street in a city.", ["white tour bus", "street", "city"]),
        ("portrait of a samurai wearing red armor, in the style of ukiyo-e", ["portrait", "samurai", "red armor", "ukiyo-e"]),
        ("(masterpiece:1.2), best quality, 1girl, blue hair, school uniform <lora:x:0.7>", ["1girl", "blue hair", "school uniform"]),
        ("A small dog next to a couple of knitted hats", ["small dog", "knitted hats"]),
    ],
)
def test_split_tasks(prompt: str, expected: list[str]) -> None:
    assert phrases(prompt) == expected


def test_style_clauses_are_marked() -> None:
    kinds = {t.phrase: t.kind for t in split_tasks("a cat by Greg Rutkowski, oil painting")}
    assert kinds == {"cat": "concept", "Greg Rutkowski": "style", "oil painting": "style"}


def test_negative_wishes_are_not_tasks() -> None:
    assert negative_wishes("a beach without people, no text") == ["people", "text"]
    assert phrases("a beach without people") == ["beach"]


def test_prompt_syntax_and_tag_lists() -> None:
    assert strip_prompt_syntax("(red hair:1.3), [blue eyes] BREAK <lora:abc:0.6> smile") == "red hair, blue eyes, smile"
    assert strip_prompt_syntax("asuna \\(sao\\), 1girl") == "asuna sao, 1girl"  # no stray backslashes in tasks
    assert is_tag_list("1girl, solo, red hair, smile, outdoors")
    assert not is_tag_list("a photo of a cat sitting on a sofa, warm light")


def test_follow_ups_edit_the_plan() -> None:
    plan = Plan(prompt="a watercolor painting of a fox", tasks=split_tasks("a watercolor painting of a fox"))
    dropped = read_follow_up("warmer light, drop the watercolor look", plan)
    assert [t.phrase for t in dropped.tasks] == ["fox", "warmer light"]
    assert dropped.edits.excluded_terms == ["watercolor"] and not dropped.edits.keep_seed
    night = read_follow_up("same picture but at night", dropped)
    assert night.edits.keep_seed and night.tasks[-1].phrase == "night"
    assert night.edits.excluded_terms == ["watercolor"], "earlier edits carry over"
    stronger = read_follow_up("more painterly", plan)
    assert stronger.edits.weight_scale == {"term:painterly": 1.25} and stronger.prompt.endswith("painterly")
    pinned = read_follow_up("use civitai:42", plan)
    assert pinned.edits.pinned == ["civitai:42"]


def test_merge_edits_lets_a_later_turn_undo_an_earlier_one() -> None:
    merged = merge_edits(Edits(excluded=["civitai:1"], pinned=["civitai:2"]), Edits(pinned=["civitai:1"], excluded=["civitai:2"]))
    assert merged.pinned == ["civitai:1"] and merged.excluded == ["civitai:2"]


def test_select_offline_thresholds_and_uniqueness() -> None:
    scored = {
        "fox": [(1, 0.9), (2, 0.85), (3, 0.5)],
        "forest": [(2, 0.95), (4, 0.7), (5, 0.67)],
        "sky": [(6, 0.3)],
    }
    picks = select_offline(scored, SelectionSettings(min_score=0.6, relative=0.7, max_per_task=3, max_total=6))
    assert picks == {"fox": [1], "forest": [2, 4, 5], "sky": []}
    capped = select_offline(scored, SelectionSettings(min_score=0.6, relative=0.7, max_per_task=3, max_total=2))
    assert capped == {"fox": [1], "forest": [2], "sky": []}
