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
