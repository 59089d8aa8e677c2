"""MAR behind the Engine contract: a tiny text-conditioned MAR saved and loaded as a folder, real peft LoRA files
mixed per image (dicts and a composer Composition), progress, NFE, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loracle.evals.world.data import vocabulary_words
from loracle.evals.world.modelio import save_mar_lora
from loracle.evals.world.nets import NetSize, build_text_encoder
from loracle.evals.world.tokenizer import MAX_LENGTH, build_tokenizer
from loracle.generation.composition import CompositionMethod
from loracle.generation.engine import GenerationRequest
from loracle.generation.guidance import GuidanceSettings, GuideSpec
from loracle.generation.mar import MAR, MARConfig
from loracle.generation.mar.adapters import read_mar_lora
from loracle.generation.mar.engine import MAREngine
from loracle.generation.mar.io import load_mar, save_mar
from loracle.generation.masks import Candidate, ComposerSettings, Composition, Mix, Task, compose

TINY = MARConfig(cond="text", text_dim=16, buffer_size=MAX_LENGTH, encoder_embed_dim=32, decoder_embed_dim=32,
                 diffloss_w=32, diffloss_d=2, num_sampling_steps=5)
TARGETS = r".*(attn\.qkv|mlp\.fc2|final_layer\.linear)$"


def _lora(model: MAR, seed: int) -> dict[str, torch.Tensor]:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    import copy

    m = copy.deepcopy(model)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False), m)
    return get_peft_model_state_dict(m)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mar")
    torch.manual_seed(0)
    tok = build_tokenizer(vocabulary_words())
    te = build_text_encoder(NetSize(text_dim=16, text_layers=1, heads=2), len(tok))
    model = MAR(TINY)
    torch.nn.init.normal_(model.diffloss.net.final_layer.linear.weight, std=0.05)  # untrained head: zero, blind
    torch.nn.init.normal_(model.diffloss.net.final_layer.adaLN_modulation[-1].weight, std=0.05)
    save_mar(root / "mar", model, "Tiny MAR", te, tok, sampling={"temperature": 1.0})
    for i, name in enumerate(("a", "b")):
        save_mar_lora(root / "loras" / f"{name}.safetensors", _lora(model, i + 1), 4, {})
    return root / "mar", root / "loras"


def test_folder_round_trip_and_lora_check(folders):
    mar, loras = folders
    bundle = load_mar(mar)
    assert bundle.model.config == TINY and bundle.sample_size == 16 and bundle.tokenizer.model_max_length == MAX_LENGTH
    lora = read_mar_lora(loras / "a.safetensors", bundle.model)
    assert lora.rank == 4 and any(m.endswith("final_layer.linear") for m in lora.modules)
    with pytest.raises(ValueError, match="not a MAR model folder"):
        load_mar(loras)


def test_generate_mixes_progress_and_nfe(folders):
    mar, loras = folders
    engine = MAREngine(load_mar(mar), [loras])
    seen = []
    req = GenerationRequest(prompt="a handwritten seven", mixes=[{}, {"a": 1.0}, {}, {"a": 1.0, "b": 0.5}],
                            seeds=[3, 3, 4, 3], steps=4, guidance=GuidanceSettings(kind="cfg", scale=2.0),
                            callback=seen.append)
    out = engine.generate(req)
    assert [im.size for im in out.images] == [(16, 16)] * 4 and out.images[0].mode == "L"
    assert out.pipeline_calls == 3 and out.nfe == [8] * 4  # 3 distinct mixes; cond + uncond x 4 AR steps
    assert [p.step for p in seen] == [1, 2, 3, 4] * 3 and seen[-1].steps == 4
    px = [im.tobytes() for im in out.images]
    assert px[0] != px[1], "an adapter changes the image of the same seed"
    assert px[1] != px[3], "a second adapter in the mix changes it again"
    again = engine.generate(GenerationRequest(prompt="a handwritten seven", mixes=[{}], seeds=[3], steps=4,
                                              guidance=GuidanceSettings(kind="cfg", scale=2.0)))
    assert again.images[0].tobytes() == px[0], "switching back to no adapters restores the base MAR"
    assert "Generator: MAR" in out.parameters[1] and "<lora:a:1>" in out.parameters[1]


def test_composer_composition_and_lora_tags(folders):
    mar, loras = folders
    engine = MAREngine(load_mar(mar), [loras])
    comp = compose([Task("style", (Candidate("a", 1.0), Candidate("b", 1.0)))], 4,
                   ComposerSettings(allow_all_off=False), seed=0)
    out = engine.generate(GenerationRequest(prompt="digit 3", mixes=comp, steps=2, guidance=GuidanceSettings(kind="none")))
    assert out.mixes == [m.as_dict() for m in comp.mixes] and out.nfe == [2] * 4
    tagged = engine.generate(GenerationRequest(prompt="digit 3 <lora:b:0.7>", n_images=1, steps=2,
                                               guidance=GuidanceSettings(kind="none")))
    assert tagged.mixes == [{"b": 0.7}] and tagged.prompts == ["digit 3"]


def test_clear_refusals(folders, tmp_path: Path):
    from loracle.generation.adapters import AdapterError

    mar, loras = folders
    engine = MAREngine(load_mar(mar), [loras])
    with pytest.raises(ValueError, match="no guide models"):
        engine.generate(GenerationRequest(prompt="x", steps=2, guidance=GuidanceSettings(
            kind="auto", scale=2.0, guide=GuideSpec("model", model="guide"))))
    with pytest.raises(ValueError, match="16x16"):
        engine.generate(GenerationRequest(prompt="x", steps=2, height=32, width=32))
    with pytest.raises(AdapterError, match="not found"):
        engine.generate(GenerationRequest(prompt="x", steps=2, mixes=[{"nope": 1.0}]))
    from safetensors.torch import save_file

    save_file({"unet.down.lora_A.weight": torch.zeros(4, 4)}, str(loras / "wrong.safetensors"))
    with pytest.raises(AdapterError, match="not a MAR LoRA"):
        engine.generate(GenerationRequest(prompt="x", steps=2, mixes=[{"wrong": 1.0}]))
    (loras / "wrong.safetensors").unlink()
    out = engine.generate(GenerationRequest(prompt="x", steps=500, n_images=1, guidance=GuidanceSettings(kind="none")))
    assert out.nfe == [64], "more AR steps than tokens run one step per token"
    small = MAREngine(load_mar(mar), [loras], max_loaded=1)
    seen = []
    with pytest.raises(ValueError, match="max_loaded is 1"):
        small.generate(GenerationRequest(prompt="x", steps=2, mixes=[{"a": 1.0}, {"a": 1.0, "b": 1.0}], callback=seen.append))
    assert seen == [], "every mix is checked before anything is sampled"


def test_the_engine_contract(folders):
    """What callers ask of any engine, answered truly: its native size, and no guide model (MAR has none)."""
    from loracle.generation.engine import ImageEngine

    mar, loras = folders
    engine: ImageEngine = MAREngine(load_mar(mar), [loras])
    assert engine.native_size == 16 and engine.guide_names == frozenset()
    assert not hasattr(engine, "base") and not hasattr(engine, "guide_models"), "nothing faked to look like a diffusion engine"


def _generate(engine: MAREngine, mix: Mix, method: str = "merge", guidance: GuidanceSettings | None = None, **kw):
    return engine.generate(GenerationRequest(
        prompt="a handwritten seven", mixes=Composition([mix]), seeds=[3], steps=kw.pop("steps", 4),
        guidance=guidance or GuidanceSettings(kind="cfg", scale=2.0),
        composition_method=CompositionMethod(method, kw.pop("every", 1)), **kw))


def test_composition_methods_on_mar(folders, monkeypatch):
    """switch: one group per AR step; composite: every group's guided head prediction, averaged (NFE counts it)."""
    mar, loras = folders
    engine = MAREngine(load_mar(mar), [loras])
    both = Mix.from_dict({"a": 1.0, "b": 1.0}, groups={"x": {"a": 1.0}, "y": {"b": 1.0}})
    seen = []
    encoder = engine.bundle.model.forward_mae_encoder

    def record(*args):  # the adapters active at each transformer call
        seen.append(frozenset(engine.adapters.active))
        return encoder(*args)

    monkeypatch.setattr(engine.bundle.model, "forward_mae_encoder", record)
    switch = _generate(engine, both, "switch")
    switched, seen[:] = list(seen), []
    composite = _generate(engine, both, "composite")
    composited = list(seen)
    a, b = (frozenset({engine.adapters.peft_name(engine.adapters.get(r).path)}) for r in "ab")
    assert switched == [a, b, a, b] and switch.nfe == [8]
    assert composited == [a, b] * 4 and composite.nfe == [16]
    merge = _generate(engine, both)
    assert len({r.images[0].tobytes() for r in (switch, composite, merge)}) == 3
    twice = Mix.from_dict({"a": 1.2}, groups={"x": {"a": 0.6}, "y": {"a": 0.6}})
    averaged = _generate(engine, twice, "composite")
    at_w = _generate(engine, Mix.from_dict({"a": 0.6}))
    diff = (torch.tensor(list(averaged.images[0].getdata())) - torch.tensor(list(at_w.images[0].getdata()))).abs()
    assert int(diff.max()) <= 1, "composite averages the groups' predictions"
    assert "Composition: composite" in composite.parameters[0]
    with pytest.raises(ValueError, match="every group gets a turn"):
        _generate(engine, both, "switch", every=4)


def test_adapter_guidance_on_mar(folders):
    mar, loras = folders
    engine = MAREngine(load_mar(mar), [loras])
    mix = Mix.from_dict({"a": 1.0})
    plain = _generate(engine, mix, guidance=GuidanceSettings(kind="none"))
    w1 = _generate(engine, mix, guidance=GuidanceSettings(kind="auto", scale=1.0, guide=GuideSpec("no_adapters")))
    strong = _generate(engine, mix, guidance=GuidanceSettings(kind="auto", scale=3.0, guide=GuideSpec("no_adapters")))
    assert w1.images[0].tobytes() == plain.images[0].tobytes() and w1.nfe == [8]  # the guide ran, at w 1 inert
    assert strong.images[0].tobytes() != plain.images[0].tobytes()
    with_cfg = _generate(engine, mix, guidance=GuidanceSettings(kind="both", scale=3.0, guide=GuideSpec("no_adapters")))
    assert with_cfg.nfe == [12] and "Guide: no_adapters" in with_cfg.parameters[0]
    assert engine.adapters.active and all(not layer._disable_adapters for layer in engine.adapters._layers())
