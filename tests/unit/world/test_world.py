"""The digits world: quick build (losses fall, artifacts load through generation/), determinism, the committed
artifacts (size, formats, judge accuracy), and the small pieces (tokenizer, styles, catalog)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from loracle.evals.world.build import build_world
from loracle.generation.world.paths import world_paths


@pytest.fixture(scope="module")
def quick_world(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("world")
    report = build_world(out, quick=True, log=None)
    return world_paths(out), report


def test_quick_build_losses_fall(quick_world):
    _, report = quick_world
    for part in ("base", "guide"):
        assert report[part]["eval_loss_after"] < report[part]["eval_loss_before"], report[part]
    for name, r in report["loras"].items():
        assert r["eval_loss_after"] < r["eval_loss_before"], (name, r)
    for judge in ("judge", "eval-judge"):
        assert report[judge]["train_loss_last"] < report[judge]["train_loss_first"], judge
    assert report["mar"]["eval_loss_after"] < report["mar"]["eval_loss_before"], report["mar"]
    for name, r in report["mar-loras"].items():
        assert r["eval_loss_after"] < r["eval_loss_before"], (name, r)


def test_quick_world_mar_generates_with_its_lora(quick_world):
    from loracle.generation.engine import GenerationRequest
    from loracle.generation.guidance import GuidanceSettings
    from loracle.generation.mar.engine import MAREngine
    from loracle.generation.mar.io import load_mar

    paths, _ = quick_world
    engine = MAREngine(load_mar(paths.mar), [paths.mar_loras])
    lora = next(paths.mar_loras.glob("*.safetensors")).stem
    out = engine.generate(GenerationRequest(prompt="a handwritten seven", mixes=[{}, {lora: 1.0}], seeds=[0, 0],
                                            steps=4, guidance=GuidanceSettings(kind="cfg", scale=2.0)))
    assert [im.size for im in out.images] == [(16, 16)] * 2 and out.nfe == [8, 8]
    assert out.images[0].tobytes() != out.images[1].tobytes()
    lines = [json.loads(x) for x in paths.mar_catalog.read_text().splitlines()]
    assert [e["id"] for e in lines] == [900101] and lines[0]["base_model"] == "Digits MAR 1.0"


def test_quick_world_loads_and_generates_through_the_engine(quick_world):
    from loracle.generation.base_models import load_base_model
    from loracle.generation.engine import Engine, GenerationRequest
    from loracle.generation.guidance import GuidanceSettings, GuideSpec

    paths, _ = quick_world
    base, guide = load_base_model(paths.base, device="cpu"), load_base_model(paths.guide, device="cpu")
    assert base.pixel_space and base.sample_size == 16 and base.latent_channels == 1
    engine = Engine(base, [paths.loras], guide_models={"guide": guide})
    files = sorted(p.stem for p in paths.loras.glob("*.safetensors"))
    assert {engine.adapters.get(f).source_format for f in files} == {"diffusers", "kohya"}
    req = GenerationRequest(prompt="a handwritten seven", mixes=[{f: 1.0} for f in files], steps=3, scheduler="ddim",
                            guidance=GuidanceSettings(kind="auto", scale=1.5, guide=GuideSpec(kind="model", model="guide")))
    out = engine.generate(req)
    assert [im.size for im in out.images] == [(16, 16)] * len(files)


def test_kohya_and_diffusers_files_give_the_same_model(quick_world, tmp_path: Path):
    from safetensors.torch import load_file

    from loracle.evals.world.modelio import save_lora
    from loracle.generation.base_models import load_base_model
    from loracle.generation.engine import Engine, GenerationRequest

    paths, _ = quick_world
    src = next(paths.loras.glob("*_diffusers.safetensors"))
    peft = {k.removeprefix("unet."): v for k, v in load_file(str(src)).items()}
    save_lora(tmp_path / "a.safetensors", peft, "diffusers", 8, {})
    save_lora(tmp_path / "b.safetensors", peft, "kohya", 8, {})
    engine = Engine(load_base_model(paths.base, device="cpu"), [tmp_path])
    imgs = [engine.generate(GenerationRequest(prompt="digit 3", mixes=[{n: 1.0}], steps=4, scheduler="ddim")).images[0]
            for n in ("a", "b")]
    assert imgs[0].tobytes() == imgs[1].tobytes()


def test_catalog_and_conflicts(quick_world):
    paths, _ = quick_world
    lines = [json.loads(x) for x in paths.catalog.read_text().splitlines()]
    assert [e["id"] for e in lines] == [900001, 900002]
    for e in lines:
        f = paths.loras / e["file"]["name"]
        assert hashlib.sha256(f.read_bytes()).hexdigest() == e["file"]["sha256"]
        assert e["type"] == "LORA" and e["trigger_words"] and e["download_url"] is None
        assert e["source"] == "loracle/digits-world" and e["stylus_blacklisted"] is False
    conflicts = json.loads(paths.conflicts.read_text())["conflicts"]
    assert conflicts[0]["styles"] == ["bold", "thin"] and conflicts[0]["tag"] == "stroke-weight"


def test_parts_are_deterministic(tmp_path: Path):
    digests = []
    for sub in ("a", "b"):
        build_world(tmp_path / sub, quick=True, only=("guide",), log=None)
        digests.append(hashlib.sha256((tmp_path / sub / "guide/unet/diffusion_pytorch_model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_tokenizer_gives_known_words_one_token():
    from loracle.evals.world.data import vocabulary_words
    from loracle.evals.world.tokenizer import build_tokenizer

    tok = build_tokenizer(vocabulary_words())
    assert tok.convert_ids_to_tokens(tok("a bold, slanted seven").input_ids)[1:-1] == ["a</w>", "bold</w>", ",</w>",
                                                                                        "slanted</w>", "seven</w>"]
    assert len(tok("zzqx unknown-ish").input_ids) > 2  # anything still tokenizes, by characters


def test_styles_keep_range_and_conflicts():
    from loracle.evals.world.styles import STYLES, apply_styles, compatible

    x = torch.rand(4, 1, 16, 16) * 2 - 1
    for s in STYLES:
        y = apply_styles(x, [s.name])
        assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert not compatible(["bold", "thin"]) and compatible(["slanted", "boxed"])


def test_joint_lora_batches_mix_compatible_styles_with_their_triggers():
    """Joint LoRA training draws 1-3 active styles per step as often as `size_p` says, never an incompatible
    pair, weights in the agent's range; images carry every active style and captions every active trigger."""
    from collections import Counter

    from loracle.evals.world.data import load_splits
    from loracle.evals.world.styles import STYLES, apply_styles, compatible, style
    from loracle.evals.world.train import MixConfig, RunConfig, _MixBatches

    train, _ = load_splits()
    batches = _MixBatches(train, RunConfig(steps=1, batch=4, cond_dropout=0.0), list(STYLES), MixConfig())
    sizes = Counter()
    for i in range(300):
        weights, x, texts = batches.next()
        names = tuple(weights)
        sizes[len(names)] += 1
        assert compatible(names) and all(0.6 <= w <= 1.25 for w in weights.values())
        triggers = {style(n).trigger for n in names}
        assert all(set(t.split(", ")[-len(names):]) == triggers for t in texts), (names, texts)
        if i < 10:  # every image is a training digit with exactly the active styles applied
            styled = apply_styles(train.images, names).flatten(1)
            assert all((styled == im.flatten()).all(1).any() for im in x), names
    assert set(sizes) == {1, 2, 3}, sizes
    assert all(abs(sizes[k] / 300 - p) < 0.08 for k, p in zip((1, 2, 3), MixConfig().size_p)), sizes
    only_conflicting = _MixBatches(train, RunConfig(steps=1, batch=2), [style("bold"), style("thin")], MixConfig())
    assert {len(only_conflicting.next()[0]) for _ in range(20)} == {1}


def test_style_weights_give_a_style_more_steps_at_the_same_sizes():
    """MixConfig.style_weights draws the subsets holding a weighted style more often, each size as often as
    `size_p` says."""
    from collections import Counter

    from loracle.evals.world.data import load_splits
    from loracle.evals.world.styles import STYLES
    from loracle.evals.world.train import MixConfig, RunConfig, _MixBatches

    train, _ = load_splits()
    cfg = RunConfig(steps=1, batch=1)
    counts = {}
    for weights in ((), (("thin", 3.0),)):
        batches = _MixBatches(train, cfg, list(STYLES), MixConfig(size_p=(0.1, 0.2, 0.7), style_weights=weights))
        drawn = [tuple(batches.next()[0]) for _ in range(600)]
        sizes = Counter(len(d) for d in drawn)
        assert all(abs(sizes[k] / 600 - p) < 0.06 for k, p in zip((1, 2, 3), (0.1, 0.2, 0.7))), sizes
        counts[weights] = sum("thin" in d for d in drawn) / 600
    assert counts[(("thin", 3.0),)] > counts[()] + 0.1, counts


def test_joint_lora_training_gives_each_style_its_own_adapter(quick_world):
    """train_loras trains several adapters at once and returns each one's tensors and report, including its
    held-out loss in pairs."""
    from loracle.evals.world.data import load_splits
    from loracle.evals.world.styles import style
    from loracle.evals.world.train import RunConfig, train_loras
    from loracle.generation.base_models import load_base_model

    paths, _ = quick_world
    base = load_base_model(paths.base, device="cpu")
    train, held_out = load_splits()
    chosen = [style("bold"), style("slanted"), style("boxed")]
    cfg = RunConfig(steps=6, batch=4, lr=5e-3, warmup=1, ema=0.0, seed=2, eval_n=8, eval_repeats=1)
    tensors, reports = train_loras(base.unet, base.text_encoder, base.tokenizer, chosen, train, held_out, cfg, log=None)
    assert set(tensors) == set(reports) == {"bold", "slanted", "boxed"}
    assert tensors["bold"].keys() == tensors["boxed"].keys() and all(".lora_B." in k or ".lora_A." in k for k in tensors["bold"])
    b = [k for k in tensors["bold"] if ".lora_B." in k][0]
    assert not torch.equal(tensors["bold"][b], tensors["boxed"][b])  # trained apart, not one shared adapter
    assert sum(len(r.losses) for r in reports.values()) > cfg.steps  # some steps trained two or three at once
    assert all({"eval_loss_pairs_before", "eval_loss_pairs_after"} <= set(r.summary()) for r in reports.values())


def test_bench_mixes_draws_sets_the_judge_can_see_whole():
    """The mix benchmark scores only sets whose every style can show: compatible, never inverted with boxed."""
    import random

    from loracle.evals.world.bench_mixes import draw_mixes
    from loracle.evals.world.styles import compatible

    for size in (1, 2, 3):
        mixes = draw_mixes(size, 50, random.Random(0))
        assert mixes and len(set(mixes)) == len(mixes) and all(len(m) == size for m in mixes)
        assert all(compatible(m) and not {"inverted", "boxed"} <= set(m) for m in mixes)
    assert len(draw_mixes(1, 50, random.Random(0))) == 8


committed = world_paths()
needs_artifacts = pytest.mark.skipif(not (committed.judge / "judge.safetensors").is_file(), reason="world not built")


@needs_artifacts
def test_committed_artifacts_are_small_and_pickle_free():
    files = [p for p in committed.root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".jsonl"}


@needs_artifacts
@pytest.mark.parametrize("folder", [committed.judge, committed.eval_judge], ids=["agent", "eval"])
def test_committed_judge_accuracy_on_held_out_digits(folder: Path):
    from loracle.evals.world.data import load_splits
    from loracle.evals.world.judge import load_judge

    _, held_out = load_splits()
    judge = load_judge(folder)
    assert (judge.digits(held_out.images) == held_out.labels).float().mean() >= 0.99
    assert judge.present(held_out.images).any(1).float().mean() <= 0.02


@needs_artifacts
@pytest.mark.parametrize("folder", [committed.judge, committed.eval_judge], ids=["agent", "eval"])
def test_committed_judge_reads_renders_with_up_to_three_styles(folder: Path):
    """The faithfulness suite asks for up to three styles: the judge must read such renders (right digit, exactly
    the styles applied, a style the render cannot show not counted) on held-out digits. Trained on at most two
    styles it read 0.58 of two-style and 0.18 of three-style renders; on 20% three-style images for 12000
    steps at one threshold, 0.91 / 0.83 for two / three."""
    from loracle.evals.world.data import load_splits
    from loracle.evals.world.judge import by_style_count, load_judge

    _, held_out = load_splits()
    read = by_style_count(load_judge(folder), held_out)
    assert read["1"]["both"] >= 0.97 and read["2"]["both"] >= 0.94 and read["3"]["both"] >= 0.88, read


@needs_artifacts
def test_the_eval_judge_is_trained_apart_from_the_agents():
    """The faithfulness eval scores images the agent kept because its judge accepted them: a copy of that judge
    would count its misreadings as successes."""
    from loracle.evals.world.judge import load_judge

    agent, evaluator = load_judge(committed.judge), load_judge(committed.eval_judge)
    assert agent.net.config.widths != evaluator.net.config.widths
    assert (committed.judge / "judge.safetensors").read_bytes() != (committed.eval_judge / "judge.safetensors").read_bytes()
