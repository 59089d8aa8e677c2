"""Agent turns that edit images, over the digits world (pixel space, so kept pixels can be checked exactly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loracle.agent.runtime import build_context
from loracle.agent.settings import Settings
from loracle.agent.threads import Threads
from loracle.db.runs import get_run
from loracle.generation.world.paths import world_paths
from loracle.tools.catalog_import import import_catalog
from loracle.tools.inspection import check_kept_region


@pytest.fixture
def world(tmp_path: Path, db, embedder):
    import_catalog(db, world_paths().catalog, embedder)
    settings = Settings(home=tmp_path / "home", base_model="world", steps=10, n_images=2, skip_threshold=0.0,
                        max_retries=0)
    threads = Threads(db.url)
    yield settings, threads
    threads.close()


def digit_png(path: Path) -> Path:
    """A held-out seven from the world's data, as a 16x16 grayscale PNG."""
    from loracle.evals.world.data import load_splits

    _, held_out = load_splits()
    x = held_out.images[(held_out.labels == 7).nonzero()[0, 0], 0]
    Image.fromarray(((x.numpy() + 1) * 127.5).round().astype(np.uint8), mode="L").save(path)
    return path


def bottom_half(path: Path) -> Path:
    m = np.zeros((16, 16), np.uint8)
    m[8:] = 255
    Image.fromarray(m, mode="L").save(path)
    return path


def pixels(settings: Settings, record: dict) -> np.ndarray:
    return np.asarray(Image.open(settings.images_dir / record["path"]), dtype=np.float64)


def test_inpainting_turn_keeps_unmasked_pixels_and_records_the_edit(world, db, tmp_path: Path) -> None:
    settings, threads = world
    ctx = build_context(settings, db)
    source, mask = digit_png(tmp_path / "seven.png"), bottom_half(tmp_path / "mask.png")
    state = threads.run_turn(ctx, "inpaint", "a bold seven", seed=3, input_image=str(source), input_mask=str(mask))
    edit = state["plan"]["edit"]
    assert edit == {"image": str(source), "mask": str(mask), "strength": settings.inpaint_strength,
                    "source": "upload", "image_id": None}
    original = np.asarray(Image.open(source), dtype=np.float64)
    for record in state["images"]:
        out = pixels(settings, record)
        assert np.array_equal(out[:8], original[:8]), "the unmasked (top) half is the input, pixel for pixel"
        assert np.abs(out[8:] - original[8:]).mean() > 1, "the masked half was repainted"
    assert "Edit: inpainted the masked region of the uploaded image" in state["answer"]
    assert not [f for f in state["findings"] if f["check"] == "kept_region"]
    assert state["nfe"] == 2 * 2 * 10  # two images, CFG, every step at strength 1
    with db.connection() as conn:
        assert get_run(conn, state["run_id"])["plan"]["edit"]["mask"] == str(mask)
    # the next turn (a fresh prompt) does not inherit the upload, but can see it in the previous plan
    fresh = threads.run_turn(ctx, "inpaint", "a three")
    assert fresh["plan"]["edit"] is None and fresh["nfe"] == 2 * 2 * 10


def test_refinement_follow_up_runs_image_to_image_from_the_previous_result(world, db) -> None:
    settings, threads = world
    ctx = build_context(settings, db)
    # Bold from the start: a plain seven now gets no adapter (nothing unasked), and the comparison below is
    # about image-to-image keeping its source, not about what adding an adapter changes.
    first = threads.run_turn(ctx, "refine", "a bold seven", seed=4)
    assert first["plan"]["edit"] is None
    second = threads.run_turn(ctx, "refine", "make the second one more bold")
    edit = second["plan"]["edit"]
    assert edit["source"] == "previous" and edit["image_id"] == first["images"][1]["id"]
    assert edit["image"] == first["images"][1]["path"]  # in the images folder: no server path in the plan
    assert edit["strength"] == settings.edit_strength and edit["mask"] is None
    assert second["nfe"] == 2 * 2 * round(settings.edit_strength * 10)  # only the last 60% of the steps
    assert "Edit: image-to-image from the previous result at strength 0.6" in second["answer"]
    before = pixels(settings, first["images"][1])
    after = np.mean([np.abs(pixels(settings, r) - before).mean() for r in second["images"]])
    unrelated = np.abs(pixels(settings, first["images"][0]) - before).mean()
    assert after < unrelated, "image-to-image stays closer to its source than another sample does"


def test_a_named_image_that_does_not_exist_is_an_error(world, db) -> None:
    settings, threads = world
    ctx = build_context(settings, db)
    threads.run_turn(ctx, "named", "a two", seed=1)
    with pytest.raises(ValueError, match="there is no image 5 in the previous turn"):
        threads.run_turn(ctx, "named", "make image 5 more slanted")


def test_kept_region_check_reports_a_moved_region(tmp_path: Path) -> None:
    source = Image.open(digit_png(tmp_path / "seven.png"))
    mask = Image.open(bottom_half(tmp_path / "mask.png"))
    assert check_kept_region([source.copy()], source, mask, 0.05) == []
    moved = Image.fromarray(255 - np.asarray(source))
    [finding] = check_kept_region([source.copy(), moved], source, mask, 0.05)
    assert finding.check == "kept_region" and "image 2:" in finding.message and "image 1:" not in finding.message, "numbered from 1"
    assert finding.action == "none" and finding.blamed == []
