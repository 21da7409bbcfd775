"""The Anthropic Messages API: schemas, mapping to the engine, routes."""
