"""Pure pieces: skip rule, guidance formulas, composer, LoRA tags, adapter safety and caches, models."""

from __future__ import annotations

import os

import pytest
import torch

from loracle.agent.planner import strip_prompt_syntax
from loracle.generation.adapters import AdapterIncompatibleError, AdapterManager, AdapterPathError, PickleRefusedError
from loracle.generation.base_models import build_tiny_model, load_base_model, pick_device, save_base_model
from loracle.generation.guidance import GuidanceSettings, GuideSpec, combine
from loracle.generation.masks import Candidate, ComposerSettings, Mix, Task, compose, group_mixes
from loracle.generation.prompt_tags import parse_lora_tags
from loracle.generation.skipping import SkipSettings, SkipState
from loracle.generation.synthetic import write_synthetic_lora


def run_skip(settings, n_steps, latents_fn, batch=1):
    st = SkipState(settings, batch, n_steps)
    st.start(latents_fn(-1))
    masks = []
    for i in range(n_steps):
        masks.append(st.compute_mask(i).tolist())
        st.observe(latents_fn(i))
    return masks


def test_skip_rule_warmup_max_skip_and_last_step():
    def linear(i):  # constant first difference: always "smooth"
        return torch.full((1, 4, 2, 2), float(i))

    masks = [m[0] for m in run_skip(SkipSettings(threshold=0.01, max_skip=3), 20, linear)]
    assert masks[:3] == [True] * 3
    assert masks[-1] is True
    run = 0
    for m in masks:
        run = 0 if m else run + 1
        assert run <= 3
    assert masks[3:7] == [False, False, False, True]  # forced call after 3 skips
    assert sum(masks) < 20


def test_skip_rule_per_sample_and_off():
    def lat(i):  # sample 0 smooth, sample 1 wildly curved
        return torch.stack([torch.full((4, 2, 2), float(i)), torch.full((4, 2, 2), float((i + 1) ** 3))])

    masks = run_skip(SkipSettings(threshold=0.01, max_skip=4), 12, lat, batch=2)
    assert sum(m[0] for m in masks) < 12 and all(m[1] for m in masks)
    off = run_skip(SkipSettings(threshold=0.0), 12, lat, batch=2)
    assert all(all(m) for m in off)
    with pytest.raises(ValueError, match="threshold"):
        SkipSettings(threshold=-1)


def test_skipped_steps_forecast_linearly_in_log_sigma():
    """Predictions linear in log sigma are forecast exactly on skipped steps; reuse keeps the last; per sample."""
    log_sigmas = [2.0, 1.5, 1.2, 0.7, 0.1]
    truth = [torch.stack([torch.full((1, 2, 2), 3 * k + 1.0), torch.full((1, 2, 2), -k)]) for k in log_sigmas]
    computed = [(True, True), (True, True), (False, True), (False, False), (True, False)]
    on, off = (SkipState(SkipSettings(threshold=0.01, forecast=f), 2, 5) for f in (True, False))
    stale = truth[0]
    for k, pred, c in zip(log_sigmas, truth, computed):
        mask = torch.tensor(c)
        given = torch.where(mask.view(-1, 1, 1, 1), pred, stale)  # skipped rows: the loop's stale cache
        stale = given
        got, reused = on.fill(given, mask, k), off.fill(given, mask, k)
        assert torch.allclose(got, pred, atol=1e-5), k  # computed rows as given, skipped rows forecast
        assert torch.equal(reused, given)
    on.forget()
    assert torch.equal(on.fill(truth[0], torch.tensor([False, False]), 3.0), truth[0])  # nothing known: reuse


def test_guidance_formulas():
    g = torch.Generator().manual_seed(0)
    p = {k: torch.randn(2, 4, generator=g) for k in ("cond", "uncond", "guide")}
    assert torch.equal(combine(GuidanceSettings("auto", 1.0), p), p["cond"])
    cfg = combine(GuidanceSettings("cfg", 4.0), p)
    assert torch.allclose(combine(GuidanceSettings("both", 4.0, a=0.0), p), cfg, atol=1e-6)
    auto = combine(GuidanceSettings("auto", 4.0), p)
    assert torch.allclose(combine(GuidanceSettings("both", 4.0, a=1.0), p), auto, atol=1e-6)
    same = {"cond": p["cond"], "guide": p["cond"]}
    assert torch.allclose(combine(GuidanceSettings("auto", 3.3), same), p["cond"], atol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        GuidanceSettings("pag")
    m, u, g = p["cond"], p["uncond"], p["guide"]
    both = GuidanceSettings.cfg_and_guide(1.5, 2.0, GuideSpec("no_adapters"))  # CFG 1.5 plus adapter guidance 2
    assert torch.allclose(combine(both, p), u + 1.5 * (m - u) + (2.0 - 1) * (m - g), atol=1e-6)
    assert torch.allclose(combine(GuidanceSettings.cfg_and_guide(4.0, 1.0, GuideSpec()), p), cfg, atol=1e-6)


def test_composer_weights_and_settings():
    tasks = [Task("subject", (Candidate("a", 1.0, ("trig_a",)), Candidate("b", 0.5))), Task("bg", (Candidate("c"),)),
             Task("unmatched", ())]
    comp = compose(tasks, 6, ComposerSettings(append_triggers=True), seed=3)
    assert comp.mixes == compose(tasks, 6, ComposerSettings(append_triggers=True), seed=3).mixes
    # masks vary which candidates serve a task, never whether it is served: subject {a}, {b} or {a, b}, bg {c}
    assert len(set(comp.mixes)) == 3 and all(comp.masks.count(m) == 2 for m in comp.masks)
    for mix, mask in zip(comp.mixes, comp.masks):
        assert any(mask["subject"]) and mask["bg"] == (True,) and mask["unmatched"] == ()
        w = mix.as_dict()
        n_on = sum(mask["subject"])
        if mask["subject"][0]:
            assert w["a"] == pytest.approx(1.0 * 0.8 / n_on)
            assert "trig_a" in mix.triggers
        assert w["c"] == pytest.approx(0.8 * 0.8)
        # the mix records its task groups (switch and composite act on them)
        assert [name for name, _ in mix.groups] == ["subject", "bg"]
        assert mix.adapter_groups()[1] == {"c": pytest.approx(0.64)}
        assert set(mix.adapter_groups()[0]) == {c.ref for c, on in zip(tasks[0].candidates, mask["subject"]) if on}
    stylus = compose(tasks, 6, ComposerSettings(allow_all_off=True), seed=3)  # Stylus: 8 masks, a task may go off
    assert len(set(stylus.mixes)) == 6
    assert any(not any(m["subject"]) or not any(m["bg"]) for m in compose(tasks, 8, ComposerSettings(allow_all_off=True)).masks)
    strict = compose(tasks, 20, ComposerSettings(max_active=1, distinct=False), seed=0)
    for mask in strict.masks:
        assert sum(mask["subject"]) == 1 and mask["bg"] == (True,)
    assert "trig" not in compose(tasks, 4, seed=1).mixes[0].apply_to_prompt("p")
    groups = group_mixes(strict.mixes)
    assert sum(len(v) for v in groups.values()) == 20 and len(groups) == 2
    assert compose([Task("none", ())], 3).mixes == [Mix()] * 3


def test_explicit_adapters_join_a_mix_as_their_own_groups():
    mix = Mix.from_dict({"a": 0.4, "b": 0.4}, groups={"style": {"a": 0.4, "b": 0.4}})
    tagged = mix.with_adapters({"b": 1.0, "t": 0.7})
    assert tagged.as_dict() == {"a": 0.4, "b": 1.0, "t": 0.7}
    assert tagged.adapter_groups() == [{"a": 0.4}, {"b": 1.0}, {"t": 0.7}]
    assert Mix.from_dict({"x": 1.0, "y": 0.5}).adapter_groups() == [{"x": 1.0}, {"y": 0.5}]
    assert mix != Mix.from_dict({"a": 0.4, "b": 0.4})  # the grouping is part of a mix's identity


def test_parse_lora_tags():
    text, picks = parse_lora_tags("a cat <lora:ink_style:0.6>, sunset <lora:Film Grain> <lora:x:0.3:0.7>")
    assert picks == {"ink_style": 0.6, "Film Grain": 1.0, "x": 0.7}
    assert text == "a cat, sunset"
    text, picks = parse_lora_tags("<LORA:a:unet=0.5> a fox <lyco:b:1> <lora:>")
    assert picks == {"a": 0.5} and text == "a fox <lyco:b:1> <lora:>", "no adapter serves other networks' tags"
    with pytest.raises(ValueError, match="Bad weight"):
        parse_lora_tags("a fox <lora:a:strong>")


def test_the_planner_strips_the_tags_the_engine_reads():
    prompt = "<lora:ink:0.6> a cat, <lyco:b:strong> sunset <hypernet:c> <LoRA:d:0.3:0.7>"
    assert strip_prompt_syntax(prompt) == "a cat, sunset"
    assert parse_lora_tags(prompt)[1] == {"ink": 0.6, "d": 0.7}


def test_adapter_paths_are_confined(tiny, lora_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    write_synthetic_lora(outside / "evil.safetensors", tiny, seed=1)
    inside = tmp_path / "inside"
    inside.mkdir()
    os.symlink(outside / "evil.safetensors", inside / "link.safetensors")
    mgr = AdapterManager(build_tiny_model(), [inside])
    for ref in ("../outside/evil", str(outside / "evil.safetensors"), "link"):
        with pytest.raises(AdapterPathError, match="outside the adapter folders"):
            mgr.get(ref)
    with pytest.raises(AdapterPathError, match="not found"):
        mgr.get("nope")


def test_pickle_refused_unless_allowed(tmp_path):
    model = build_tiny_model()
    path = write_synthetic_lora(tmp_path / "a.safetensors", model, seed=1)
    from safetensors.torch import load_file

    torch.save(load_file(path), tmp_path / "pickled.pt")
    with pytest.raises(PickleRefusedError, match="pickled.pt"):
        AdapterManager(model, [tmp_path]).get("pickled.pt")
    lora = AdapterManager(model, [tmp_path], allow_pickle=True).get("pickled.pt")
    assert len(lora.state_dict) == len(load_file(path))
    (tmp_path / "model.ckpt").write_bytes(b"not really")
    with pytest.raises(PickleRefusedError, match="allow_pickle"):
        load_base_model(tmp_path / "model.ckpt")


def test_sdxl_lora_on_sd15_refused(tiny, lora_dir):
    mgr = AdapterManager(build_tiny_model(), [lora_dir])
    with pytest.raises(AdapterIncompatibleError, match=r"'xl_style'.*SDXL.*SD 1\.5"):
        mgr.activate({"xl_style": 1.0})
    assert not getattr(mgr.base.unet, "peft_config", {})  # nothing was injected


def test_shape_mismatch_refused_without_metadata(tiny_xl, tmp_path):
    write_synthetic_lora(tmp_path / "wrong.safetensors", tiny_xl, seed=1, family="sd15")  # lies about family
    with pytest.raises(AdapterIncompatibleError, match=r"'wrong'.*LoRA maps 64->"):
        AdapterManager(build_tiny_model(), [tmp_path]).get("wrong")


def test_caches_bound_and_evict(lora_dir):
    model = build_tiny_model()
    mgr = AdapterManager(model, [lora_dir], max_loaded=2)
    for ref in ("style0", "style1", "style2", "style0"):
        mgr.activate({ref: 0.5})
        assert len(model.unet.peft_config) <= 2
    assert mgr.loads == 4 and mgr.evictions == 2
    mgr.activate({"style0": 0.5})
    assert mgr.loads == 4 and mgr.ram_cache.hits > 0
    small = AdapterManager(build_tiny_model(), [lora_dir], ram_cache_bytes=1)
    small.get("style0"), small.get("style1")
    assert len(small.ram_cache) == 1


def test_folder_roundtrip_and_device(tmp_path):
    model = build_tiny_model(seed=5)
    save_base_model(model, tmp_path / "m")
    again = load_base_model(tmp_path / "m")
    assert again.family == "sd15" and not again.pixel_space and again.name == "tiny-sd15"
    for (k, a), b in zip(model.unet.state_dict().items(), again.unet.state_dict().values()):
        assert torch.equal(a, b), k
    assert pick_device("cpu") == (torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="not 'tiny'"):
        load_base_model(tmp_path / "missing")


def test_fast_switch_matches_diffusers_set_adapters(lora_dir):
    model = build_tiny_model()
    mgr = AdapterManager(model, [lora_dir])
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    mgr.activate({"style0": 0.3, "style1": 0.9, "style2": 0.5})
    mgr.activate({"style1": 0.7, "style0": 0.2})
    with torch.no_grad():
        ours = model.unet(x, 10, encoder_hidden_states=ctx).sample
        names = [mgr.peft_name(mgr.resolve(r)) for r in ("style1", "style0")]
        model.unet.set_adapters(names, [0.7, 0.2])
        lib = model.unet(x, 10, encoder_hidden_states=ctx).sample
        with mgr.disabled():
            off = model.unet(x, 10, encoder_hidden_states=ctx).sample
        model.unet.disable_lora()
        lib_off = model.unet(x, 10, encoder_hidden_states=ctx).sample
    assert torch.allclose(ours, lib, atol=1e-6) and not torch.allclose(ours, off, atol=1e-3)
    assert torch.allclose(off, lib_off, atol=1e-6)
