"""Ollama's native API: schemas, mapping to the engine, NDJSON stream, model listing."""
