"""Composition methods on the tiny model: which adapters each UNet call ran with, NFE, averaging, adapter
guidance, skipping, image edits, PNG parameters, and the combinations that are refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from loracle.generation.composition import CompositionMethod
from loracle.generation.engine import Engine, GenerationRequest
from loracle.generation.guidance import GuidanceSettings, GuideSpec
from loracle.generation.masks import Candidate, ComposerSettings, Composition, Mix, Task, compose
from loracle.generation.skipping import SkipSettings

OFF = SkipSettings(threshold=0.0)
TWO_GROUPS = Mix.from_dict({"style0": 0.8, "style1": 0.8}, groups={"bold": {"style0": 0.8}, "slant": {"style1": 0.8}})


@pytest.fixture(scope="module")
def engine(tiny, lora_dir):
    return Engine(tiny, [lora_dir], max_loaded=4)


def arr(img) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def gen(engine, mix: Mix | dict = TWO_GROUPS, method: str = "merge", every: int = 2, **kw):
    kw.setdefault("steps", 8)
    kw.setdefault("skipping", OFF)
    kw.setdefault("scheduler", "ddim")
    mixes = Composition([mix]) if isinstance(mix, Mix) else [mix]
    return engine.generate(GenerationRequest(kw.pop("prompt", "a red fox"), mixes=mixes,
                                             composition_method=CompositionMethod(method, every), **kw))


class ActiveAdapters:
    """Records, per UNet call, the adapter files active on the model (hooked at the UNet's forward)."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def __enter__(self):
        names = {}

        def hook(module, args):
            mgr = self.engine.adapters
            if not names:
                names.update({mgr.peft_name(mgr.resolve(r)): r for r in ("style0", "style1", "style2", "style3")})
            self.calls.append((frozenset(names[n] for n in mgr.active) if mgr._enabled else frozenset(), len(args[0])))

        self.handle = self.engine.base.unet.register_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_switch_runs_one_group_per_step_and_composite_every_group(engine):
    with ActiveAdapters(engine) as merge:
        m = gen(engine, method="merge")
    assert [a for a, _ in merge.calls] == [{"style0", "style1"}] * 8 and m.nfe == [16]
    with ActiveAdapters(engine) as switch:
        s = gen(engine, method="switch", every=2)
    a, b = frozenset({"style0"}), frozenset({"style1"})
    assert [x for x, _ in switch.calls] == [a, a, b, b, a, a, b, b]  # cycling every 2 steps
    assert s.nfe == [16] and s.model_calls == 8
    with ActiveAdapters(engine) as composite:
        c = gen(engine, method="composite")
    assert [x for x, _ in composite.calls] == [a, b] * 8
    assert c.nfe == [32] and c.model_calls == 16  # one CFG pair per group per step, counted
    assert np.abs(arr(m.images[0]) - arr(s.images[0])).max() > 5
    assert np.abs(arr(m.images[0]) - arr(c.images[0])).max() > 5


def test_one_group_is_the_same_image_under_every_method(engine):
    one = Mix.from_dict({"style0": 0.8}, groups={"bold": {"style0": 0.8}})
    images = {k: gen(engine, one, method=k) for k in ("merge", "switch", "composite")}
    assert images["merge"].nfe == images["switch"].nfe == images["composite"].nfe == [16]
    for k in ("switch", "composite"):
        assert np.array_equal(arr(images["merge"].images[0]), arr(images[k].images[0])), k


def test_composite_averages_the_groups_predictions(engine):
    """One adapter in two tasks at weight w: merge sums it to 2w, composite averages two runs at w."""
    twice = Mix.from_dict({"style0": 1.2}, groups={"a": {"style0": 0.6}, "b": {"style0": 0.6}})
    composite = gen(engine, twice, method="composite")
    at_w = gen(engine, {"style0": 0.6})
    merged = gen(engine, twice, method="merge")
    assert np.abs(arr(composite.images[0]) - arr(at_w.images[0])).max() <= 1
    assert np.abs(arr(merged.images[0]) - arr(at_w.images[0])).max() > 5
    assert composite.nfe == [32]


@pytest.mark.parametrize("method", ["merge", "switch", "composite"])
def test_adapter_guidance_shares_one_guide_across_groups(engine, method):
    """The `no_adapters` guide (base without adapters) is one branch for every group; at w = 1 it changes nothing."""
    alone = GuidanceSettings("auto", 2.0, guide=GuideSpec("no_adapters"))
    with ActiveAdapters(engine) as rec:
        r = gen(engine, method=method, guidance=alone)
    per_step = {"merge": 2, "switch": 2, "composite": 3}[method]  # cond per active group + the shared guide
    assert r.nfe == [8 * per_step]
    assert sum(1 for a, _ in rec.calls if not a) == 8  # the guide ran once per step, adapters off
    plain = gen(engine, method=method, guidance=GuidanceSettings("none"))
    w1 = gen(engine, method=method, guidance=GuidanceSettings("auto", 1.0, guide=GuideSpec("no_adapters")))
    assert np.abs(arr(plain.images[0]) - arr(w1.images[0])).max() <= 1
    assert np.abs(arr(plain.images[0]) - arr(r.images[0])).max() > 5
    with_cfg = gen(engine, method=method, guidance=GuidanceSettings("both", 3.0, a=0.5, guide=GuideSpec("no_adapters")))
    assert with_cfg.nfe == [8 * (per_step + (2 if method == "composite" else 1))]


def test_switch_with_skipping_calls_the_model_when_a_group_takes_over(engine):
    computed = []
    r = gen(engine, method="switch", every=4, steps=24, skipping=SkipSettings(threshold=10.0, max_skip=3),
            callback=lambda p: computed.append(p.computed))
    evaluated = [i for i, c in enumerate(computed) if c]
    assert all(i in evaluated for i in range(0, 24, 4))  # every turn starts with its own group's prediction
    assert r.nfe[0] < 48
    composite = gen(engine, method="composite", steps=24, skipping=SkipSettings(threshold=10.0, max_skip=3))
    assert composite.nfe[0] < 96 and composite.nfe[0] % 4 == 0


@pytest.mark.parametrize("method", ["switch", "composite"])
def test_methods_with_img2img_and_inpainting(engine, method):
    image = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    mask = Image.fromarray(np.r_[np.zeros((16, 32)), np.full((16, 32), 255)].astype(np.uint8), mode="L")
    edit = gen(engine, method=method, steps=10, image=image, strength=0.6)
    assert edit.nfe == [6 * (2 if method == "switch" else 4)]  # 6 of 10 steps, per group for composite
    inpaint = gen(engine, method=method, steps=10, image=image, mask=mask, strength=1.0)
    assert np.abs(arr(inpaint.images[0]) - arr(gen(engine, method=method, steps=10).images[0])).max() > 5


def test_composer_groups_reach_the_engine_and_the_png(engine, tmp_path):
    from loracle.generation.output import read_parameters

    tasks = [Task("bold", (Candidate("style0"),)), Task("slant", (Candidate("style1"),))]
    comp = compose(tasks, 2, ComposerSettings())
    assert comp.mixes[0].adapter_groups() == [{"style0": 0.64}, {"style1": 0.64}]
    with ActiveAdapters(engine) as rec:
        r = engine.generate(GenerationRequest("a fox", mixes=comp, steps=4, skipping=OFF, scheduler="ddim",
                                              composition_method=CompositionMethod("switch", 2)))
    assert {a for a, _ in rec.calls} == {frozenset({"style0"}), frozenset({"style1"})}
    text = read_parameters(r.save(tmp_path)[0])
    assert "Composition: switch" in text and "Switch every: 2" in text
    assert "Composition: merge" in read_parameters(gen(engine).save(tmp_path / "m")[0])


def test_a_tag_is_a_group_of_its_own(engine):
    with ActiveAdapters(engine) as rec:
        gen(engine, {"style0": 0.8}, method="composite", prompt="a fox <lora:style2:0.5>")
    assert {a for a, _ in rec.calls} == {frozenset({"style0"}), frozenset({"style2"})}


def test_refused_combinations():
    with pytest.raises(ValueError, match="composition method"):
        CompositionMethod("blend")
    with pytest.raises(ValueError, match="switch_every"):
        CompositionMethod("switch", 0)
    with pytest.raises(ValueError, match="composition_method"):
        GenerationRequest("x", composition_method="switch")


def test_switch_that_leaves_a_group_out_is_refused(engine):
    with pytest.raises(ValueError, match="every group gets a turn"):
        gen(engine, method="switch", every=8, steps=8)
    with pytest.raises(ValueError, match="every group gets a turn"):  # img2img runs fewer steps
        gen(engine, method="switch", every=4, steps=8, image=Image.new("RGB", (32, 32)), strength=0.5)
    assert gen(engine, method="switch", every=7, steps=8).nfe == [16]


def test_settings_reach_the_sampler_tool_and_the_png(engine, tmp_path):
    from pydantic import ValidationError

    from loracle.agent.sampler_settings import sample_settings
    from loracle.agent.settings import Settings
    from loracle.tools.image_store import FileImageStore
    from loracle.tools.sample import sample

    settings = Settings(composition_method="switch", switch_every=3, steps=6, skip_threshold=0.0)
    tool = sample_settings(SimpleNamespace(settings=settings, guidance_scale=1.5), engine)
    assert tool.composition_method == CompositionMethod("switch", 3)
    _, stored = sample(engine, "a fox", Composition([TWO_GROUPS]), [1], tool, FileImageStore(tmp_path))
    assert "Composition: switch, Switch every: 3" in stored[0].parameters
    with pytest.raises(ValidationError, match="composition_method"):
        Settings(composition_method="blend")
