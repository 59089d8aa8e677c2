"""What a retry keeps (the images no actionable finding names) and how it reweighs the adapters."""

from __future__ import annotations

from loracle.agent.checks import fill_slots, kept_slots
from loracle.agent.state import GeneratedImage
from loracle.tools.inspection import Finding


def images(n: int) -> list[GeneratedImage]:
    return [GeneratedImage(attempt=0, path=f"{i}.png", sha256="0", seed=i, mix={}, nfe=1, parameters="", id=str(i),
                           adapters=[], prompt="a seven") for i in range(n)]


def test_a_retry_keeps_what_no_finding_names_in_its_place() -> None:
    batch = images(4)
    named = [Finding(check="missing_style", message="", blamed=[3], action="strengthen", images=[1]),
             Finding(check="unrequested_style", message="", action="resample", images=[3]),
             Finding(check="kept_region", message="", action="none", images=[0])]
    slots = kept_slots(batch, named)
    assert [i.path if i else None for i in slots] == ["0.png", None, "2.png", None], "a finding acted on is redrawn"
    about_the_batch = [Finding(check="total_weight", message="", blamed=[3], action="downweight")]
    assert kept_slots(batch, about_the_batch) == [], "a finding about the whole batch keeps nothing"
    assert kept_slots(batch, []) == batch
    redrawn = [image.model_copy(update={"attempt": 1, "path": f"new{i}.png"}) for i, image in enumerate(images(2))]
    filled = fill_slots(slots, redrawn)
    assert [i.path for i in filled] == ["0.png", "new0.png", "2.png", "new1.png"], "image 2 is image 2 in every attempt"
    assert fill_slots([], redrawn) == redrawn


def test_a_style_not_yet_seen_is_strengthened_never_also_weakened() -> None:
    """Images with a missing style and a wrong digit: the missing style's adapter (2) gets stronger, with adapter
    guidance from this first repair on; only the other blamed adapter (1) weighs less (weakening both had the
    style vanish on the retry)."""
    from loracle.agent.checks import ADAPTER_GUIDANCE, BOOST, DOWNWEIGHT, apply_findings
    from loracle.agent.state import Repair

    findings = [Finding(check="missing_style", message="", blamed=[2], action="strengthen", images=[0]),
                Finding(check="prompt_fit", message="", blamed=[1, 2], action="downweight", images=[0, 1])]
    dropped, downweighted, repair = apply_findings(findings, [], {}, Repair())
    assert dropped == [] and downweighted == {"1": DOWNWEIGHT} and repair.boost == {"2": BOOST}
    assert repair.adapter_guidance == ADAPTER_GUIDANCE


def test_a_wrong_digit_is_drawn_again_never_paid_for_with_a_requested_style() -> None:
    """Every image of a bold (1) + slanted (2) mix drew the wrong digit: the old rule weakened both requested
    styles (x0.6, which then often hid them, and a missing-style boost fought it back). Now the images are drawn
    again with fresh seeds and the weights kept; the adapters are only suspects."""
    import numpy as np
    from PIL import Image

    from loracle.agent.checks import apply_findings
    from loracle.agent.state import Repair
    from loracle.tools.inspection import JudgeVerdict, inspect_images

    pixels = [Image.fromarray(np.tile(np.linspace(0, 255, 32), (32, 1)).astype(np.uint8)) for _ in range(2)]
    pixels[1] = pixels[1].transpose(Image.Transpose.TRANSPOSE)
    findings = inspect_images(pixels, [[1, 2], [1, 2]], ["a bold, slanted seven"] * 2,
                              judge=lambda im, p: JudgeVerdict("drew a one, asked for a seven", wrong_subject=True))
    assert [(f.check, f.action, f.images) for f in findings] == [("wrong_subject", "suspect", [0, 1])]
    assert kept_slots(images(2), findings) == [None, None], "both images are drawn again"
    dropped, downweighted, repair = apply_findings(findings, [], {}, Repair(), {1: "Boldface Digits", 2: "Italic Digits"})
    assert dropped == [] and downweighted == {} and repair.boost == {}, "the user's styles keep their weights"
    assert repair.adapter_guidance == 1.0 and repair.subject_suspects == [1, 2]
    assert repair.steps == ["drew the images with a wrong or unclear digit again with a fresh seed, the adapters' weights kept"]


def test_an_adapter_weighs_less_only_when_the_digit_fails_with_it_again() -> None:
    """After the first redraw the digit is wrong again in images with adapters 1 and 3: adapter 1 is weakened
    (evidence against it), adapter 2 (a suspect once) is not, nor is 3, whose style is being strengthened in the
    same retry."""
    from loracle.agent.checks import DOWNWEIGHT, apply_findings
    from loracle.agent.state import Repair

    first = [Finding(check="wrong_subject", message="", blamed=[1, 2, 3], action="suspect", images=[0, 1])]
    _, downweighted, repair = apply_findings(first, [], {}, Repair())
    assert downweighted == {} and repair.subject_suspects == [1, 2, 3]
    again = [Finding(check="wrong_subject", message="", blamed=[1, 3], action="suspect", images=[0]),
             Finding(check="missing_style", message="", blamed=[3], action="strengthen", images=[0])]
    _, downweighted, repair = apply_findings(again, [], downweighted, repair, {1: "Boldface Digits"})
    assert downweighted == {"1": DOWNWEIGHT}
    assert repair.steps[-1] == f"weakened Boldface Digits (weight x{DOWNWEIGHT:g}): the digit was wrong or unclear with it again on a fresh seed"
