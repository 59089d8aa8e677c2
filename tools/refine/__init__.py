"""The refiner: concise adapter docs, a category, cleaned trigger words and a recommended weight per adapter.

Modules, one job each: `weights` (weights from card text and example prompts), `text` (boilerplate
stripping and sentence picking), `offline` (the extractive refiner), `llm` (the chat-model refiner
with a fenced prompt and a closed output schema), `job` (the resumable batch over the catalog).
"""
