"""The relevance floors: which candidates may serve a task by the words of their card, and how picks use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loracle.agent.picks import without_uncovering
from loracle.agent.plan import Pick
from loracle.tools.relevance import covers, relevance_floor, uncovered_floor

CATALOG = Path(__file__).resolve().parents[2] / "generation" / "world" / "artifacts" / "catalog.jsonl"


def world_cards() -> dict[str, dict]:
    return {card["name"]: card for card in map(json.loads, CATALOG.read_text().splitlines())}


def card_text(card: dict) -> str:
    return " ".join([card["name"], *card["tags"], *card["trigger_words"], card["description"]])


@pytest.mark.parametrize(("task", "adapter"), [
    ("bold", "Boldface Digits"), ("thin three", "Hairline Digits"), ("slanted seven", "Italic Digits"),
    ("mirrored", "Mirror Writing"), ("inverted", "Negative Ink"), ("outlined", "Hollowline Digits"),
    ("blurred", "Soft Focus Digits"), ("boxed", "Framed Digits")])
def test_the_faithfulness_eval_style_words_are_covered_by_their_adapters(task: str, adapter: str) -> None:
    assert covers(task, card_text(world_cards()[adapter]))


@pytest.mark.parametrize(("task", "adapter"), [
    ("braid", "Hairline Digits"), ("flipped hair", "Mirror Writing"), ("white background", "Framed Digits"),
    ("eye focus", "Soft Focus Digits"), ("dark hair", "Negative Ink"), ("ff7r style", "Boldface Digits"),
    ("stylized", "Boldface Digits"), ("1990s style", "Hairline Digits")])
def test_unrelated_real_phrases_are_not_covered(task: str, adapter: str) -> None:
    assert not covers(task, card_text(world_cards()[adapter]))


def test_the_committed_floors_ask_more_of_a_candidate_that_does_not_cover_its_task() -> None:
    covered, uncovered = relevance_floor("digits"), uncovered_floor("digits")
    assert covered is not None and uncovered is not None and covered < uncovered


def test_picks_that_do_not_cover_their_task_need_the_higher_floor() -> None:
    cards = world_cards()

    def pick(name: str, score: float) -> Pick:
        card = cards[name]
        return Pick(adapter_id=1, ref=f"world:{name}", name=name, tags=card["tags"], trigger_words=card["trigger_words"],
                    description=card["description"], score=score)

    picks = {"thin": [pick("Hairline Digits", 1.7)], "braid": [pick("Hairline Digits", 1.9)],
             "white background": [pick("Framed Digits", 2.5)]}
    kept = without_uncovering(picks, 2.1, "a thin braid")
    assert [p.name for p in kept["thin"]] == ["Hairline Digits"] and kept["braid"] == []
    assert [p.name for p in kept["white background"]] == ["Framed Digits"], "a score above the higher floor is enough"
    assert without_uncovering(picks, None, "a thin braid") == picks
