"""A local OpenAI-compatible chat server for tests: the real `ChatOpenAI` client talks HTTP to it.

Modes: "select" answers with a SubmitSelection tool call that picks the first candidate of every task
(plus `extra_ids`, to test invented ids), "malformed" sends broken tool arguments, "text" answers
without a tool call, "slow" sleeps past the client's timeout.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubLLM:
    def __init__(self) -> None:
        self.mode = "select"
        self.extra_ids: list[int] = []
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> StubLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()

    def answer(self, request: dict) -> dict:
        user = next(m["content"] for m in request["messages"] if m["role"] == "user")
        tasks = []
        for task, block in re.findall(r"Task: (.*?)\n<catalog>\n(.*?)\n</catalog>", user, flags=re.S):
            rows = json.loads(block)
            tasks.append({"task": task, "adapters": [{"id": r["id"], "reason": "fits"} for r in rows[:1]]})
        if tasks and self.extra_ids:
            tasks[0]["adapters"].extend({"id": i, "reason": "invented"} for i in self.extra_ids)
        arguments = json.dumps({"tasks": tasks, "negative": ""})
        if self.mode == "malformed":
            arguments = '{"tasks": [{"task": 5, "adapters": "nope"'
        message: dict = {"role": "assistant", "content": None,
                         "tool_calls": [{"id": "call_1", "type": "function",
                                         "function": {"name": "SubmitSelection", "arguments": arguments}}]}
        if self.mode == "text":
            message = {"role": "assistant", "content": "I think the watercolor one is nice."}
        return {"id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()), "model": request["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                if stub.mode == "slow":
                    time.sleep(3)
                payload = json.dumps(stub.answer(body)).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except BrokenPipeError:  # the client gave up (the "slow" mode's timeout)
                    pass

        return Handler
