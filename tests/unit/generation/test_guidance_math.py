"""Guidance against the formulas written out by hand (Karras et al. 2024, Appendix B.2), on integer-valued
predictions where every term is distinct, and the settings' bounds."""

from __future__ import annotations

import pytest
import torch

from loracle.generation.guidance import GuidanceSettings, GuideSpec, combine, combine_groups

M, U, G = torch.tensor([3.0, -1.0]), torch.tensor([1.0, 2.0]), torch.tensor([-2.0, 5.0])
PREDS = {"cond": M, "uncond": U, "guide": G}


@pytest.mark.parametrize("settings, expected", [
    (GuidanceSettings("none", 4.0), M),
    (GuidanceSettings("cfg", 4.0), U + 4.0 * (M - U)),                     # [9, -10]
    (GuidanceSettings("auto", 3.0), 3.0 * M + (1 - 3.0) * G),              # [13, -13]
    (GuidanceSettings("both", 5.0, a=0.25), M + 3.0 * (M - U) + 1.0 * (M - G)),  # w_u = 4, w_c = 2
])
def test_each_kind_is_its_formula(settings, expected):
    assert torch.allclose(combine(settings, PREDS), expected)


def test_cfg_and_guide_weights():
    spec = GuideSpec("no_adapters")
    settings = GuidanceSettings.cfg_and_guide(3.0, 2.0, spec)
    assert (settings.kind, settings.scale, settings.a, settings.guide) == ("both", 4.0, 1 / 3, spec)
    assert torch.allclose(combine(settings, PREDS), M + 2.0 * (M - U) + 1.0 * (M - G))
    only_guide = GuidanceSettings.cfg_and_guide(1.0, 1.5, spec)  # w = 1.5: all of it autoguidance
    assert (only_guide.scale, only_guide.a) == (1.5, 1.0)
    assert torch.allclose(combine(only_guide, PREDS), 1.5 * M - 0.5 * G)
    off = GuidanceSettings.cfg_and_guide(1.0, 1.0, spec)
    assert (off.scale, off.a) == (1.0, 0.0) and torch.equal(combine(off, PREDS), M)
    with pytest.raises(ValueError, match="must be >= 1"):
        GuidanceSettings.cfg_and_guide(0.5, 2.0, spec)
    with pytest.raises(ValueError, match="must be >= 1"):
        GuidanceSettings.cfg_and_guide(2.0, 0.9, spec)


def test_branches_per_kind():
    assert {k: GuidanceSettings(k).branches for k in ("none", "cfg", "auto", "both")} == {
        "none": ("cond",), "cfg": ("uncond", "cond"), "auto": ("cond", "guide"), "both": ("uncond", "cond", "guide")}


def test_groups_average_their_guided_predictions_and_share_the_guide():
    settings = GuidanceSettings("both", 5.0, a=0.25)
    second = {"cond": torch.tensor([0.0, 1.0]), "uncond": torch.tensor([4.0, 4.0])}
    preds = {("cond", 0): M, ("uncond", 0): U, ("cond", 1): second["cond"], ("uncond", 1): second["uncond"],
             ("guide", None): G}
    one = combine(settings, PREDS)
    two = combine(settings, {**second, "guide": G})
    assert torch.allclose(combine_groups(settings, preds, [0, 1]), (one + two) / 2)
    assert torch.equal(combine_groups(settings, preds, [1]), two)


def test_bounds_of_the_settings():
    for ok in (dict(scale=0.0), dict(scale=50.0), dict(a=0.0), dict(a=1.0)):
        GuidanceSettings("both", **ok)
    for bad, field in ((dict(scale=-0.1), "scale"), (dict(scale=50.5), "scale"), (dict(a=-0.1), "a"),
                       (dict(a=1.5), "a")):
        with pytest.raises(ValueError, match=f"guidance {field} must be"):
            GuidanceSettings("both", **bad)


def test_guide_spec_needs_what_its_kind_names():
    with pytest.raises(ValueError, match="no_adapters|model|mix"):
        GuideSpec("other")
    with pytest.raises(ValueError, match="name of a registered guide model"):
        GuideSpec("model")
    with pytest.raises(ValueError, match="non-empty adapter mix"):
        GuideSpec("mix")
    GuideSpec("model", model="small")
    GuideSpec("mix", mix={"a": 0.5})
    assert hash(GuideSpec("mix", mix={"a": 0.5, "b": 1.0})) == hash(GuideSpec("mix", mix={"b": 1.0, "a": 0.5}))
    assert hash(GuideSpec("mix", mix={"a": 0.5})) != hash(GuideSpec("mix", mix={"a": 0.6}))
    assert GuidanceSettings().kind == "cfg" and GuidanceSettings().scale == 7.5 and GuidanceSettings().a == 0.5


def test_settings_are_immutable_values():
    """Requests carry these and caches key on them: hashable, equal by value, never changed in place."""
    import dataclasses

    assert hash(GuidanceSettings("cfg", 3.0)) == hash(GuidanceSettings("cfg", 3.0))
    assert hash(GuideSpec("model", model="x")) == hash(GuideSpec("model", model="x"))
    for value, field in ((GuidanceSettings(), "scale"), (GuideSpec(), "kind")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, None)
