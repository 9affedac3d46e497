"""LLM access: one async OpenAI-compatible client, and the serving backends behind it."""
