"""Real prompts as chat turns: `python -m loracle.evals.bench_chat_prompts [--n 100]`.

The first N prompts of `../shared/data/prompts/civitai_prompts.jsonl` (SD prompts with `<lora:...>` tags for
adapters this server does not have) sent to a live `loracle serve` on the digits world through the official
`openai` client. Counts errors (any non-200) and checks that every answer accounts for what it could not do:
each `<lora:...>` tag is applied or named as missing, and the digits world's limit is said when the prompt
names no digit. Prints one JSON report.
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
from pathlib import Path

from loracle.evals.bench_service import free_port, wait_until_ready

PROMPTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "prompts" / "civitai_prompts.jsonl"


def load_prompts(path: Path, n: int) -> list[str]:
    with path.open() as f:
        return [json.loads(line)["prompt"] for _, line in zip(range(n), f)]


def accounts_for(prompt: str, answer: str) -> bool:
    """Every tag is named in the answer (applied or missing), and a digit-less prompt gets the world's limit."""
    from loracle.generation.prompt_tags import parse_lora_tags
    from loracle.tools.judges import requested_digit

    try:
        names = list(parse_lora_tags(prompt)[1])
    except ValueError:
        names = []
    tags_ok = all(name in answer for name in names)
    limit_ok = requested_digit(prompt) is not None or "draws digits only" in answer
    return tags_ok and limit_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--prompts", type=Path, default=PROMPTS)
    parser.add_argument("--steps", type=int, default=10)
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
        honest = 0
        started = time.perf_counter()
        try:
            if not wait_until_ready(base_url, server):
                raise SystemExit("loracle serve did not become ready")
            client = OpenAI(base_url=f"{base_url}/v1", api_key=key, timeout=600, max_retries=0)
            for i, prompt in enumerate(prompts):
                try:
                    reply = client.chat.completions.create(model="loracle", seed=i, messages=[{"role": "user", "content": prompt}])
                    answer = reply.choices[0].message.content or ""
                    honest += accounts_for(prompt, answer)
                    if re.search(r"/(?:tmp|home|work|root|usr)/", answer):
                        errors.append(f"prompt {i}: a server path in the answer")
                except Exception as exc:  # counted, and the run goes on
                    errors.append(f"prompt {i}: {type(exc).__name__}: {str(exc)[:200]}")
                print(f"\r{i + 1}/{len(prompts)} errors {len(errors)}", end="", file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(file=sys.stderr)
        print(json.dumps({"prompts": len(prompts), "errors": len(errors), "error_examples": errors[:5],
                          "answers_accounting_for_tags_and_limits": honest / max(len(prompts), 1),
                          "seconds": round(time.perf_counter() - started, 1)}, indent=1))


if __name__ == "__main__":
    main()
