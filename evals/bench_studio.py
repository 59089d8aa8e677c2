"""One turn in the studio next to the same turn through the CLI: `python -m loracle.evals.bench_studio`.

Studio: headless Chromium (Debian's `chromium`, driven by Playwright) on the page of a running `loracle serve`
(digits world, default settings); each turn is a new thread; times run from pressing Send to the run's first
event, to its plan, and to the last image decoded in the page (the page records them on the turn).
CLI: `loracle generate PROMPT --n 4` as a person runs it, a fresh process each time on the same data folder;
times run from starting the process to its first progress line (the plan) and to its exit (images on disk).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loracle.evals.bench_service import free_port, wait_until_ready

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def studio_turns(base_url: str, prompt: str, turns: int, n: int) -> list[dict[str, float]]:
    """Seconds from Send to the first event, the plan and the last image, per turn."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium on PATH: `apt-get install -y chromium`")
    times = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(300_000)
        page.goto(f"{base_url}/")
        page.wait_for_selector("body[data-ready=true]")
        for _ in range(turns):
            page.get_by_role("button", name="New thread").click()
            page.get_by_label("Images").select_option(str(n))
            page.get_by_label("Prompt").fill(prompt)
            page.get_by_role("button", name="Send").click()
            turn = page.locator(".turn[data-status=done]")
            turn.wait_for()
            times.append({key: float(turn.get_attribute(f"data-{key}-ms")) / 1000 for key in ("first-event", "plan", "images")})
        browser.close()
    return times


def cli_turns(env: dict[str, str], prompt: str, turns: int, n: int) -> list[dict[str, float]]:
    """Seconds from starting `loracle generate` to its plan line and to its exit, per turn."""
    times = []
    for _ in range(turns):
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "loracle.cli.main", "generate", prompt, "--n", str(n)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        planned = None
        for line in process.stderr:
            if planned is None and line.startswith("planned"):
                planned = time.perf_counter() - started
        if process.wait() != 0:
            sys.exit("loracle generate failed")
        times.append({"plan": planned or float("nan"), "images": time.perf_counter() - started})
    return times


def median(rows: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in rows if key in r]
    return f"{statistics.median(values):.2f} s" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="a bold, slanted seven")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--n", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loracle-bench-studio-") as folder:
        env = {**os.environ, "LORACLE_HOME": str(Path(folder) / "home")}
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "loracle.cli.main", "serve", "--port", str(port), "--log-level", "warning"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_until_ready(base_url, server, timeout_s=300):
                sys.exit("the server did not become ready")
            studio = studio_turns(base_url, args.prompt, args.turns, args.n)
        finally:
            server.terminate()
            server.wait(timeout=60)
        cli = cli_turns(env, args.prompt, args.turns, args.n)
    print(f"prompt {args.prompt!r}, {args.n} images, digits world, default settings; median of {args.turns} turns")
    print(f"{'front end':<32} {'first event':>12} {'plan':>10} {'last image':>12}")
    print(f"{'studio (server running)':<32} {median(studio, 'first-event'):>12} {median(studio, 'plan'):>10} {median(studio, 'images'):>12}")
    print(f"{'CLI (a new process each turn)':<32} {'-':>12} {median(cli, 'plan'):>10} {median(cli, 'images'):>12}")


if __name__ == "__main__":
    main()
