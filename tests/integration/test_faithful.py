"""The agent delivers what was asked in the digits world (#28): nothing unasked, honest answers, tags the
server lacks handled, an answer that matches each PNG, refinements that edit the words, repairs before drops."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from loracle.agent.service import Agent
from loracle.agent.settings import Settings
from loracle.tools.inspection import JudgeVerdict


@pytest.fixture
def agent(db, tmp_path: Path):
    settings = Settings(home=tmp_path / "home", base_model="world", steps=8, n_images=2, skip_threshold=0,
                        llm_model=None)
    agent = Agent(settings, db)
    yield agent
    agent.close()


def picked(state: dict) -> set[str]:
    return {p["name"] for ps in state["picks"].values() for p in ps}


def test_nothing_unasked_and_the_answer_says_what_could_not_be_done(agent: Agent) -> None:
    seven = agent.run_turn("plain", "a seven", seed=1)
    assert picked(seven) == set() and all(image["mix"] == {} for image in seven["images"]), "no frame, no bold"
    assert "seven: drawn by the base model itself" in seven["answer"]
    fox = agent.run_turn("fox", "a watercolor fox", seed=1)
    assert picked(fox) == set() and all(image["mix"] == {} for image in fox["images"])
    assert "draws digits only" in fox["answer"]
    assert "watercolor fox: no adapter in the catalog fits it" in fox["answer"]
    bold = agent.run_turn("bold", "a bold, slanted seven", seed=1)
    assert picked(bold) == {"Boldface Digits", "Italic Digits"}
    watercolor = agent.run_turn("watercolor", "a watercolor five", seed=1)
    assert picked(watercolor) == set()
    assert "watercolor five: no adapter in the catalog fits it" in watercolor["answer"], "not 'drawn by the base model'"


@pytest.mark.parametrize("digit", ["one", "four", "five"])
def test_a_style_is_found_whatever_digit_it_is_asked_on(agent: Agent, digit: str) -> None:
    """Retrieval is asked for what an adapter must add: "thin five" scored the thin-stroke adapter under the floor
    while "thin four" cleared it, and "a thin five" came back plain with "drawn by the base model itself"."""
    state = agent.run_turn(f"thin-{digit}", f"a thin {digit}", seed=1, n_images=1)
    assert picked(state) == {"Hairline Digits"}


def test_lora_tags_the_server_lacks_are_reported_never_an_error(agent: Agent) -> None:
    missing = agent.run_turn("tags", "a five <lora:baroqueAI:0.8> <lora:../../secrets:1>", seed=2)
    assert "<lora:baroqueAI> is not on this server" in missing["answer"]
    assert "<lora:../../secrets>" in missing["answer"]
    assert not re.search(r"/(?:tmp|home|work|root)/", missing["answer"]), "no server path"
    assert all(image["mix"] == {} for image in missing["images"])
    by_name = agent.run_turn("named", "a five <lora:Framed Digits:1>", seed=2)
    assert "applied it from its file digits_boxed_kohya" in by_name["answer"]
    assert all(Path(ref).stem == "digits_boxed_kohya" for image in by_name["images"] for ref in image["mix"])


def png_recipe(path: Path) -> tuple[dict[str, float], str]:
    with Image.open(path) as im:
        text = im.info["parameters"]
    tags = {name: float(w) for name, w in re.findall(r"<lora:([^:>]+):([-\d.]+)>", text)}
    return tags, re.search(r"Composition: (\w+)", text).group(1)


def test_the_answer_lists_exactly_what_each_png_says(agent: Agent) -> None:
    state = agent.run_turn("recipe", "a bold, slanted seven <lora:digits_boxed_kohya:0.5>", seed=3)
    lines = [line for line in state["answer"].splitlines() if line.startswith("Image")]
    for number, image in enumerate(state["images"], start=1):
        tags, method = png_recipe(agent.settings.images_dir / image["path"])
        [line] = [line for line in lines if re.match(rf"Images? (?:\d+, )*{number}\b", line)]
        listed = {m.group(1): float(m.group(2)) for m in re.finditer(r"\(?(digits_\w+)\)? at ([\d.]+)", line)}
        assert listed == tags and f"method {method}" in line, (line, tags)
        assert tags["digits_boxed_kohya"] == 0.5 and len(tags) == 3
        assert f'sampled text "{image["prompt"]}"' in line


def test_refinement_edits_the_words_too(agent: Agent) -> None:
    agent.run_turn("refine", "a bold, slanted seven", seed=4)
    dropped = agent.run_turn("refine", "drop the bold look", seed=4)
    assert "Boldface Digits" not in picked(dropped) and "Italic Digits" in picked(dropped)
    assert dropped["plan"]["prompt"] == "a slanted seven"
    assert all("bold" not in image["prompt"] for image in dropped["images"]), "neither the word nor its trigger"
    boxed = agent.run_turn("refine", "make it boxed too", seed=4)
    assert "Framed Digits" in picked(boxed) and "boxed" in boxed["plan"]["prompt"]
    assert all("framebox" in image["prompt"] for image in boxed["images"])


MISSING_SLANT = JudgeVerdict("style not visible: slanted", missing_triggers=("italicised",))


def judge_fails(agent: Agent, verdict: JudgeVerdict, calls_failing: range | set[int]) -> list[str]:
    """Give the agent a judge that returns `verdict` on the images it is called for at the numbers (from 1) in
    `calls_failing` and passes the others; returns the prompts it was called with."""
    calls: list[str] = []

    def judge(image, prompt: str):
        calls.append(prompt)
        return verdict if len(calls) in calls_failing else None

    agent.context.judge = judge
    return calls


def test_a_missing_style_is_strengthened_not_dropped(agent: Agent) -> None:
    judge_fails(agent, MISSING_SLANT, range(1, 5))
    state = agent.run_turn("repair", "a bold, slanted seven", seed=5)
    assert state["dropped"] == [] and len(state["attempts"]) == 2, "the bold adapter is never blamed"
    italic = next(p["adapter_id"] for ps in state["picks"].values() for p in ps if p["name"] == "Italic Digits")
    assert state["repair"]["boost"] == {str(italic): pytest.approx(1.5625)}
    assert state["repair"]["adapter_guidance"] == 1.2 and state["repair"]["method"] is None, "merge kept: composite hides styles"
    first, final = state["attempts"][0]["mixes"][0], state["images"][0]["mix"]
    slanted = next(ref for ref in final if "slanted" in ref)
    bold = next(ref for ref in final if "bold" in ref)
    assert final[slanted] == pytest.approx(first[slanted] * 1.5625) and final[bold] == first[bold]
    # named as everywhere else in the answer, in plain words (not "strengthened adapters [3]")
    line = "Repair: strengthened Italic Digits, which the judge did not see in every image: weight x1.25 and adapter " \
           "guidance 1.2."
    assert state["answer"].count(line) == 2, "one line per repair"
    assert not re.search(r"\[\d", state["answer"]), state["answer"]
    assert "method composite" not in state["answer"]
    with Image.open(agent.settings.images_dir / state["images"][0]["path"]) as im:
        assert "Composition: merge" in im.info["parameters"]


def test_a_retry_keeps_the_images_that_passed_and_redraws_the_others_with_new_seeds(agent: Agent) -> None:
    """Image 2 of 2 shows a style nobody asked for: only it is drawn again (a new seed: the old one would mostly
    redraw the same thing); image 1, which passed, is delivered as it was."""
    calls = judge_fails(agent, JudgeVerdict("style nobody asked for: boxed", unrequested=("boxed",)), {2})
    state = agent.run_turn("keep", "a seven", seed=6)
    [first] = state["attempts"]
    assert [f["check"] for f in first["findings"]] == ["unrequested_style"]
    assert [image["path"] for image in state["images"]][0] == first["images"][0], "the image that passed is kept"
    assert state["images"][1]["path"] not in first["images"] and state["images"][1]["attempt"] == 1
    assert state["images"][0]["seed"] == 6 and state["images"][1]["seed"] not in (6, 7)
    assert len(calls) == 4 and "Still flagged" not in state["answer"]


def test_a_repair_is_not_undone_by_the_total_weight_bound(agent: Agent) -> None:
    """Three styles at 0.8 fill the 2.4 bound; strengthening the missing one goes over it. The retry samples the
    strengthened mix (noted in the answer) instead of weakening every adapter and spending an attempt unsampled."""
    judge_fails(agent, MISSING_SLANT, range(1, 3))
    state = agent.run_turn("bound", "a bold, slanted, boxed seven", seed=8)
    assert [len(a["images"]) for a in state["attempts"]] == [2], "one retry, and it sampled"
    final = state["images"][0]["mix"]
    assert sorted(round(w, 3) for w in final.values()) == [0.8, 0.8, 1.0], "the missing style's adapter at 0.8 x 1.25"
    assert "kept, to bring out a missing style" in state["answer"]


def test_the_answer_tells_kept_and_redrawn_images_apart(agent: Agent) -> None:
    """Image 1 of 2 misses the slanted style: only it is redrawn, in its place, strengthened and with adapter
    guidance. Image 2, kept from the first attempt, was made without either, and the answer says so per image,
    trigger words included, numbering the images as the retry line does."""
    judge_fails(agent, MISSING_SLANT, {1})
    state = agent.run_turn("kept", "a bold, slanted seven", seed=6)
    assert [image["attempt"] for image in state["images"]] == [1, 0], "the redrawn image takes the failed one's place"
    assert "Retried 1 time(s): image 1: style not visible: slanted" in state["answer"]
    redrawn = next(line for line in state["answer"].splitlines() if line.startswith("Image 1:"))
    kept = next(line for line in state["answer"].splitlines() if line.startswith("Image 2:"))
    assert "adapter guidance" not in kept and "at 0.8" in kept and "trigger words: boldface, italicised" in kept, kept
    assert "adapter guidance 1.2" in redrawn and "trigger words: boldface, italicised" in redrawn, redrawn


def test_a_wrong_digit_is_drawn_again_not_paid_for_with_the_styles(agent: Agent) -> None:
    """Both images of "a bold, slanted seven" drew the wrong digit, twice: the first retry draws them again with
    fresh seeds and both requested styles at their weights (weakening them often hid them); only the second
    failure with the same adapters is evidence against them, and the answer says which one weighs less."""
    from loracle.agent.checks import DOWNWEIGHT

    judge_fails(agent, JudgeVerdict("drew a one, asked for a seven", wrong_subject=True), {1, 2, 3, 4})
    state = agent.run_turn("digit", "a bold, slanted seven", seed=9)
    first, second = state["attempts"]
    assert [f["check"] for f in first["findings"]] == ["wrong_subject"] and state["dropped"] == []
    assert [sorted(m.values()) for m in second["mixes"]] == [sorted(m.values()) for m in first["mixes"]], "weights kept"
    assert all(seed not in (9, 10) for seed in (image["seed"] for image in state["images"]))
    assert "Repair: drew the images with a wrong or unclear digit again with a fresh seed, the adapters' weights kept." in state["answer"]
    assert state["downweighted"] and all(v == pytest.approx(DOWNWEIGHT) for v in state["downweighted"].values()), \
        "the second failure is evidence"
    assert "the digit was wrong or unclear with it again on a fresh seed" in state["answer"]
