"""Inspection checks on mixes and images, and whom they blame."""

from __future__ import annotations

import numpy as np
from PIL import Image

from loracle.tools.inspection import (
    JudgeVerdict,
    MixAdapter,
    blame_images,
    check_mix,
    image_problem,
    inspect_images,
    near_duplicates,
)


def adapter(i: int, weight: float = 0.8, base: str = "SD 1.5", tags: tuple[str, ...] = ()) -> MixAdapter:
    return MixAdapter(i, f"adapter {i}", weight, base, tags)


def test_mix_checks_name_the_adapter_to_blame() -> None:
    findings = check_mix([adapter(1, base="SDXL 1.0"), adapter(2)], "sd15")
    assert [(f.check, f.blamed) for f in findings] == [("base_model", [1])]
    exclusive = check_mix([adapter(1, 0.9, tags=("character",)), adapter(2, 0.6, tags=("Character",))], "sd15")
    assert [(f.check, f.blamed) for f in exclusive] == [("exclusive", [2])]
    assert check_mix([adapter(1, 0.9, tags=("character",)), adapter(2, 0.3, tags=("character",))], "sd15") == []
    assert check_mix([adapter(i, 0.8) for i in range(3)], "sd15") == [], "2.4 in all is within the bound, rounding aside"
    heavy = check_mix([adapter(i, 1.0) for i in range(3)], "sd15")
    assert heavy[0].check == "total_weight" and heavy[0].action == "downweight"
    known = check_mix([adapter(1, 0.9), adapter(2, 0.5)], "sd15", conflicts=[(1, 2, "muddy")])
    assert [(f.check, f.blamed) for f in known] == [("known_conflict", [2])]


def image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array.astype(np.uint8))


def test_image_problems() -> None:
    rng = np.random.default_rng(0)
    assert image_problem(image(np.zeros((32, 32)))) == "black"
    assert image_problem(image(np.full((32, 32), 200))).startswith("blank")
    assert image_problem(image(rng.integers(0, 256, (32, 32)))) == "noise-like (no structure)"
    assert image_problem(image((rng.random((32, 32)) > 0.5) * 255)) is not None
    gradient = np.tile(np.linspace(0, 255, 32), (32, 1))
    assert image_problem(image(gradient)) is None


def test_blame_by_contrast_and_when_everything_fails() -> None:
    assert blame_images([True, False, True, False], [[1, 2], [2], [1], [3]]) == [1]
    assert blame_images([True, True], [[1, 2], [2, 3]]) == [2]
    assert blame_images([True, True], [[1], [2]]) == [1, 2]
    assert blame_images([False, False], [[1], [2]]) == []


def test_a_minority_of_failures_with_one_shared_mix_blames_nobody() -> None:
    """One unlucky seed of four with the same mix is no evidence against the mix's adapters."""
    assert blame_images([True, False, False, False], [[1, 2]] * 4) == []
    assert blame_images([True, True, True, False], [[1, 2]] * 4) == [1, 2]


def test_inspect_images_uses_the_judge_and_finds_duplicates() -> None:
    good = image(np.tile(np.linspace(0, 255, 32), (32, 1)))
    other = image(np.tile(np.linspace(0, 255, 32), (32, 1)).T)
    findings = inspect_images([good, other], [[1], [2]], ["a seven", "a seven"], judge=lambda im, p: "wrong digit" if im is other else None)
    assert [(f.check, f.blamed, f.action) for f in findings] == [("prompt_fit", [2], "downweight")]
    assert near_duplicates([good, good.copy(), other]) == [(0, 1)]
    same_mix = inspect_images([good, good.copy()], [[1], [1]], ["x", "x"])
    assert [(f.check, f.blamed) for f in same_mix] == [("duplicates", [1])]


def test_a_missing_style_strengthens_its_own_adapter_never_the_others() -> None:
    """Both images mix bold (1) and slanted (2); the judge did not see "slanted": its adapter is strengthened,
    and the bold adapter, whose style was seen, is not blamed (the old contrast blamed whatever was shared)."""
    good = image(np.tile(np.linspace(0, 255, 32), (32, 1)))
    other = image(np.tile(np.linspace(0, 255, 32), (32, 1)).T)

    def judge(im: Image.Image, prompt: str) -> JudgeVerdict | None:
        return JudgeVerdict("style not visible: slanted", missing_triggers=("italicised",)) if im is other else None

    findings = inspect_images([good, other], [[1, 2], [1, 2]], ["a seven, boldface, italicised"] * 2, judge=judge,
                              triggers={1: ["boldface"], 2: ["italicised"]})
    assert [(f.check, f.blamed, f.action) for f in findings] == [("missing_style", [2], "strengthen")]
    broken = inspect_images([good, image(np.zeros((32, 32)))], [[1], [1, 2]], ["x", "x"], judge=judge)
    assert [(f.check, f.blamed, f.action) for f in broken] == [("images", [2], "drop")], "only a broken image drops"


def test_each_finding_names_its_images_and_an_unasked_style_redraws_the_image() -> None:
    """A style nobody asked for, or a wrong digit on one seed of a shared mix, blames no adapter: the image is drawn
    again; every finding says which images it is about, so a retry can keep the others."""
    good = image(np.tile(np.linspace(0, 255, 32), (32, 1)))
    framed = image(np.tile(np.linspace(0, 255, 32), (32, 1)).T)
    wrong = image(np.tile(np.linspace(255, 0, 32), (32, 1)))

    def judge(im: Image.Image, prompt: str) -> JudgeVerdict | None:
        if im is framed:
            return JudgeVerdict("style nobody asked for: boxed", unrequested=("boxed",))
        return JudgeVerdict("drew a one", wrong_subject=True) if im is wrong else None

    findings = inspect_images([good, framed, wrong, good.copy()], [[1], [1], [1], [2]], ["a seven, boldface"] * 4,
                              judge=judge)
    assert [(f.check, f.blamed, f.action, f.images) for f in findings] == [
        ("wrong_subject", [], "suspect", [2]), ("unrequested_style", [], "resample", [1])]


def test_messages_number_images_from_one_and_say_each_problem_once() -> None:
    """The answer lists "Images 1, 2" and a user refines "image 2": findings count the same way. A verdict with a
    missing and an unasked style shows the unasked one only in its own finding."""
    good = image(np.tile(np.linspace(0, 255, 32), (32, 1)))
    both = image(np.tile(np.linspace(0, 255, 32), (32, 1)).T)

    def judge(im: Image.Image, prompt: str) -> JudgeVerdict | None:
        if im is both:
            return JudgeVerdict("style not visible: slanted; style nobody asked for: mirrored",
                                missing_triggers=("italicised",), unrequested=("mirrored",))
        return None

    findings = inspect_images([good, both], [[1], [1]], ["a seven, italicised"] * 2, judge=judge, triggers={1: ["italicised"]})
    unasked = next(f for f in findings if f.check == "unrequested_style")
    assert unasked.message == "image 2: style nobody asked for: mirrored"
    assert all(f.message.startswith("image 2: ") for f in findings), [f.message for f in findings]
