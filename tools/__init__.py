"""The tools the agent calls: typed functions over db/ and generation/, plus LangChain tool wrappers."""
