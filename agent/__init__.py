"""The LangGraph agent: plans, retrieves, selects, composes, samples, inspects, retries."""
