"""The real-model mode end to end as a user runs it (`loracle eval real`), on the tiny model, a tiny catalog of
real LoRA files and a tiny CLIP built from a config; and the prompt-file formats it reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loracle.db.evals import get_eval_run
from loracle.evals.harness.real import ClipScorer, load_prompts
from loracle.tools.catalog_import import import_catalog
from tests.integration.tiny_catalog import write_tiny_catalog


def tiny_clip(folder: Path, *, pickled: bool = False) -> Path:
    """A seeded random CLIP (32 px images) with the tiny model's tokenizer, saved as a user's model folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from loracle.generation.base_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=16)
    model = CLIPModel(config)
    model.save_pretrained(folder)
    if pickled:  # what an old snapshot holds: the same weights as a pickle
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loracle.cli.main", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=600)


def test_prompt_files_in_every_supported_format(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("# a comment\na red fox\n\na misty forest\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": 1, "prompt": "a red fox"}) + "\n" + json.dumps({"text": "fog"}) + "\n")
    (tmp_path / "p.tsv").write_text("Prompt\tCategory\na red fox\tAnimals\n")
    (tmp_path / "p.json").write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "A fox. "}]}))
    assert load_prompts(tmp_path / "p.txt") == ["a red fox", "a misty forest"]
    assert load_prompts(tmp_path / "p.jsonl") == ["a red fox", "fog"]
    assert load_prompts(tmp_path / "p.tsv") == ["a red fox"]
    assert load_prompts(tmp_path / "p.json") == ["A fox."]
    assert load_prompts(tmp_path / "p.txt", limit=1) == ["a red fox"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "ok"}) + "\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON object"):
        load_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "bad.tsv").write_text("caption\nx\n")
    with pytest.raises(ValueError, match="'Prompt' column"):
        load_prompts(tmp_path / "bad.tsv")


def test_clip_score_is_100_times_the_clipped_cosine_of_the_model_embeddings(tmp_path: Path) -> None:
    import torch
    from transformers import CLIPModel, CLIPProcessor

    folder = tiny_clip(tmp_path / "clip")
    scorer = ClipScorer(folder)
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    prompts = ["a red fox", "a misty forest", "an oil painting", "a watercolor wash"]
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
        cos = torch.nn.functional.cosine_similarity(
            model(**inputs).image_embeds, model(**inputs).text_embeds, dim=-1).numpy()
    assert np.allclose(scorer.scores(images, prompts), 100 * np.clip(cos, 0, None), atol=1e-3)
    assert (scorer.scores(images[::-1], prompts) != scorer.scores(images, prompts)).any()  # one score per pair


def test_eval_real_scores_loracle_next_to_the_base_model(tmp_path: Path, db, database_url: str, embedder) -> None:
    """~40 s: two prompts x 2 images through the whole agent and the bare base model, CLIP-scored, FD to real images."""
    adapters, catalog = write_tiny_catalog(tmp_path)
    import_catalog(db, catalog, embedder)
    clip = tiny_clip(tmp_path / "clip")
    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(real / f"{i}.png")
    (real / "broken.jpg").write_bytes(b"not an image")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a watercolor painting of a red fox\nan oil painting of a misty forest\n")
    env = {"LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path / "home"), "LORACLE_BASE_MODEL": "tiny",
           "LORACLE_ADAPTER_DIRS": json.dumps([str(adapters)]), "LORACLE_STEPS": "4"}

    done = run_cli(["eval", "real", "--prompts", str(prompts), "--clip", str(clip), "--real-images", str(real),
                    "--k", "2", "--out", str(tmp_path / "runs")], env)
    assert done.returncode == 0, done.stderr[-3000:]
    [folder] = list((tmp_path / "runs").iterdir())
    results = json.loads((folder / "results.json").read_text())
    real_suite = results["suites"]["real"]
    assert list(results["suites"]) == ["real"] and real_suite["status"] == "ok"
    assert real_suite["prompts"] == 2 and real_suite["k"] == 2
    for arm in ("loracle", "base"):
        row = real_suite["metrics"][arm]
        assert 0 <= row["clip_score"] <= row["clip_best_of_2"] <= 100
        assert np.isfinite(row["fd_clip"]) and row["fd_clip"] >= 0
    assert real_suite["metrics"]["loracle"]["adapters_per_prompt"] >= 1
    assert real_suite["metrics"]["loracle"]["clip_score"] != real_suite["metrics"]["base"]["clip_score"]
    assert {"grid_real_loracle.png", "grid_real_base.png"} <= set(results["plots"])
    assert "## real (ok" in (folder / "report.md").read_text()
    with db.connection() as conn:
        assert get_eval_run(conn, results["run_id"])["suites"]["real"]["status"] == "ok"


def test_eval_real_refuses_what_it_cannot_use(tmp_path: Path, database_url: str) -> None:
    with pytest.raises(ValueError, match="pickled checkpoints .* are refused"):
        ClipScorer(tiny_clip(tmp_path / "pickled", pickled=True))
    env = {"LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path / "home"), "LORACLE_BASE_MODEL": "tiny"}
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\n")
    (tmp_path / "empty").mkdir()
    not_clip = run_cli(["eval", "real", "--prompts", str(prompts), "--clip", str(tmp_path / "empty")], env)
    assert not_clip.returncode == 1 and "not a CLIP model folder" in not_clip.stderr
    assert "Traceback" not in not_clip.stderr
