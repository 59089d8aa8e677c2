"""The agent end to end on the tiny model: real PostgreSQL (catalog, runs, checkpoints), real LoRA files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.runtime import build_context
from agent.settings import Settings
from agent.threads import Threads
from db.runs import get_run
from generation.models import load_base_model
from generation.synthetic import write_synthetic_lora
from tools.catalog_import import import_catalog

STYLES = [
    ("101", "Watercolor Wash", ["style", "watercolor"], ["wtrclr"]),
    ("102", "Misty Forest Backgrounds", ["background", "forest", "fog"], ["mistyforest"]),
    ("103", "Red Fox", ["animal", "fox"], ["redfox"]),
    ("104", "Oil Painting", ["style", "oil painting"], ["oilpaint"]),
    ("105", "Anime Lineart", ["style", "anime"], ["animeline"]),
]


@pytest.fixture
def world(tmp_path: Path, db, embedder):
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    tiny = load_base_model("tiny")
    lines = []
    for i, (ext, name, tags, triggers) in enumerate(STYLES):
        file = adapters / f"lora_{ext}.safetensors"
        write_synthetic_lora(file, tiny, seed=200 + i)
        lines.append(json.dumps({"id": int(ext), "name": name, "tags": tags, "trigger_words": triggers,
                                 "description": f"{name} adapter.", "base_model": "SD 1.5",
                                 "example_prompts": [f"a picture, {triggers[0]}"], "recommended_weight": 0.9,
                                 "file": {"name": file.name}}))
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(lines) + "\n")
    import_catalog(db, catalog, embedder)
    settings = Settings(home=tmp_path / "home", base_model="tiny", adapter_dirs=[adapters], steps=4, n_images=2,
                        skip_threshold=0.0)
    threads = Threads(db.url)
    yield settings, threads
    threads.close()


def test_offline_turn_plans_picks_samples_and_records(world, db) -> None:
    settings, threads = world
    ctx = build_context(settings, db)
    events: list[dict] = []
    state = threads.run_turn(ctx, "t1", "a watercolor painting of a red fox in a misty forest", seed=7, on_event=events.append)
    picked = {p["name"] for ps in state["picks"].values() for p in ps}
    assert {"Watercolor Wash", "Red Fox"} <= picked, state["picks"]
    assert state["planner"] == "offline"
    assert len(state["images"]) == 2
    for image in state["images"]:
        assert (settings.images_dir / image["path"]).is_file()
        assert image["mix"], "every image uses at least one adapter (no all-off masks)"
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run" and "plan" in kinds and "progress" in kinds and kinds[-1] in ("done", "node")
    with db.connection() as conn:
        run = get_run(conn, state["run_id"])
    assert run["status"] == "done" and len(run["images"]) == 2 and run["nfe"] == state["nfe"] > 0
