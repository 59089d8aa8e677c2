"""The chat-model factory: one place that turns settings into a LangChain chat model, or None.

Everything that talks to an LLM (the refiner today, the agent graph later) gets its model here, so
model name, temperature, timeout and retries are configured once. `OPENAI_API_KEY` and
`OPENAI_BASE_URL` are read by langchain-openai itself, so any OpenAI-compatible server works.
None means no model is configured: callers use their offline path and say so.
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from loracle.agent.settings import Settings


def make_chat_model(
    settings: Settings,
    *,
    temperature: float = 0.0,
    timeout: float | None = None,
    max_retries: int = 2,
    model: str | None = None,
) -> BaseChatModel | None:
    """A `ChatOpenAI` for `settings.llm_model` (or `model`), or None when no model is configured."""
    name = (model or settings.llm_model or "").strip()
    if not name:
        return None
    if not 0.0 <= temperature <= 2.0:
        raise ValueError(f"temperature must be within 0..2, got {temperature}")
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=name,
        temperature=temperature,
        timeout=timeout if timeout is not None else settings.llm_timeout_s,
        max_retries=max_retries,
    )
