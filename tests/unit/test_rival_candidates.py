"""A task's candidates never include two adapters that undo each other (the offline planner's "thin" task
used to keep Boldface next to Hairline, whose strokes cancel in one mix)."""

from loracle.agent.picks import without_rival_candidates
from loracle.agent.plan import Pick


def _pick(i: int, ref: str) -> Pick:
    return Pick(adapter_id=i, ref=ref, name=ref)


def test_lower_ranked_rival_of_a_task_is_left_out_and_other_tasks_keep_theirs():
    picks = {"thin": [_pick(2, "w:thin"), _pick(1, "w:bold"), _pick(3, "w:slant")], "bold": [_pick(1, "w:bold")]}
    kept = without_rival_candidates(picks, [("w:bold", "w:thin", "stroke weight")])
    assert [p.ref for p in kept["thin"]] == ["w:thin", "w:slant"]
    assert [p.ref for p in kept["bold"]] == ["w:bold"]  # a rival in another task is not this task's business


def test_without_known_conflicts_every_candidate_stays():
    picks = {"thin": [_pick(2, "w:thin"), _pick(1, "w:bold")]}
    assert without_rival_candidates(picks, []) == picks


def test_the_rival_that_names_the_task_wins_over_a_better_ranked_one():
    bold = Pick(adapter_id=1, ref="w:bold", name="Boldface Digits", tags=["bold"])
    thin = Pick(adapter_id=2, ref="w:thin", name="Hairline Digits", tags=["thin"])
    kept = without_rival_candidates({"thin three": [bold, thin]}, [("w:bold", "w:thin", "stroke weight")])
    assert kept == {"thin three": [thin]}
