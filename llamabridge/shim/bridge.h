// Thin C++ shim over llama.cpp `common` (chat templates, chat parser, sampler setup).
// Every function takes and returns plain strings (JSON) or opaque pointers, so the
// Cython side never touches C++ containers; errors are thrown as std exceptions and
// turned into Python exceptions by Cython's `except +`.
#pragma once

#include <string>

struct llama_model;
struct common_sampler;

namespace lb {

struct ChatTemplates;
struct ChatParser;

// Chat templates of a model (or the given Jinja source, when not empty).
ChatTemplates * templates_new(const llama_model * model, const std::string & template_override);
void            templates_free(ChatTemplates * tmpls);
std::string     templates_source(const ChatTemplates * tmpls);
bool            templates_support_thinking(const ChatTemplates * tmpls);

// Renders a chat (OpenAI-shaped messages and tools, as JSON) with the model's template.
// Returns JSON: prompt, grammar, grammar_lazy, grammar_triggers, preserved_tokens,
// additional_stops, parser, generation_prompt, format, thinking tags.
std::string chat_apply(const ChatTemplates * tmpls, const std::string & inputs_json);

// Incremental parser of model output into content / reasoning / tool calls.
ChatParser * parser_new(const std::string & params_json);
void         parser_free(ChatParser * parser);
// Appends generated text, re-parses, and returns the diffs since the last call as JSON.
std::string  parser_feed(ChatParser * parser, const std::string & text_added, bool is_partial);
// The message parsed so far, as JSON (content, reasoning_content, tool_calls).
std::string  parser_message(const ChatParser * parser);

// A common_sampler configured from JSON (sampling settings, grammar, triggers, ...).
common_sampler * sampler_new(const llama_model * model, const std::string & params_json);

}  // namespace lb
