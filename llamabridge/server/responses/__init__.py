"""The OpenAI Responses API (Codex CLI): schemas, mapping to the engine, output items, stored responses."""
