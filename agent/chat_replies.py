"""Chat messages that are not image requests, answered briefly with text: no generation, no run slot.

Open WebUI sends its background tasks (a title, tags, follow-up suggestions, search queries, an image prompt)
to the chat model the user talks to; each is a template that starts with "### Task:" and asks for a JSON
object, so the answer is that object, made from the conversation without a model. A plain question about the
catalog ("what adapters do you have for watercolor?") gets the adapters a search finds.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loracle.agent.service import Agent

TASK = re.compile(r"^\s*#{2,3}\s*Task:", re.I)
HISTORY = re.compile(r"<chat_history>(.*?)</chat_history>", re.S)
QUESTION_START = re.compile(r"^\s*(what|which|how|do|does|can|could|are|is|any|list|show|tell)\b", re.I)
ABOUT_CATALOG = re.compile(r"\b(adapters?|loras?|styles?|models?|checkpoints?)\b", re.I)
IMAGE_VERBS = re.compile(r"\b(draw|paint|generate|render|sketch|create|make|picture of|image of|photo of|illustrate)\b", re.I)
FILLER = re.compile(r"\b(what|which|how|many|do|does|can|could|are|is|any|list|show|tell|me|you|your|have|got|there|"
                    r"adapters?|loras?|styles?|models?|checkpoints?|for|of|about|the|a|an|some|available|with|good|use)\b", re.I)


def text_reply(agent: Agent, message: str) -> str | None:
    """The text answer to a message that asks for no image; None for an image request (the agent's turn)."""
    if TASK.match(message):
        return task_reply(message)
    if is_catalog_question(message):
        return catalog_answer(agent, message)
    return None


def is_catalog_question(message: str) -> bool:
    text = message.strip()
    asks = text.endswith("?") or bool(QUESTION_START.match(text))
    return asks and bool(ABOUT_CATALOG.search(text)) and not IMAGE_VERBS.search(text)


def user_lines(message: str) -> list[str]:
    """The user's lines of the conversation an Open WebUI task quotes (`USER: ...`)."""
    found = HISTORY.search(message)
    history = found.group(1) if found else ""
    return [line.split(":", 1)[1].strip() for line in history.splitlines() if line.strip().upper().startswith("USER:")]


def task_reply(message: str) -> str:
    """The JSON object the task asks for, by the key its template names."""
    said = user_lines(message)
    first = said[0] if said else ""
    if '"title"' in message:
        words = re.sub(r"<[^>]*>|[^\w\s'-]", " ", first).split()
        return json.dumps({"title": " ".join(words[:5]).capitalize() or "Image request"})
    if '"tags"' in message:
        return json.dumps({"tags": ["Arts", "Image Generation"]})
    if '"follow_ups"' in message:
        return json.dumps({"follow_ups": []})
    if '"queries"' in message:
        return json.dumps({"queries": []})
    if '"prompt"' in message:
        return json.dumps({"prompt": said[-1] if said else ""})
    if '"text"' in message:
        return json.dumps({"text": ""})
    return "{}"


def catalog_answer(agent: Agent, message: str) -> str:
    """The adapters a search finds for what the question is about."""
    from loracle.agent.catalog import search

    topic = " ".join(FILLER.sub(" ", re.sub(r"[^\w\s'-]", " ", message)).split())
    if not topic:
        return ("I make images: describe one (\"a watercolor fox\") and I pick adapters for it. Ask \"what adapters do "
                "you have for watercolor?\" to see what the catalog offers.")
    hits = search(agent, topic, k=5)
    if not hits:
        return f"I found no adapter for {topic!r} for this base model."
    lines = [f"Adapters for {topic!r}:"]
    lines += [f"- {h.name} [{h.source}:{h.external_id}]" + (f" ({', '.join(h.tags[:4])})" if h.tags else "") for h in hits]
    lines.append("Ask for an image (\"draw ...\") and I pick among them for it.")
    return "\n".join(lines)
