"""The faithfulness suite's prompts and per-image scoring."""

from __future__ import annotations

from loracle.evals.faithfulness import EXCLUSIVE, SYMMETRIC, Case, cases, first_attempt_paths, interval, score_images


def test_cases_hold_compatible_styles_on_digits_that_can_show_them() -> None:
    made = cases(5)
    assert [len(c.styles) for c in made] == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    assert not any(pair <= set(c.styles) for c in made for pair in EXCLUSIVE)
    assert not any(pair <= set(c.styles) for c in cases(40) for pair in ({"inverted", "boxed"},)), "a frame no render can show"
    assert not any("mirrored" in c.styles and c.digit in SYMMETRIC for c in made)
    assert Case(7, ("bold", "slanted")).prompt == "a bold, slanted seven" and Case(3, ()).prompt == "a three"


def test_multi_turn_cases_never_ask_for_a_frame_on_an_inverted_digit() -> None:
    from loracle.evals.faithfulness import multi_turn

    prompts: list[str] = []

    def run_turn(thread: str, message: str, seed: int, n: int) -> dict:
        prompts.append(message)
        return {"images": [{"path": "image.png"}]}

    class PlainReads:
        def read(self, paths: list[str]) -> list:
            return [(7, set()) for _ in paths]

    multi_turn(run_turn, PlainReads(), seeds=[0, 1, 2], n_images=4, tag="t", per_seed=10)  # type: ignore[arg-type]
    turns = list(zip(prompts[0::2], prompts[1::2]))
    assert len(turns) == 60
    assert not any("inverted" in first and "boxed" in second for first, second in turns)
    assert not any("boxed" in first and "inverted" in first for first, _ in turns)


def test_an_image_is_faithful_only_with_the_digit_every_style_and_nothing_else() -> None:
    case = Case(7, ("bold", "slanted"))
    reads = [(7, {"bold", "slanted"}), (7, {"bold"}), (1, {"bold", "slanted"}), (7, {"bold", "slanted", "boxed"})]
    assert score_images(reads, case) == {"digit": 0.75, "requested": 0.75, "no_unrequested": 0.75, "faithful": 0.25, "images": 4}
    assert interval([0.5, 0.5, 0.5]) == {"mean": 0.5, "ci95": 0.0}
    assert interval([0.0, 1.0])["ci95"] > 1


def test_the_relevance_floor_is_fitted_inside_the_training_split() -> None:
    from loracle.evals.relevance_floor import cross_validated_floor, dev_tasks, fit, is_heldout

    served = [(("Bold", 2.0 + i / 10, True), "Bold") for i in range(5)]
    unrelated = [(("Bold", 1.0 + i / 10, True), None) for i in range(5)]
    assert 1.4 < fit(served + unrelated, two_floors=False)[0] < 2.0, "between the highest unserved and the lowest served score"
    floors, accuracy, cost = cross_validated_floor(served + unrelated)
    assert 1.4 < floors[0] < 2.0 and accuracy == 1.0 and cost == 0
    tasks = dev_tasks()
    assert 0.15 < sum(is_heldout(t) for t, _ in tasks) / len(tasks) < 0.45
    assert ("a cat", None) in tasks and ("bold", "Boldface Digits") in tasks


def test_a_candidate_that_does_not_cover_its_task_needs_the_higher_floor() -> None:
    """Unrelated phrases scoring above paraphrases: one floor cannot serve both, two (by coverage) can."""
    from loracle.evals.relevance_floor import accuracy, cross_validated_floor, fit

    paraphrases = [(("Thin", 1.6 + i / 100, True), "Thin") for i in range(10)]
    unrelated = [(("Thin", 1.7 + i / 50, False), None) for i in range(10)]
    rows = paraphrases + unrelated
    one, two = fit(rows, two_floors=False), fit(rows)
    assert accuracy(rows, two) == 1.0 and accuracy(rows, one) < 1.0
    assert two[0] < 1.6 and two[1] > 1.88
    assert cross_validated_floor(rows)[2] < cross_validated_floor(rows, two_floors=False)[2]


def test_real_phrases_come_from_the_prompt_file_split_by_prompt(tmp_path) -> None:
    import json

    from loracle.evals.rank_train import is_heldout as is_heldout_prompt
    from loracle.evals.relevance_floor import real_phrases

    assert real_phrases(tmp_path / "absent.jsonl") == ([], [])
    ids = [f"civitai-image-{i}" for i in range(40)]
    held_id = next(i for i in ids if is_heldout_prompt(i))
    train_id = next(i for i in ids if not is_heldout_prompt(i))
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": train_id, "prompt": "1girl, braided ponytail, blurry, (masterpiece:1.2), white background"},
            {"id": held_id, "prompt": "a lighthouse on a rocky cliff, white background"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, held = real_phrases(path)
    assert sorted(train) == ["braided ponytail", "white background"], "split as the planner splits; dev tasks left out"
    assert sorted(held) == ["lighthouse", "rocky cliff"], "held-out phrases already in training are left out"


def test_before_retries_means_the_first_images_sampled() -> None:
    """An attempt retried for a finding on its mixes sampled nothing: "before retries" is the next one's images."""
    state = {"attempts": [{"images": []}, {"images": ["a.png", "b.png"]}], "images": [{"path": "c.png"}]}
    assert first_attempt_paths(state) == ["a.png", "b.png"]
    assert first_attempt_paths({"attempts": [], "images": [{"path": "c.png"}]}) == ["c.png"]


def test_delivered_images_are_scored_by_the_eval_judge_with_the_agents_judge_shown_apart() -> None:
    """The agent keeps what its own judge accepts: the reported after-retry rate must come from the other judge."""
    from loracle.evals.faithfulness import single_turns

    case = Case(7, ("bold",))

    def run_turn(thread: str, message: str, seed: int, n: int) -> dict:
        return {"images": [{"path": f"{i}.png"} for i in range(n)], "attempts": [], "nfe": 40 * n}

    class TwoJudges:
        def read(self, paths: list[str], agent_judge: bool = False) -> list:
            return [(7, {"bold"}) if agent_judge or p == "0.png" else (1, {"bold"}) for p in paths]

    result = single_turns(run_turn, TwoJudges(), [case], seeds=[0, 1], n_images=4, tag="t")  # type: ignore[arg-type]
    assert result["1 styles, after retries"]["faithful"]["mean"] == 0.25
    assert result["1 styles, before retries"]["faithful"]["mean"] == 0.25
    assert result["1 styles, after retries, by the agent's own judge"]["faithful"]["mean"] == 1.0
    assert result["nfe_per_image"] == 40.0
