"""The `loracle` console script end to end, as a user runs it (a subprocess against a real database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_catalog_db import write_catalog


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loracle.cli.main", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


def test_import_then_search_as_json(tmp_path: Path, database_url: str) -> None:
    env = {"LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path / "home"), "LORACLE_BASE_MODEL": "tiny"}
    catalog = write_catalog(tmp_path / "catalog.jsonl")
    with catalog.open("a") as handle:
        handle.write("{oops\n")
    imported = run(["catalog", "import", str(catalog)], env)
    assert imported.returncode == 0, imported.stderr
    assert "inserted 10, updated 0, unchanged 0, rejected 1" in imported.stdout
    assert "rejected catalog.jsonl:11: malformed JSON" in imported.stderr
    searched = run(["search", "neon cyberpunk streets", "--k", "3", "--json"], env)
    assert searched.returncode == 0, searched.stderr
    hits = json.loads(searched.stdout)
    assert hits[0]["name"] == "Cyberpunk City" and len(hits) == 3
    assert hits[0]["evidence"]["ranks"]
    assert searched.stderr == ""  # no library progress bars or warnings around the answer


def test_search_keeps_to_the_engines_base_models(tmp_path: Path, database_url: str) -> None:
    """Like the agent and the API, `loracle search` shows only adapters the configured base model can use."""
    env = {"LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path / "home"), "LORACLE_BASE_MODEL": "tiny"}
    assert run(["catalog", "import", str(write_catalog(tmp_path / "catalog.jsonl"))], env).returncode == 0

    def names(args: list[str], **overrides: str) -> list[str]:
        done = run(["search", "watercolor painting", "--k", "10", "--json", *args], {**env, **overrides})
        assert done.returncode == 0, done.stderr
        return [hit["name"] for hit in json.loads(done.stdout)]

    sd15 = names([])  # an SD 1.5 engine: the SDXL adapter is left out
    assert "Watercolor Painting Style" in sd15 and "SDXL Watercolor" not in sd15
    assert names([], LORACLE_BASE_MODEL="tiny-sdxl") == ["SDXL Watercolor"]
    assert names(["--base-model", "SDXL 1.0"]) == ["SDXL Watercolor"]  # named base models replace the engine's
    assert names([], LORACLE_BASE_MODEL="world") == []  # the digits world uses none of these


def test_database_down_is_one_clear_line(tmp_path: Path) -> None:
    env = {"LORACLE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x?connect_timeout=1", "LORACLE_HOME": str(tmp_path)}
    result = run(["search", "anything"], env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the database")
    assert "Traceback" not in result.stderr


def test_bad_arguments_are_reported(tmp_path: Path, database_url: str) -> None:
    env = {"LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path)}
    assert "no such file" in run(["catalog", "import", str(tmp_path / "missing.jsonl")], env).stderr
    empty = run(["search", "  "], env)
    assert empty.returncode == 1 and "the prompt is empty" in empty.stderr


def test_generate_with_image_and_mask(tmp_path: Path, database_url: str) -> None:
    """--image/--mask reach the graph as the turn's input keys; bad files are usage errors, not tracebacks."""
    import numpy as np
    from PIL import Image

    env = {"LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path / "home"), "LORACLE_STEPS": "4",
           "LORACLE_N_IMAGES": "1", "LORACLE_MAX_RETRIES": "0"}
    image, mask, text = tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "notes.png"
    Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1)), mode="L").save(image)
    half = np.zeros((16, 16), np.uint8)
    half[8:] = 255
    Image.fromarray(half, mode="L").save(mask)
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    text.write_text("not an image")
    for args, message in [
        (["--image", str(text)], "is not a readable image"),
        (["--image", str(image), "--mask", str(tmp_path / "small.png")], "does not match image size"),
    ]:  # each is a process start (torch import); the other checks are unit-tested in generation/edit.py
        bad = run(["generate", "a seven", *args], env)
        assert bad.returncode == 2 and message in " ".join(bad.stderr.replace("│", " ").split()), bad.stderr
        assert "Traceback" not in bad.stderr
    done = run(["generate", "a seven", "--image", str(image), "--mask", str(mask), "--strength", "0.5", "--json"], env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["plan"]["edit"] == {"image": str(image), "mask": str(mask), "strength": 0.5, "source": "upload",
                                      "image_id": None}
    assert result["nfe"] == 2 * 2  # CFG, the last half of 4 steps
    out = np.asarray(Image.open(result["images"][0]))
    assert np.array_equal(out[:8], np.asarray(Image.open(image))[:8])


def test_generate_progress_reads_clean_in_a_log_and_threads_show_names_the_tenant(tmp_path: Path, database_url: str) -> None:
    """Piped stderr (not a terminal) gets one plain line per phase: no carriage returns, escape codes or empty
    bars. A thread looked up under the wrong tenant says which tenant has it."""
    from loracle.agent.access import claim_thread
    from loracle.agent.service import open_agent
    from loracle.agent.settings import Settings

    env = {"LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path / "home"), "LORACLE_STEPS": "3",
           "LORACLE_N_IMAGES": "2", "LORACLE_MAX_RETRIES": "0"}
    done = run(["generate", "a bold, slanted seven", "--seed", "1"], env)
    assert done.returncode == 0, done.stderr
    for noise in ("\r", "\x1b", "[A", "step/s", "it/s", "0step", "Loading weights", "%|"):
        assert noise not in done.stderr, (noise, done.stderr)
    lines = done.stderr.splitlines()
    assert lines[0] == "world catalog: " + lines[0].split(": ", 1)[1]  # a fresh database imports the world first
    assert "planned 2 tasks: bold; slanted seven" in lines and any(line.startswith("sampled 2 images (") for line in lines)
    assert any(line.startswith("picked: ") for line in lines) and any(line.startswith("composed ") for line in lines)
    thread = done.stdout.split("thread: ")[1].split()[0]

    shown = run(["threads", "show", thread], env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["history"] == ["a bold, slanted seven"]
    wrong = run(["threads", "show", thread, "--tenant", "alice"], env)
    assert wrong.returncode == 1
    assert f"it exists for tenant 'local': loracle threads show {thread} --tenant local" in wrong.stderr
    with open_agent(Settings(home=tmp_path / "home", database_url=database_url)) as agent:
        claim_thread(agent, "alice", "made-by-the-api")  # what POST /threads does for alice's key
    api_made = run(["threads", "show", "made-by-the-api"], env)
    assert api_made.returncode == 1 and "--tenant alice" in api_made.stderr
    unknown = run(["threads", "show", "nowhere"], env)
    assert unknown.returncode == 1 and "pass --tenant TENANT" in unknown.stderr


def test_eval_retrieval_reports_several_query_files_in_one_run(tmp_path: Path, database_url: str) -> None:
    """Dev-format and Civitai-prompt-format files side by side: one result per file, each with its own labels."""
    env = {"LORACLE_DATABASE_URL": database_url, "LORACLE_HOME": str(tmp_path / "home"), "LORACLE_RANKER_PATH": str(tmp_path / "none.json")}
    assert run(["catalog", "import", str(write_catalog(tmp_path / "catalog.jsonl"))], env).returncode == 0
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"id": "coco-1", "prompt": "neon cyberpunk city streets at night", "topics": {"city": [2]}}) + "\n")
    civitai = tmp_path / "civitai.jsonl"
    civitai.write_text(json.dumps({"id": "civitai-1", "prompt_no_lora": "a red fox in a misty forest", "lora_ids": [4, 7]}) + "\n"
                       + json.dumps({"id": "civitai-2", "prompt_no_lora": "nothing in the catalog", "lora_ids": [999]}) + "\n")
    done = run(["eval", "retrieval", "--queries", str(dev), "--queries", str(civitai), "--json"], env)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["file"] for r in results] == [str(dev), str(civitai)]
    assert [r["queries"] for r in results] == [1, 1]  # the query whose label is not in the catalog is left out
    dense = {r["file"]: r["strategies"][0] for r in results}
    assert dense[str(dev)]["strategy"] == "dense (baseline)"
    # each file scored against its own labels: swapped or merged labels would rank a non-label first
    assert dense[str(dev)]["nDCG@10"] == 1.0 and dense[str(civitai)]["nDCG@10"] == 1.0
    assert not any(row["strategy"].startswith(("trained", "learned")) for r in results for row in r["strategies"])  # no artifacts there
    missing = run(["eval", "retrieval", "--queries", str(dev), "--queries", str(tmp_path / "gone.jsonl")], env)
    assert missing.returncode == 1 and "no such queries file" in missing.stderr
