"""The retry factors (agent/checks.py): after one and two repairs, exactly which adapter's weight is multiplied
by what, and when adapter guidance joins. The ladder's constants are imported, not restated (they are tuned
elsewhere); what is pinned is the rule: factors multiply per repair, the boost is capped, each factor reaches
only the adapter its finding blames, and the weights the composer hands the sampler carry them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from loracle.agent.checks import ADAPTER_GUIDANCE, BOOST, DOWNWEIGHT, MAX_BOOST, apply_findings
from loracle.agent.plan import Pick
from loracle.agent.sampler_settings import sample_settings
from loracle.agent.settings import Settings
from loracle.agent.state import Repair
from loracle.generation.masks import ComposerSettings
from loracle.tools.compose import compose_mixes
from loracle.tools.inspection import Finding

MISSING, LOUD, BROKEN, BYSTANDER = 1, 2, 3, 4
FINDINGS = [
    Finding(check="judge", message="style not visible", blamed=[MISSING], action="strengthen"),
    Finding(check="total_weight", message="too strong", blamed=[LOUD], action="downweight"),
    Finding(check="broken", message="black image", blamed=[BROKEN], action="drop"),
    Finding(check="note", message="nothing to do", blamed=[BYSTANDER], action="none"),
]


def _repairs(n: int) -> tuple[list[int], dict[str, float], Repair]:
    dropped, downweighted, repair = [], {}, Repair()
    for _ in range(n):
        dropped, downweighted, repair = apply_findings(FINDINGS, dropped, downweighted, repair)
    return dropped, downweighted, repair


def test_constants_leave_room_for_two_distinct_boosts() -> None:
    """The two-repair assertions below mean something only if the cap does not bind at once."""
    assert 1 < BOOST < MAX_BOOST and DOWNWEIGHT < 1 < ADAPTER_GUIDANCE


def test_one_repair_multiplies_each_blamed_adapter_once() -> None:
    dropped, downweighted, repair = _repairs(1)
    assert dropped == [BROKEN]
    assert downweighted == {str(LOUD): pytest.approx(DOWNWEIGHT)}
    assert repair.boost == {str(MISSING): pytest.approx(BOOST)}
    assert repair.adapter_guidance == ADAPTER_GUIDANCE, "adapter guidance joins at the first repair"
    assert repair.steps == [f"strengthened adapter {MISSING}, which the judge did not see in every image: "
                            f"weight x{BOOST:g} and adapter guidance {ADAPTER_GUIDANCE:g}"]


def test_two_repairs_multiply_the_factors_and_add_adapter_guidance() -> None:
    dropped, downweighted, repair = _repairs(2)
    assert dropped == [BROKEN], "an adapter is dropped once"
    assert downweighted == {str(LOUD): pytest.approx(DOWNWEIGHT * DOWNWEIGHT)}
    assert repair.boost == {str(MISSING): pytest.approx(min(BOOST * BOOST, MAX_BOOST))}
    assert repair.adapter_guidance == ADAPTER_GUIDANCE
    assert len(repair.steps) == 2 and all(f"adapter guidance {ADAPTER_GUIDANCE:g}" in step for step in repair.steps)


def test_the_boost_stops_at_its_cap() -> None:
    repair = _repairs(6)[2]
    assert repair.boost[str(MISSING)] == pytest.approx(MAX_BOOST)


def test_inputs_are_not_changed() -> None:
    dropped, downweighted, repair = [9], {"9": 0.5}, Repair(boost={"8": 1.1})
    apply_findings(FINDINGS, dropped, downweighted, repair)
    assert (dropped, downweighted, repair) == ([9], {"9": 0.5}, Repair(boost={"8": 1.1}))


def test_two_findings_on_one_adapter_in_one_repair_multiply_downweights_and_boost_once() -> None:
    twice = [FINDINGS[0], FINDINGS[0], FINDINGS[1], FINDINGS[1]]
    _, downweighted, repair = apply_findings(twice, [], {}, Repair())
    assert downweighted == {str(LOUD): pytest.approx(DOWNWEIGHT ** 2)}
    assert repair.boost == {str(MISSING): pytest.approx(BOOST)}


def test_the_composer_weights_carry_the_product_of_the_factors() -> None:
    """As the compose node does: each pick's weight times its down-weight times its boost."""
    picks = {"fox": [Pick(adapter_id=MISSING, ref="c:1", name="Watercolor", file="a.safetensors", weight=0.8)],
             "sky": [Pick(adapter_id=LOUD, ref="c:2", name="Neon", file="b.safetensors", weight=1.0)]}
    for repairs in (1, 2):
        _, downweighted, repair = _repairs(repairs)
        scale = {p.ref: downweighted.get(str(p.adapter_id), 1.0) * repair.boost.get(str(p.adapter_id), 1.0)
                 for ps in picks.values() for p in ps}
        mix = compose_mixes(picks, 1, ComposerSettings(scale=0.5), seed=0, weight_scale=scale).mixes[0].as_dict()
        assert mix == {"a.safetensors": pytest.approx(0.8 * min(BOOST ** repairs, MAX_BOOST) * 0.5),
                       "b.safetensors": pytest.approx(1.0 * DOWNWEIGHT ** repairs * 0.5)}


def test_adapter_guidance_reaches_the_sampler_with_cfg_only() -> None:
    engine = SimpleNamespace(guide_names=())
    ctx = SimpleNamespace(settings=Settings(guidance="cfg", guidance_scale=5.0), guidance_scale=7.5)
    unrepaired = apply_findings([f for f in FINDINGS if f.action != "strengthen"], [], {}, Repair())[2]
    assert sample_settings(ctx, engine, unrepaired).guidance.kind == "cfg"
    guided = sample_settings(ctx, engine, _repairs(1)[2]).guidance
    assert guided.kind == "both" and guided.guide.kind == "no_adapters"
    assert guided.scale == pytest.approx(5.0 + ADAPTER_GUIDANCE - 1)
