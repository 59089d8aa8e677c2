"""`loracle generate`'s display: one bar over every step of every mix on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from loracle.cli.progress import TurnProgress

EVENTS = [
    {"event": "run", "run_id": "r", "thread_id": "t"},
    {"event": "plan", "tasks": ["bold", "slanted seven"], "follow_up": False, "edit": None},
    {"event": "candidates", "counts": {"bold": 8}},
    {"event": "picks", "planner": "offline", "picks": {"bold": ["Boldface Digits"], "slanted seven": []}},
    {"event": "mixes", "distinct": 2, "images": 4},
    *[{"event": "progress", "step": s, "steps": 5} for _ in range(2) for s in range(1, 6)],  # one call per mix
    {"event": "images", "paths": ["a", "b", "c", "d"], "nfe": 20},
    {"event": "inspection", "stage": "images", "findings": ["image 2 is blank"]},
]


def follow(live: bool) -> str:
    stream = io.StringIO()
    progress = TurnProgress(live=live, stream=stream)
    for event in EVENTS:
        progress(event)
    if live:
        assert (progress.bar.n, progress.bar.total) == (10, 10)  # both mixes' steps on one bar, never reset
    progress.close()
    return stream.getvalue()


def test_piped_output_is_one_plain_line_per_phase() -> None:
    assert follow(live=False).splitlines() == [
        "planned 2 tasks: bold; slanted seven",
        "picked: Boldface Digits",
        "composed 2 mixes for 4 images",
        "sampled 4 images (20 model evaluations)",
        "inspection: image 2 is blank",
    ]


def test_a_terminal_gets_a_status_line_then_one_sampling_bar() -> None:
    shown = follow(live=True)
    for status in ("planning", "retrieving candidates", "selecting adapters", "composing", "inspecting"):
        assert status in shown
    assert "/10 steps" in shown and "0step" not in shown and "?step/s" not in shown
    assert "inspection: image 2 is blank\n" in shown  # findings stay above the bar
