"""The model: the OpenAI-compatible provider, the prompt of one turn, and the tenants'
daily token budget."""
