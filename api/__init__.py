"""HTTP: OpenAI-compatible and native routes, auth, limits and streaming over the agent."""
