// Thin C++ shim over llama.cpp `common` (chat templates, chat parser, sampler setup).
// Every function takes and returns plain strings (JSON) or opaque pointers, so the
// Cython side never touches C++ containers; errors are thrown as std exceptions and
// turned into Python exceptions by Cython's `except +`.
#pragma once

#include <string>
#include <vector>

#include <cstdint>

struct llama_model;
struct llama_context;
struct llama_model_params;

namespace lb {

struct ChatTemplates;
struct ChatParser;
struct Sampler;

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

// A common_sampler configured from JSON (sampling settings, grammar, triggers, ...), with a shortcut
// where its settings allow one: when nothing before the chain's top-k stage reshapes the logits (no
// grammar, reasoning budget, logit bias or penalty), greedy sampling is the argmax of the logits, and
// a top-k chain needs only the k likeliest tokens, picked in one pass instead of sorting the vocabulary.
// The token drawn is the one the full chain draws (same candidates, order and random numbers).
Sampler *   sampler_new(const llama_model * model, const std::string & params_json);
void        sampler_free(Sampler * sampler);
// Samples at batch index `idx` of the context's last decode; `accept` then feeds the token back.
int32_t     sampler_sample(Sampler * sampler, llama_context * ctx, int idx, bool accept);
void        sampler_accept(Sampler * sampler, int32_t token);
void        sampler_reset(Sampler * sampler);
// "argmax", "top_k" or "" (the full chain on the whole vocabulary).
const char * sampler_shortcut(const Sampler * sampler);

// The log-probability of `token` at batch index `idx` (a log-softmax of the raw logits, before any sampler
// stage, as llama-server reports them), and the min(n_top, n_vocab) likeliest tokens' ids and log-probabilities,
// likeliest first, written to the caller's arrays.
float token_logprobs(llama_context * ctx, int idx, int32_t token, int n_top, int32_t * top_tokens,
                     float * top_logprobs);

// -- placement.cpp: devices, fitting, memory

// Every backend device ggml registered, as JSON: [{name, description, type (cpu|gpu|igpu|accel|meta), free, total}].
std::string devices_json();

// Adds an rpc-server's devices (host:port) to ggml's registry; their names as JSON ("RPC0[host:port]", ...).
// llama.cpp's RPC backend aborts the process when the server cannot be reached: probe it first (engine/rpc.py).
std::string rpc_add_server(const std::string & endpoint);

// How one model is loaded: its llama_model_params, fitted to the devices' free memory by llama.cpp's own
// fitting (common/fit.h) when asked. params_json: n_gpu_layers (-1: the fit chooses, else N), devices (names;
// absent: llama.cpp's own choice, [] none), split_mode, tensor_split, main_gpu, fit, n_ctx_min, margin (bytes
// left free per device), main (the context fitted: n_ctx 0 = chosen by the fit), others (contexts counted
// beside it). plan_json says what was chosen: fitted, status, n_gpu_layers, n_ctx, overrides, offload.
struct ModelPlan;
ModelPlan *          plan_new(const std::string & path, const std::string & params_json);
std::string          plan_json(const ModelPlan * plan);
llama_model_params * plan_model_params(ModelPlan * plan);  // kept alive by the plan (its arrays too)
void                 plan_free(ModelPlan * plan);

// What a context and its model hold on each device, as JSON: {memory: {device: {model, context, compute}},
// model_devices: [names]} ("CPU" for host memory).
std::string context_memory_json(const llama_context * ctx);

// -- speculation.cpp: drafts from llama.cpp's common_speculative (the n-gram types and draft-simple, a draft model),
//    verified by a sampler

// A context's drafters, one state per sequence. params_json: types (llama.cpp's names of the n-gram types and
// draft-simple; it tries them in its own order, the draft model last), ngram_size, n_max, n_min, min_hits, p_min.
// ctx_dft: the draft model's context (draft-simple; n_seq sequences, as large as the target's), else null.
// Throws std::invalid_argument for what it cannot use (a draft model whose vocabulary is not the target's).
struct Speculator;
Speculator *             speculator_new(const std::string & params_json, int n_seq, llama_context * ctx_tgt,
                                        llama_context * ctx_dft);
void                     speculator_free(Speculator * s);
int                      speculator_n_max(const Speculator * s);
// The drafters' type names, in the order they are tried (the indices speculator_draft returns).
std::vector<std::string> speculator_types(const Speculator * s);
// A sequence starts generating after `prompt` (the n-gram tables learn it; it is the sequence's history).
void                     speculator_begin(Speculator * s, int seq, const std::vector<int32_t> & prompt);
// A sequence's history grows by `added` (what the target holds since the last call; it only grows while it
// generates) and, if n_max > 0, it asks for a draft of at most n_max tokens to follow id_last at the next
// speculator_draft.
void                     speculator_want(Speculator * s, int seq, const std::vector<int32_t> & added,
                                         int32_t id_last, int n_max);
// The drafts of the sequences that asked (each from the first drafter that has one; the draft model's context
// caught up with their histories first, one batch of tokens a step): per sequence, the index of the drafter
// (-1: no draft) and, in `drafts`, its tokens.
std::vector<int>         speculator_draft(Speculator * s, std::vector<std::vector<int32_t>> & drafts);
// How many of the sequence's last draft were accepted.
void                     speculator_accept(Speculator * s, int seq, int n_accepted);

// The tokens a sampler takes at batch indices idxs (the token before the draft's, then each draft token's):
// each draft token while it is the one sampled, then the token sampled after the last one accepted (1 to
// draft.size() + 1 tokens, each accepted into the sampler, as llama.cpp's common_sampler_sample_and_accept_n).
std::vector<int32_t> sampler_sample_draft(Sampler * sampler, llama_context * ctx, const std::vector<int> & idxs,
                                          const std::vector<int32_t> & draft);

// -- threads.cpp: the CPU backend's compute threads

// Frees the calling thread's OpenMP team (ggml's CPU threads), if OpenMP is loaded and has one: call it on a
// thread that computed (a model's load) and will not compute soon. True when a team was handed back or none
// was held; false without OpenMP.
bool release_compute_threads();

}  // namespace lb
