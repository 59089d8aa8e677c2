"""Catalog readers: every format, and bad entries reported by location while the rest parses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from loracle.db.catalog import MAX_DESCRIPTION_CHARS, AdapterRecord
from loracle.tools.importers import Rejected, iter_source
from loracle.tools.importers.civitai import civitai_model_to_record, html_to_text
from loracle.tools.importers.safetensors_dir import base_model_from_metadata, top_tags


def catalog_line(**overrides) -> dict:
    line = {
        "id": 3679,
        "version_id": 4062,
        "name": "Bad VHS",
        "type": "LORA",
        "base_model": "SD 1.5",
        "tags": ["Low Quality", "vhs"],
        "trigger_words": ["vhs footage of"],
        "description": "The style of an old VHS tape.",
        "recommended_weight": 0.7,
        "example_weight": None,
        "example_prompts": ["vhs footage of a cat <lora:badvhs:0.8>"],
        "stats": {"downloadCount": 1069, "favoriteCount": 189, "rating": 5, "ratingCount": 5},
        "file": {"name": "badvhs_v1.safetensors", "sha256": "5A" + "0" * 62, "size_kb": 6679.5},
        "download_url": "https://civitai.com/api/download/models/4062",
        "stylus_blacklisted": False,
    }
    line.update(overrides)
    return line


def parse(path: Path) -> list[tuple[str, AdapterRecord | Rejected]]:
    return list(iter_source(path))


def test_catalog_jsonl_fields_are_mapped(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text(json.dumps(catalog_line(example_weight=0.9)) + "\n")
    [(location, record)] = parse(path)
    assert location == "catalog.jsonl:1"
    assert isinstance(record, AdapterRecord)
    assert (record.source, record.external_id, record.version_id) == ("civitai", "3679", "4062")
    assert record.tags == ["low quality", "vhs"]
    assert record.file_sha256 == "5a" + "0" * 62
    # Stylus's rule: weights seen in example prompts override the card's.
    assert (record.recommended_weight, record.weight_source) == (0.9, "examples")


def test_card_weight_used_when_examples_have_none(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(catalog_line()) + "\n")
    [(_, record)] = parse(path)
    assert (record.recommended_weight, record.weight_source) == (0.7, "card")


def test_bad_lines_are_reported_with_line_numbers_and_the_rest_parses(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps(catalog_line(id=1)).encode(),
        b"{not json",
        json.dumps({"name": "no id"}).encode(),
        json.dumps(catalog_line(id=4, tags="not a list")).encode(),
        b'{"id": 5, "name": "caf\xe9"}',
        json.dumps(catalog_line(id=6, description="x" * 1_000_000)).encode(),
        json.dumps(catalog_line(id=7, type="Checkpoint")).encode(),
        b"",
        json.dumps([1, 2]).encode(),
        json.dumps(catalog_line(id=True)).encode(),
        json.dumps(catalog_line(id=11, name="nul\x00byte'; DROP TABLE adapters; --")).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    results = dict(parse(path))
    assert isinstance(results["bad.jsonl:1"], AdapterRecord)
    assert "malformed JSON" in results["bad.jsonl:2"].reason
    assert "missing required field" in results["bad.jsonl:3"].reason
    assert "tags" in results["bad.jsonl:4"].reason
    assert "invalid UTF-8" in results["bad.jsonl:5"].reason
    assert len(results["bad.jsonl:6"].description) == MAX_DESCRIPTION_CHARS
    assert "not a LoRA" in results["bad.jsonl:7"].reason
    assert "bad.jsonl:8" not in results  # blank lines are skipped, not rejected
    assert "expected a JSON object" in results["bad.jsonl:9"].reason
    assert "id" in results["bad.jsonl:10"].reason
    assert results["bad.jsonl:11"].name == "nulbyte'; DROP TABLE adapters; --"


def civitai_model(**overrides) -> dict:
    model = {
        "id": 42,
        "name": "Watercolor Style",
        "type": "LORA",
        "nsfw": False,
        "tags": ["style", {"name": "Watercolor"}],
        "description": "<p>Soft <b>watercolor</b> washes &amp; paper texture.</p><script>alert(1)</script>",
        "stats": {"downloadCount": 10},
        "creator": {"username": "painter"},
        "modelVersions": [
            {
                "id": 200,
                "baseModel": "SDXL 1.0",
                "trainedWords": ["wtrcolor"],
                "files": [{"name": "wc_xl.safetensors", "hashes": {"SHA256": "AB" * 32}}],
            },
            {
                "id": 100,
                "baseModel": "SD 1.5",
                "trainedWords": ["watercolor"],
                "files": [
                    {"name": "wc.pt", "hashes": {}},
                    {"name": "wc.safetensors", "primary": True, "sizeKB": 10.0, "hashes": {"SHA256": "CD" * 32},
                     "downloadUrl": "https://civitai.com/api/download/models/100"},
                ],
                "images": [
                    {"nsfw": "None", "meta": {"prompt": "a fox, watercolor"}},
                    {"nsfw": "Mature", "meta": {"prompt": "hidden"}},
                    {"nsfw": "None", "meta": None},
                ],
            },
        ],
    }
    model.update(overrides)
    return model


def test_civitai_record_picks_the_sd15_safetensors_version() -> None:
    record = civitai_model_to_record(civitai_model())
    assert record.version_id == "100" and record.base_model == "SD 1.5"
    assert record.trigger_words == ["watercolor"]
    assert record.file_sha256 == "cd" * 32 and record.file_name == "wc.safetensors"
    assert record.example_prompts == ["a fox, watercolor"]
    assert record.tags == ["style", "watercolor"]
    assert record.description == "Soft watercolor washes & paper texture."


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [({"nsfw": True}, "NSFW"), ({"type": "Checkpoint"}, "not a LoRA"), ({"modelVersions": []}, "empty")],
)
def test_civitai_records_rejected_with_reason(overrides: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        civitai_model_to_record(civitai_model(**overrides))


def test_civitai_api_page_is_read_item_by_item(tmp_path: Path) -> None:
    path = tmp_path / "page.json"
    path.write_text(json.dumps({"items": [civitai_model(), civitai_model(id=43, type="Checkpoint")], "metadata": {}}))
    results = dict(parse(path))
    assert isinstance(results["page.json[0]"], AdapterRecord)
    assert isinstance(results["page.json[1]"], Rejected)


def test_html_to_text_drops_markup_and_scripts() -> None:
    assert html_to_text("<div>a<br>b</div><style>x{}</style>&lt;3") == "a b <3"


def write_lora(path: Path, metadata: dict[str, str]) -> None:
    save_file({"lora_unet_down_blocks_0_attentions_0.lora_down.weight": np.zeros((4, 8), np.float32)}, str(path), metadata)


def test_safetensors_folder_reads_kohya_metadata_and_sidecars(tmp_path: Path) -> None:
    write_lora(
        tmp_path / "ink.safetensors",
        {
            "ss_base_model_version": "sd_v1",
            "ss_output_name": "ink_sketch",
            "ss_network_dim": "8",
            "ss_tag_frequency": json.dumps({"img": {"ink": 30, "sketch": 20, "1girl": 5}}),
        },
    )
    (tmp_path / "ink.json").write_text(json.dumps({"description": "Ink sketches.", "activation text": "inksketch", "preferred weight": 0.6}))
    nested = tmp_path / "sub"
    nested.mkdir()
    write_lora(nested / "xl.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"})
    (nested / "xl.civitai.info").write_text(
        json.dumps({"modelId": 777, "id": 778, "model": {"name": "XL Thing"}, "trainedWords": ["xlthing"], "baseModel": "SDXL 1.0"})
    )
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    results = dict(parse(tmp_path))
    ink = results["ink.safetensors"]
    assert ink.source == "local" and len(ink.external_id) == 64 and ink.external_id == ink.file_sha256
    assert ink.name == "ink_sketch" and ink.base_model == "SD 1.5"
    assert ink.tags == ["ink", "sketch", "1girl"]
    assert ink.trigger_words == ["inksketch"] and ink.recommended_weight == 0.6
    assert ink.local_path == "ink.safetensors"
    xl = results["xl.safetensors"]
    assert (xl.source, xl.external_id, xl.name, xl.base_model) == ("civitai", "777", "XL Thing", "SDXL 1.0")
    assert xl.local_path == "sub/xl.safetensors"
    assert "not a readable safetensors file" in results["broken.safetensors"].reason


def test_base_model_detection() -> None:
    assert base_model_from_metadata({"ss_base_model_version": "sdxl_base_v1-0"}) == "SDXL 1.0"
    assert base_model_from_metadata({"modelspec.architecture": "stable-diffusion-v1/lora"}) == "SD 1.5"
    assert base_model_from_metadata({}) is None
    assert top_tags({"ss_tag_frequency": "not json"}) == []
