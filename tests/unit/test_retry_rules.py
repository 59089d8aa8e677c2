"""What a retry keeps: the images no actionable finding names."""

from __future__ import annotations

from loracle.agent.checks import passed_images
from loracle.agent.state import GeneratedImage
from loracle.tools.inspection import Finding


def images(n: int) -> list[GeneratedImage]:
    return [GeneratedImage(attempt=0, path=f"{i}.png", sha256="0", seed=i, mix={}, nfe=1, parameters="", id=str(i),
                           adapters=[], prompt="a seven") for i in range(n)]


def test_a_retry_keeps_what_no_finding_names() -> None:
    batch = images(4)
    named = [Finding(check="missing_style", message="", blamed=[3], action="strengthen", images=[1]),
             Finding(check="unrequested_style", message="", action="resample", images=[3]),
             Finding(check="kept_region", message="", action="none", images=[0])]
    assert [i.path for i in passed_images(batch, named)] == ["0.png", "2.png"], "a finding acted on is redrawn"
    about_the_batch = [Finding(check="total_weight", message="", blamed=[3], action="downweight")]
    assert passed_images(batch, about_the_batch) == [], "a finding about the whole batch keeps nothing"
    assert passed_images(batch, []) == batch
