"""What `loracle generate` shows while a turn runs: one line per phase.

On a terminal, phases without a count (planning, retrieving, selecting, composing) are one status line
rewritten in place, and sampling is a bar over every denoising step of every mix; findings and retries
stay on screen above it. Anywhere else (a pipe, a log file, CI) each phase is one plain line when it
ends: no carriage returns, no escape codes, no bars.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

STATUS = "{desc}"
BAR = "{desc} {percentage:3.0f}%|{bar}| {n}/{total} steps [{elapsed}<{remaining}]"


class TurnProgress:
    """Follows a turn's events (agent.service.Agent.run_turn's `on_event`) on stderr."""

    def __init__(self, *, live: bool, phases: bool = True, stream: TextIO | None = None) -> None:
        """`live`: a terminal to redraw; `phases`: say when each phase ends (off for --json: findings only)."""
        self.live, self.phases, self.stream = live, phases, stream or sys.stderr
        self.mixes = 1
        self.sampled = 0  # steps of the calls already finished
        self.last_step = 0
        self.bar = None
        if live:
            from tqdm import tqdm

            self.bar = tqdm(total=None, bar_format=STATUS, file=self.stream, leave=False, dynamic_ncols=True)
        self.status("planning")

    def status(self, text: str) -> None:
        if self.bar is not None:
            self.bar.bar_format = STATUS
            self.bar.set_description_str(text)

    def line(self, text: str) -> None:
        """A line that stays (a finished phase when not live, a finding, a retry)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def step(self, step: int, steps: int) -> None:
        if step <= self.last_step:  # the next mix's call started
            self.sampled += self.last_step
        self.last_step = step
        if self.bar is None:
            return
        if self.bar.bar_format != BAR:
            self.bar.bar_format = BAR
            self.bar.set_description_str("sampling", refresh=False)
            self.bar.reset(total=steps * self.mixes)
        self.bar.total = max(self.bar.total or 0, self.sampled + steps)
        self.bar.update(self.sampled + step - self.bar.n)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "plan":
            tasks = event["tasks"]
            self._phase(f"planned {len(tasks)} task{'s' if len(tasks) != 1 else ''}: " + "; ".join(tasks),
                        "retrieving candidates")
        elif kind == "candidates":
            self._phase(None, "selecting adapters")
        elif kind == "picks":
            names = [name for names in event["picks"].values() for name in names]
            self._phase("picked: " + (", ".join(names) if names else "no adapters (the base model alone)"), "composing")
        elif kind == "mixes":
            self.mixes, self.sampled, self.last_step = event["distinct"], 0, 0
            self._phase(f"composed {event['distinct']} mix{'es' if event['distinct'] != 1 else ''} "
                        f"for {event['images']} image{'s' if event['images'] != 1 else ''}", "sampling")
        elif kind == "progress":
            self.step(event["step"], event["steps"])
        elif kind == "images" and not self.live and self.phases:
            self.line(f"sampled {len(event['paths'])} image{'s' if len(event['paths']) != 1 else ''} "
                      f"({event['nfe']} model evaluations)")
        elif kind == "images":
            self.status("inspecting")
        elif kind == "inspection":
            self.line("inspection: " + "; ".join(event["findings"]))
        elif kind == "retry":
            self.line(f"retrying (attempt {event['attempt'] + 1}), dropped adapters {event['dropped']}")
            self.status("composing")

    def _phase(self, done: str | None, next_status: str) -> None:
        """A phase ended: say what it found (a line when not live) and show what comes next."""
        if done is not None and not self.live and self.phases:
            self.line(done)
        self.status(next_status)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
