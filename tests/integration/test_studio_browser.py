"""The studio in a real headless Chromium against a real server on the digits world: a full visit (prompt,
progress, four images, an image's adapters, exclude one and refine, paint a mask and inpaint, reload and
find the thread), a download byte-identical to the stored PNG, and another tenant seeing nothing of it.

Chromium is Debian's package (`.ci/run` installs it); Playwright drives it through `executable_path`, so no
browser is downloaded. Screenshots of each step land in the test's temporary folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from loracle.agent.access import find_image, get_run, stored_png
from loracle.agent.settings import Settings
from loracle.api.config import ApiConfig
from tests.integration.api_server import LiveServer, create_key, fresh_database

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
expect, sync_playwright = sync_api.expect, sync_api.sync_playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000

# Records, in the page, when each progress line and each image appears, to tell streamed events from a buffered reply.
WATCH = """() => {
  window.seen = [];
  new MutationObserver((records) => {
    for (const r of records) for (const node of r.addedNodes) {
      if (node.nodeType !== 1) continue;
      const kind = node.matches("li.event") ? node.className : node.matches(".grid li") ? "image" : null;
      if (kind) window.seen.push([kind, performance.now()]);
    }
  }).observe(document.getElementById("turns"), {childList: true, subtree: true});
}"""


@pytest.fixture(scope="module")
def playwright():
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine: `apt-get install -y chromium` (.ci/run does) to run the browser test")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def live(server_url, tmp_path_factory):
    with fresh_database(server_url) as url:
        home = tmp_path_factory.mktemp("studio-browser")
        settings = Settings(home=home / "home", database_url=url, base_model="world", steps=6, n_images=4, max_retries=0,
                            llm_model=None)
        with LiveServer(settings, ApiConfig(per_tenant=8)) as server:
            server.alice, server.bob = create_key(url, "alice"), create_key(url, "bob")
            yield server


@pytest.fixture
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield browser
    browser.close()


def open_studio(browser, live, key: str, *, width: int = 1200):
    """A fresh browser profile on the studio, signed in with `key` through the page's key dialog."""
    context = browser.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(f"{live.url}/")
    page.get_by_role("dialog", name="API key").wait_for()  # the server requires keys: the page asks for one
    page.get_by_role("textbox", name="API key").fill(key)
    page.get_by_role("button", name="Save key").click()
    page.wait_for_selector("body[data-ready=true]")
    return page


def send(page, prompt: str, turn: int) -> object:
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_role("button", name="Send").click()
    done = page.locator(f".turn:nth-child({turn})")
    page.wait_for_selector(f".turn:nth-child({turn})[data-status=done], .turn:nth-child({turn})[data-status=failed]")
    assert done.get_attribute("data-status") == "done", done.inner_text()
    return done


def image_ids(turn) -> list[str]:
    return [b.get_attribute("data-image-id") for b in turn.locator("button.thumb").all()]


def shot(page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_a_full_visit(browser, live, tmp_path) -> None:
    agent = live.service.agent
    page = open_studio(browser, live, live.alice)
    shot(page, tmp_path, "01-signed-in")

    # 1. A prompt: progress streams in, then four images.
    page.evaluate(WATCH)
    first = send(page, "a bold, slanted seven", 1)
    seen = page.evaluate("window.seen")
    kinds = [kind for kind, _ in seen]
    assert "event event-plan" in kinds and "event event-picks" in kinds and "event event-progress" in kinds, kinds
    planned = next(t for kind, t in seen if kind == "event event-plan")
    imaged = next(t for kind, t in seen if kind == "image")
    assert imaged - planned > 50, "the plan was shown while the run was still sampling, not with its result"
    ids = image_ids(first)
    assert len(ids) == 4 and all(first.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth > 0)"))
    run_id = first.get_attribute("data-run-id")
    thread_id = page.evaluate("new URLSearchParams(location.hash.slice(1)).get('thread')")
    record = get_run(agent, "alice", run_id)
    assert record["thread_id"] == thread_id and record["status"] == "done"
    assert sorted(ids) == sorted(str(i["id"]) for i in record["images"])
    chip_refs = [c.get_attribute("data-ref") for c in first.locator(".chip").all()]
    assert sorted(chip_refs) == sorted(p["ref"] for ps in record["picks"].values() for p in ps) and chip_refs
    shot(page, tmp_path, "02-first-turn")
    print(f"studio: first event after {first.get_attribute('data-first-event-ms')} ms, "
          f"last image after {first.get_attribute('data-images-ms')} ms")

    # 2. Open an image: its adapters, seed and parameters; the PNG downloads byte for byte.
    first.locator("button.thumb").first.click()
    dialog = page.get_by_role("dialog", name="Image")
    dialog.wait_for()
    rows = dialog.locator("#image-adapters tbody tr")
    shown = {r.get_attribute("data-ref"): r.locator("th").inner_text() for r in rows.all()}
    picks = {p["ref"]: p["name"] for ps in record["picks"].values() for p in ps}
    assert shown and all(picks[ref] == name for ref, name in shown.items())
    stored = find_image(agent, ids[0])
    assert f"Seed: {page.locator('#image-seed').inner_text().split()[0]}" in dialog.locator("#image-parameters").inner_text()
    with page.expect_download() as download:
        dialog.get_by_role("link", name="Download PNG").click()
    assert Path(download.value.path()).read_bytes() == stored_png(agent, stored.path)
    shot(page, tmp_path, "03-image-details")
    dialog.get_by_role("button", name="Close").click()

    # 3. Exclude one picked adapter, refine: it is gone from the next turn's picks.
    excluded = chip_refs[0]
    first.locator(f'.chip[data-ref="{excluded}"] button.chip-exclude').click()
    assert page.locator(f'#pending [data-kind=exclude][data-ref="{excluded}"]').count() == 1
    second = send(page, "with a frame", 2)
    assert excluded not in [c.get_attribute("data-ref") for c in second.locator(".chip").all()]
    record2 = get_run(agent, "alice", second.get_attribute("data-run-id"))
    assert excluded not in {p["ref"] for ps in record2["picks"].values() for p in ps}
    assert excluded in record2["plan"]["edits"]["excluded"]
    expect(page.locator("#pending")).to_have_text("")  # cleared once the turn's images have loaded
    shot(page, tmp_path, "04-refined")

    # 4. Edit from an image: paint the left part of a mask and inpaint.
    second.locator("button.thumb").first.click()
    dialog.get_by_role("button", name="Edit from this image").click()
    canvas = page.get_by_label("Mask: paint where the image should be repainted", exact=False)
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    for y in (0.3, 0.6, 0.95):
        page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * y, steps=4)
    page.mouse.up()
    assert "marked for repainting" in page.locator("#mask-coverage").inner_text()
    shot(page, tmp_path, "05-mask")
    third = send(page, "a bold four", 3)
    record3 = get_run(agent, "alice", third.get_attribute("data-run-id"))
    edit = record3["plan"]["edit"]
    assert edit["mask"] and edit["strength"] == 1.0
    images_dir = live.service.settings.images_dir  # the plan names uploads inside the images folder
    mask = np.asarray(Image.open(images_dir / edit["mask"]).convert("L")) > 127
    third_width = mask.shape[1] // 3
    assert mask[:, :third_width].mean() > 0.3 and not mask[:, -third_width:].any(), "the painted region, and only it"
    source = np.asarray(Image.open(images_dir / edit["image"]).convert("L"), dtype=float)
    result = np.asarray(Image.open(images_dir / find_image(agent, image_ids(third)[0]).path).convert("L"), dtype=float)
    assert np.abs(result - source)[~mask].mean() < 0.05 * 255, "inpainting kept what the mask did not cover"
    assert len(image_ids(third)) == 4
    shot(page, tmp_path, "06-inpainted")

    # 5. Reload: the thread is first in the history and opens with its three turns.
    page.goto(f"{live.url}/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_role("button", name="History").click()
    newest = page.locator("#thread-list button.thread").first
    assert newest.get_attribute("data-thread-id") == thread_id
    assert newest.locator(".thread-title").inner_text() == "a bold, slanted seven"
    newest.click()
    expect(page.locator(".turn")).to_have_count(3)
    assert image_ids(page.locator(".turn").nth(2)) == image_ids(third)
    shot(page, tmp_path, "07-history")
    assert page.errors == []



def test_another_tenant_sees_none_of_it(browser, live, tmp_path) -> None:
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.alice}"}, timeout=120) as alice:
        thread = alice.post("/threads", json={}).json()["id"]
        made = alice.post(f"/threads/{thread}/runs", json={"message": "a thin two", "n": 1, "stream": False}).json()
    image = made["images"][0]["id"]

    page = open_studio(browser, live, live.bob, width=390)  # a phone's width
    page.get_by_role("button", name="History").click()
    page.wait_for_selector("#thread-list li")
    assert page.locator("#thread-list button.thread").count() == 0
    assert "No threads yet" in page.locator("#thread-list").inner_text()
    page.goto(f"{live.url}/#thread={thread}")
    expect(page.get_by_role("status")).to_contain_text(f"no thread '{thread}'")
    assert page.locator(".turn").count() == 0
    shot(page, tmp_path, "08-other-tenant")
    assert not page.evaluate("document.documentElement.scrollWidth > window.innerWidth"), "fits a phone's width"

    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.bob}"}, timeout=60) as bob:
        assert bob.get("/threads").json()["threads"] == []
        assert bob.get(f"/images/{image}").status_code == 404
        assert bob.get(f"/v1/images/files/{image}.png").status_code == 404
        assert bob.get(f"/threads/{thread}").status_code == 404


# Text on the page whose colour against its effective background is under WCAG AA's 4.5:1 (disabled controls exempt).
LOW_CONTRAST = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (node) => {
    for (; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || c[3] > 0.5) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const node of document.querySelectorAll("body *")) {
    const text = [...node.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!text || !node.checkVisibility() || node.closest(":disabled")) continue;
    const [a, b] = [lum(rgb(getComputedStyle(node).color)), lum(background(node))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(`${node.tagName}#${node.id}.${node.className}: ${ratio.toFixed(2)}`);
  }
  return low;
}"""


def test_keyboard_phone_width_and_contrast(browser, live, tmp_path) -> None:
    """Without a mouse, at a phone's width: skip to the prompt, open the edit area, upload an image and paint
    its mask with the arrow keys and Space; nothing overflows sideways and all text meets 4.5:1 contrast."""
    Image.new("RGB", (32, 32), (40, 40, 40)).save(tmp_path / "source.png")
    page = open_studio(browser, live, live.alice, width=390)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "prompt"

    page.locator("#attach").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "edit-file"
    page.locator("#edit-file").set_input_files(str(tmp_path / "source.png"))
    expect(page.locator("#edit-source")).to_contain_text("Editing source.png (32×32)")
    assert page.evaluate("document.activeElement.id") == "mask-canvas"
    assert "No mask painted" in page.locator("#mask-coverage").inner_text()
    page.keyboard.press("Space")
    for _ in range(3):
        page.keyboard.press("Shift+ArrowRight")
    expect(page.locator("#mask-coverage")).to_contain_text("marked for repainting")
    painted = page.evaluate("""() => { const c = document.getElementById("mask-canvas");
      return c.getContext("2d").getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 === 3 && v > 0).length; }""")
    assert 0 < painted < 32 * 32, painted
    page.get_by_role("button", name="Catalog").click()
    shot(page, tmp_path, "09-keyboard-phone")

    wide = page.evaluate("""() => [...document.querySelectorAll("body *")].filter((n) => n.getBoundingClientRect().right > innerWidth)
      .map((n) => `${n.tagName}#${n.id}.${n.className} ${Math.round(n.getBoundingClientRect().right)}`)""")
    assert wide == [], "fits a phone's width"
    assert page.evaluate(LOW_CONTRAST) == []
    assert page.errors == []
