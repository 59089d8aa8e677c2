"""Real prompts as chat turns: `python -m loracle.evals.bench_chat_prompts [--n 100] [--answers FILE]`.

The first N prompts of `../shared/data/prompts/civitai_prompts.jsonl` (SD prompts with `<lora:...>` tags for
adapters this server does not have) sent to a live `loracle serve` on the digits world through the official
`openai` client. Counts errors (any non-200) and checks each answer as a user reads it (the `content` a plain
client prints): every `<lora:...>` tag is named with what became of it (applied, replaced, left out); the
digits world's limit is said exactly when the prompt names no digit (read as the judge reads it); no server
path and no Markdown escape the prompt did not have. Prints one line per answer (what was honoured, and each
miss), then one JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from loracle.evals.bench_service import free_port, wait_until_ready

PROMPTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "prompts" / "civitai_prompts.jsonl"


def load_prompts(path: Path, n: int) -> list[str]:
    with path.open() as f:
        return [json.loads(line)["prompt"] for _, line in zip(range(n), f)]


def tag_outcome(name: str, answer: str) -> str | None:
    """What the answer says became of one `<lora:name>` tag: applied as written, replaced by a catalog adapter,
    left out; None when the answer does not name it."""
    for line in answer.splitlines():
        if f"<lora:{name}>" in line:
            return ("left out" if "left it out" in line else "replaced by the closest adapter" if "closest" in line
                    else "applied from the catalog")
        if f"({name}) at " in line or f" {name} at " in line:
            return "applied"
    return None


def check_answer(prompt: str, answer: str) -> dict:
    """Per answer: each tag's outcome as the answer states it, whether the prompt names a digit, and whether the
    answer says the world draws digits only when it does not; `misses` lists what the answer left unsaid."""
    from loracle.generation.prompt_tags import parse_lora_tags
    from loracle.tools.judges import asks_for_digits, requested_digit

    try:
        names = list(parse_lora_tags(prompt)[1])
    except ValueError:
        names = []
    tags = {name: tag_outcome(name, answer) for name in names}
    digit, drawable = requested_digit(prompt), asks_for_digits(prompt)
    limit_said = "draws digits only" in answer
    misses = [f"tag {name!r} not named" for name, outcome in tags.items() if outcome is None]
    if not drawable and not limit_said:
        misses.append("no digit asked for, and the answer does not say the world draws digits only")
    if drawable and limit_said:
        misses.append(f"the prompt asks for {digit if digit is not None else 'digits'}, yet the answer says it names none")
    if re.search(r"/(?:tmp|home|work|root|usr)/", answer):
        misses.append("a server path in the answer")
    stray = sorted({m.group(0) for m in re.finditer(r"\\.", answer) if m.group(0) not in prompt})
    if stray:
        misses.append(f"Markdown escapes a plain client shows: {' '.join(stray)}")
    return {"tags": tags, "digit": digit, "limit_said": limit_said, "adapters": applied_adapters(answer), "misses": misses}


def applied_adapters(answer: str) -> list[str]:
    """The adapters the answer's "Image N: ..." lines say the images were made with."""
    recipes = [line.split(": ", 1)[1].split("; method")[0] for line in answer.splitlines() if re.match(r"Images? \d", line)]
    return sorted({re.sub(r" at [\d.]+$", "", a) for recipe in recipes for a in recipe.split(", ") if a != "no adapter"})


def summary_line(i: int, check: dict) -> str:
    tags = ", ".join(f"{name}: {outcome or 'NOT NAMED'}" for name, outcome in check["tags"].items()) or "no tags"
    subject = f"digit {check['digit']}" if check["digit"] is not None else (
        "no digit (limit said)" if check["limit_said"] else "no digit (LIMIT NOT SAID)")
    adapters = ", ".join(check["adapters"]) or "none"
    return f"{i:3d} {'ok  ' if not check['misses'] else 'MISS'} {subject}; {tags}; applied: {adapters}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--prompts", type=Path, default=PROMPTS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--answers", type=Path, help="also write each prompt, answer and check here (JSON lines)")
    args = parser.parse_args()
    if not args.prompts.is_file():
        raise SystemExit(f"prompts not found: {args.prompts.name} (the shared data folder is not here)")
    from openai import OpenAI

    from loracle.db import connect
    from loracle.db.keys import create_key
    from loracle.db.server import start_embedded

    prompts = load_prompts(args.prompts, args.n)
    with tempfile.TemporaryDirectory(prefix="loracle-chat-") as tmp:
        folder = Path(tmp)
        url = start_embedded(folder / "pgdata", cleanup_mode="delete")
        db = connect(url, folder / "pgdata")
        with db.connection() as conn:
            _, key = create_key(conn, f"bench-chat-{time.time_ns()}")
        db.close()
        env = {**os.environ, "LORACLE_DATABASE_URL": url, "LORACLE_HOME": str(folder / "home"), "LORACLE_BASE_MODEL": "world",
               "LORACLE_STEPS": str(args.steps), "LORACLE_N_IMAGES": "1", "OMP_NUM_THREADS": "1"}
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "loracle.cli.main", "serve", "--port", str(port), "--log-level", "warning"],
                                  env=env, stderr=subprocess.DEVNULL)
        errors: list[str] = []
        checks: list[dict] = []
        started = time.perf_counter()
        try:
            if not wait_until_ready(base_url, server):
                raise SystemExit("loracle serve did not become ready")
            client = OpenAI(base_url=f"{base_url}/v1", api_key=key, timeout=600, max_retries=0)
            for i, prompt in enumerate(prompts):
                try:
                    reply = client.chat.completions.create(model="loracle", seed=i, messages=[{"role": "user", "content": prompt}])
                    answer = reply.choices[0].message.content or ""
                    checks.append({"prompt": prompt, "answer": answer, **check_answer(prompt, answer)})
                    print(summary_line(i, checks[-1]), flush=True)
                    for miss in checks[-1]["misses"]:
                        print(f"      - {miss}", flush=True)
                except Exception as exc:  # counted, and the run goes on
                    errors.append(f"prompt {i}: {type(exc).__name__}: {str(exc)[:200]}")
                    print(f"{i:3d} ERROR {errors[-1]}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
        if args.answers:
            args.answers.write_text("".join(json.dumps(c) + "\n" for c in checks))
        outcomes = Counter(o or "not named" for c in checks for o in c["tags"].values())
        print(json.dumps({"prompts": len(prompts), "errors": len(errors), "error_examples": errors[:5],
                          "answers_accounting_for_tags_and_limits": sum(not c["misses"] for c in checks) / max(len(prompts), 1),
                          "answers_with_a_miss": sum(bool(c["misses"]) for c in checks), "tags": dict(outcomes),
                          "answers_applying_adapters": sum(bool(c["adapters"]) for c in checks),
                          "prompts_naming_no_digit": sum(c["digit"] is None for c in checks),
                          "seconds": round(time.perf_counter() - started, 1)}, indent=1))


if __name__ == "__main__":
    main()
