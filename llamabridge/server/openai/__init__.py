"""The OpenAI Chat Completions API: schemas, mapping to the engine, routes."""
