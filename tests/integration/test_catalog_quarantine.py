"""Bad catalog records hurt no one: each kind is refused at import or skipped and quarantined at run time,
the run still succeeds, the finding names the adapter (never the caller's input or a server folder), and
retrieval leaves the adapter out until `check_catalog` finds it fixed."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from loracle.agent.runtime import build_context
from loracle.db.quarantine import list_quarantined, quarantined_ids
from loracle.tools.catalog_import import import_catalog
from tests.integration.tiny_catalog import STYLES


def add_records(db, embedder, folder: Path, records: list[dict]):
    catalog = folder / "extra.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in records))
    return import_catalog(db, catalog, embedder)


def record(ext: int, name: str, file_name: str, **extra) -> dict:
    return {"id": ext, "name": name, "tags": ["style", "neon"], "trigger_words": ["neonglow"],
            "description": f"{name}: neon glow lights.", "base_model": "SD 1.5", "file": {"name": file_name}, **extra}


def test_import_refuses_paths_control_characters_and_oversized_names(world, db, embedder, tmp_path) -> None:
    report = add_records(db, embedder, tmp_path, [
        record(801, "Escaping Path", "../../etc/passwd"),
        record(802, "Absolute Path", "/etc/passwd"),
        record(803, "Bell\x07Name", "lora_803.safetensors"),
        record(804, "x" * 201, "lora_804.safetensors"),
        record(805, "Fine Name", "lora_805.safetensors"),
    ])
    assert report.inserted == 1
    reasons = {r.location.rsplit(":", 1)[-1]: r.reason for r in report.rejected}
    assert set(reasons) == {"1", "2", "3", "4"}, reasons  # rejected by line
    assert "adapter folders" in reasons["1"] and "adapter folders" in reasons["2"]
    assert "U+0007" in reasons["3"] and "200" in reasons["4"]


def pickle_file(path: Path) -> None:
    path.write_bytes(pickle.dumps({"lora_unet_down.lora_down.weight": [0.0] * 64}))


@pytest.mark.parametrize("kind", ["pickle", "duplicate", "missing", "truncated"])
def test_bad_adapter_file_is_skipped_and_quarantined(world, db, embedder, tmp_path, kind: str) -> None:
    settings, threads = world
    adapters = settings.adapter_dirs[0]
    if kind == "pickle":
        pickle_file(adapters / "neon.safetensors")
        bad = record(901, "Neon Glow", "neon.safetensors")
    elif kind == "duplicate":  # a second entry on the Red Fox's file: the older record keeps it
        bad = record(901, "Neon Glow", "lora_103.safetensors")
    elif kind == "missing":  # the record says it was fetched, but the file is not there
        bad = record(901, "Neon Glow", "neon.safetensors")
    else:
        data = (adapters / "lora_101.safetensors").read_bytes()
        (adapters / "neon.safetensors").write_bytes(data[: len(data) // 2])
        bad = record(901, "Neon Glow", "neon.safetensors")
    assert add_records(db, embedder, tmp_path, [bad]).inserted == 1
    if kind == "missing":  # the record says it was fetched (as `loracle catalog fetch` does), but the file is gone
        with db.connection() as conn:
            conn.execute("UPDATE adapters SET local_path = file_name WHERE external_id = '901'")
    ctx = build_context(settings, db)
    prompt = "a red fox with neon glow lights, neonglow"
    state = threads.run_turn(ctx, f"q-{kind}", prompt, seed=3)

    assert len(state["images"]) == 2, "the run still makes its images"
    [finding] = state["skipped"]
    assert "Neon Glow" in finding["message"] and "civitai:901" in finding["message"], finding
    assert str(adapters) not in finding["message"] and "Skipped: skipped Neon Glow" in state["answer"]
    assert all(901 not in (i["adapters"] or []) for i in state["images"])
    with db.connection() as conn:
        [row] = list_quarantined(conn)
        assert row["name"] == "Neon Glow" and conn.execute(
            "SELECT status FROM runs WHERE id = %s", (state["run_id"],)).fetchone()[0] == "done"
        quarantined = quarantined_ids(conn)
    assert quarantined == [row["id"]]

    again = threads.run_turn(ctx, f"q2-{kind}", prompt, seed=4)
    assert not again["skipped"], "a quarantined adapter is not retrieved again"
    assert all(c["adapter_id"] != row["id"] for cs in again["candidates"].values() for c in cs)


def test_catalog_check_releases_a_fixed_file(world, db, embedder, tmp_path) -> None:
    from loracle.agent.catalog import check_catalog
    from loracle.agent.service import Agent

    settings, threads = world
    adapters = settings.adapter_dirs[0]
    pickle_file(adapters / "neon.safetensors")
    add_records(db, embedder, tmp_path, [record(901, "Neon Glow", "neon.safetensors")])
    threads.run_turn(build_context(settings, db), "q-fix", "a red fox with neon glow lights, neonglow", seed=3)
    agent = Agent(settings.model_copy(update={"database_url": db.url}), db=db)
    lifted, left = check_catalog(agent)
    assert lifted == 0 and [(q.ref, q.name) for q in left] == [("civitai:901", "Neon Glow")]
    assert "not a safetensors file" in left[0].reason
    (adapters / "neon.safetensors").write_bytes((adapters / f"lora_{STYLES[0][0]}.safetensors").read_bytes())
    lifted, left = check_catalog(agent)
    assert lifted == 1 and left == []
