// Implementation of bridge.h: JSON in, JSON out, around llama.cpp common/chat and common/sampling.
#include "bridge.h"

#include "chat.h"
#include "common.h"
#include "json.h"
#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

using json = common_json;

namespace lb {

struct ChatTemplates {
    common_chat_templates_ptr ptr;
};

struct ChatParser {
    common_chat_parser_params params;
    common_chat_msg           msg;
    std::string               text;
};

ChatTemplates * templates_new(const llama_model * model, const std::string & template_override) {
    auto tmpls = common_chat_templates_init(model, template_override);
    if (!tmpls) {
        throw std::runtime_error("failed to initialise the chat template");
    }
    return new ChatTemplates{std::move(tmpls)};
}

void templates_free(ChatTemplates * tmpls) { delete tmpls; }

std::string templates_source(const ChatTemplates * tmpls) {
    return common_chat_templates_source(tmpls->ptr.get());
}

bool templates_support_thinking(const ChatTemplates * tmpls) {
    return common_chat_templates_support_enable_thinking(tmpls->ptr.get());
}

static common_chat_tool_choice parse_tool_choice(const std::string & choice) {
    if (choice == "auto")     return COMMON_CHAT_TOOL_CHOICE_AUTO;
    if (choice == "required") return COMMON_CHAT_TOOL_CHOICE_REQUIRED;
    if (choice == "none")     return COMMON_CHAT_TOOL_CHOICE_NONE;
    throw std::invalid_argument("tool_choice must be auto, required or none, not " + choice);
}

std::string chat_apply(const ChatTemplates * tmpls, const std::string & inputs_json) {
    const json body = json::parse(inputs_json);

    common_chat_templates_inputs inputs;
    inputs.use_jinja             = true;
    inputs.messages              = common_chat_msgs_parse_oaicompat(body.at("messages"));
    inputs.add_generation_prompt = body.value("add_generation_prompt", true);
    if (body.contains("tools") && !body.at("tools").empty()) {
        inputs.tools = common_chat_tools_parse_oaicompat(body.at("tools"));
    }
    inputs.tool_choice         = parse_tool_choice(body.value("tool_choice", std::string("auto")));
    inputs.parallel_tool_calls = body.value("parallel_tool_calls", true);
    inputs.enable_thinking     = body.value("enable_thinking", true);
    inputs.reasoning_format    = common_reasoning_format_from_name(body.value("reasoning_format", std::string("deepseek")));
    if (body.contains("json_schema") && !body.at("json_schema").is_null()) {
        json schema = body.at("json_schema");
        if (schema.is_object() && schema.empty()) {
            schema["type"] = "object";  // an empty schema means any JSON object
        }
        inputs.json_schema = schema.dump();
    }
    inputs.grammar = body.value("grammar", std::string());
    if (body.contains("chat_template_kwargs")) {
        for (const auto & item : body.at("chat_template_kwargs").items()) {
            inputs.chat_template_kwargs[item.key()] = item.value().dump();
        }
    }

    const common_chat_params params = common_chat_templates_apply(tmpls->ptr.get(), inputs);

    json triggers = json::array();
    for (const auto & trigger : params.grammar_triggers) {
        json t = json::object();
        t["type"]  = (int) trigger.type;
        t["value"] = trigger.value;
        t["token"] = (int) trigger.token;
        triggers.push_back(t);
    }
    json out = json::object();
    out["prompt"]             = params.prompt;
    out["format"]             = (int) params.format;
    out["format_name"]        = std::string(common_chat_format_name(params.format));
    out["grammar"]            = params.grammar;
    out["grammar_lazy"]       = params.grammar_lazy;
    out["grammar_triggers"]   = triggers;
    out["preserved_tokens"]   = params.preserved_tokens;
    out["additional_stops"]   = params.additional_stops;
    out["parser"]             = params.parser;
    out["generation_prompt"]  = params.generation_prompt;
    out["supports_thinking"]  = params.supports_thinking;
    out["thinking_start_tag"] = params.thinking_start_tag;
    out["thinking_end_tags"]  = params.thinking_end_tags;
    return out.dump();
}

ChatParser * parser_new(const std::string & params_json) {
    const json body = json::parse(params_json);
    auto * parser = new ChatParser();
    try {
        parser->params.format            = (common_chat_format) body.value("format", 0);
        parser->params.generation_prompt = body.value("generation_prompt", std::string());
        parser->params.reasoning_format  = common_reasoning_format_from_name(body.value("reasoning_format", std::string("deepseek")));
        parser->params.parse_tool_calls  = body.value("parse_tool_calls", true);
        const std::string definition = body.value("parser", std::string());
        if (!definition.empty()) {
            parser->params.parser.load(definition);
        }
    } catch (...) {
        delete parser;
        throw;
    }
    return parser;
}

void parser_free(ChatParser * parser) { delete parser; }

static json tool_call_json(const common_chat_tool_call & call) {
    json t = json::object();
    t["name"]      = call.name;
    t["arguments"] = call.arguments;
    return t;
}

std::string parser_feed(ChatParser * parser, const std::string & text_added, bool is_partial) {
    parser->text += text_added;
    common_chat_msg next = common_chat_parse(parser->text, is_partial, parser->params);
    json diffs = json::array();
    if (next.empty()) {
        return diffs.dump();
    }
    for (const auto & diff : common_chat_msg_diff::compute_diffs(parser->msg, next)) {
        json d = json::object();
        if (!diff.reasoning_content_delta.empty()) d["reasoning"] = diff.reasoning_content_delta;
        if (!diff.content_delta.empty())           d["content"]   = diff.content_delta;
        if (diff.tool_call_index != std::string::npos) {
            d["tool_index"] = (int) diff.tool_call_index;
            d["tool_name"]  = diff.tool_call_delta.name;
            d["tool_args"]  = diff.tool_call_delta.arguments;
        }
        diffs.push_back(d);
    }
    parser->msg = std::move(next);
    return diffs.dump();
}

std::string parser_message(const ChatParser * parser) {
    json out = json::object();
    out["content"]           = parser->msg.content;
    out["reasoning_content"] = parser->msg.reasoning_content;
    json calls = json::array();
    for (const auto & call : parser->msg.tool_calls) {
        calls.push_back(tool_call_json(call));
    }
    out["tool_calls"] = calls;
    return out.dump();
}

static llama_tokens tokenize_special(const llama_vocab * vocab, const std::string & text) {
    return common_tokenize(vocab, text, false, true);
}

// The largest top_k the shortcut keeps in one pass; larger ones sort the vocabulary as llama.cpp does.
static constexpr int SHORTCUT_MAX_TOP_K = 256;

enum class Shortcut { none, argmax, top_k };

struct Sampler {
    common_sampler *              common;
    Shortcut                      shortcut;
    int                           top_k;
    std::vector<llama_token_data> candidates;
};

// Which shortcut gives the full chain's token: the chain is penalties, DRY, top-n-sigma, top-k, typical,
// top-p, min-p, XTC, temperature, dist. With the stages before top-k doing nothing (and no grammar,
// reasoning budget or bias around the chain), the chain sees only the top-k candidates' order and logits;
// at temperature <= 0 only the likeliest survives every stage (typical, XTC and mirostat are off here).
static Shortcut choose_shortcut(const common_params_sampling & p, const llama_vocab * vocab, bool reasoning_budget) {
    int32_t n_suppress = 0;
    llama_vocab_get_suppress_tokens(vocab, &n_suppress);
    const bool plain = p.mirostat == 0 && !common_grammar_value(p.grammar).size() && !reasoning_budget &&
                       p.logit_bias.empty() && n_suppress == 0 && p.dry_multiplier == 0.0f &&
                       p.top_n_sigma <= 0.0f && p.typ_p >= 1.0f && p.xtc_probability <= 0.0f &&
                       p.dynatemp_range <= 0.0f && p.samplers == common_params_sampling().samplers &&
                       (p.penalty_last_n == 0 ||
                        (p.penalty_repeat == 1.0f && p.penalty_freq == 0.0f && p.penalty_present == 0.0f));
    if (!plain) {
        return Shortcut::none;
    }
    if (p.temp <= 0.0f) {
        return Shortcut::argmax;
    }
    return p.top_k > 0 && p.top_k <= SHORTCUT_MAX_TOP_K ? Shortcut::top_k : Shortcut::none;
}

Sampler * sampler_new(const llama_model * model, const std::string & params_json) {
    const json body = json::parse(params_json);
    const llama_vocab * vocab = llama_model_get_vocab(model);

    common_params_sampling p;
    p.seed            = body.value("seed", (unsigned int) LLAMA_DEFAULT_SEED);
    p.temp            = body.value("temperature", p.temp);
    p.top_k           = body.value("top_k", p.top_k);
    p.top_p           = body.value("top_p", p.top_p);
    p.min_p           = body.value("min_p", p.min_p);
    p.penalty_last_n  = body.value("penalty_last_n", p.penalty_last_n);
    p.penalty_repeat  = body.value("repeat_penalty", p.penalty_repeat);
    p.penalty_freq    = body.value("frequency_penalty", p.penalty_freq);
    p.penalty_present = body.value("presence_penalty", p.penalty_present);
    p.no_perf         = true;
    for (const auto & pair : body.value("logit_bias", json::array())) {     // [[token, bias], ...]
        const llama_token token = pair.at(0).get<llama_token>();
        if (token < 0 || token >= llama_vocab_n_tokens(vocab)) {
            throw std::invalid_argument("logit_bias: token " + std::to_string(token) + " is not in the vocabulary");
        }
        p.logit_bias.push_back({token, pair.at(1).get<float>()});
    }

    // preserved tokens first: a one-token trigger word becomes a token trigger (as llama-server does)
    for (const auto & t : body.value("preserved_tokens", json::array())) {
        auto ids = tokenize_special(vocab, t.get<std::string>());
        if (ids.size() == 1) {
            p.preserved_tokens.insert(ids[0]);
        }
    }
    const std::string grammar = body.value("grammar", std::string());
    if (!grammar.empty()) {
        const std::string kind = body.value("grammar_type", std::string("user"));
        p.grammar = {kind == "tool_calls" ? COMMON_GRAMMAR_TYPE_TOOL_CALLS : COMMON_GRAMMAR_TYPE_USER, grammar};
    }
    p.grammar_lazy = body.value("grammar_lazy", false);
    for (const auto & t : body.value("grammar_triggers", json::array())) {
        common_grammar_trigger trigger;
        trigger.type  = (common_grammar_trigger_type) t.at("type").get<int>();
        trigger.value = t.at("value").get<std::string>();
        trigger.token = t.value("token", (int) LLAMA_TOKEN_NULL);
        if (trigger.type == COMMON_GRAMMAR_TRIGGER_TYPE_WORD) {
            auto ids = tokenize_special(vocab, trigger.value);
            if (ids.size() == 1 && p.preserved_tokens.count(ids[0])) {
                trigger.type  = COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN;
                trigger.token = ids[0];
            }
        }
        p.grammar_triggers.push_back(trigger);
    }
    if (p.grammar_lazy && p.grammar_triggers.empty()) {
        throw std::invalid_argument("a lazy grammar needs at least one trigger");
    }
    p.generation_prompt = body.value("generation_prompt", std::string());

    // reasoning budget (thinking budget_tokens); also needed by lazy grammars to skip <think> blocks
    const std::string start_tag = body.value("thinking_start_tag", std::string());
    const auto end_tags = body.value("thinking_end_tags", json::array());
    if (!start_tag.empty() && !end_tags.empty()) {
        p.reasoning_budget_tokens = body.value("reasoning_budget_tokens", -1);
        p.reasoning_budget_start  = tokenize_special(vocab, start_tag);
        for (const auto & tag : end_tags) {
            const std::string s = tag.get<std::string>();
            if (!s.empty()) {
                p.reasoning_budget_end.push_back(tokenize_special(vocab, s));
            }
        }
        if (!p.reasoning_budget_end.empty()) {
            llama_tokens forced = p.reasoning_budget_end.front();
            const std::string message = body.value("reasoning_budget_message", std::string());
            if (!message.empty()) {
                auto m = tokenize_special(vocab, message);
                forced.insert(forced.begin(), m.begin(), m.end());
            }
            p.reasoning_budget_forced = forced;
        }
    }

    const bool reasoning_budget = !p.reasoning_budget_start.empty() && !p.reasoning_budget_end.empty() &&
                                  (p.grammar_lazy || p.reasoning_budget_tokens >= 0 || p.reasoning_control);
    const Shortcut shortcut = body.value("shortcut", true) ? choose_shortcut(p, vocab, reasoning_budget)
                                                           : Shortcut::none;

    common_sampler * common = common_sampler_init(model, p);
    if (!common) {
        throw std::runtime_error("failed to initialise the sampler (invalid grammar?)");
    }
    return new Sampler{common, shortcut, p.top_k, {}};
}

void sampler_free(Sampler * sampler) {
    if (sampler) {
        common_sampler_free(sampler->common);
        delete sampler;
    }
}

// The maximum of a block of logits, over eight lanes the compiler turns into vector maxima.
static constexpr int BLOCK = 64;

static inline float block_max(const float * x) {
    float lane[8];
    for (int l = 0; l < 8; l++) {
        lane[l] = x[l];
    }
    for (int j = 8; j < BLOCK; j += 8) {
        for (int l = 0; l < 8; l++) {
            lane[l] = x[j + l] > lane[l] ? x[j + l] : lane[l];
        }
    }
    float m = lane[0];
    for (int l = 1; l < 8; l++) {
        m = lane[l] > m ? lane[l] : m;
    }
    return m;
}

// The k largest logits, largest first (as the chain's top-k stage leaves them; among equal logits the
// first), in one pass: a block is looked into only when its maximum beats the k-th best so far.
static void top_k(const float * logits, int n, int k, std::vector<llama_token_data> & out) {
    auto above = [](const llama_token_data & a, const llama_token_data & b) { return a.logit > b.logit; };
    out.clear();
    k = std::min(k, n);
    if (k <= 0) {
        return;
    }
    for (int i = 0; i < k; i++) {
        out.push_back({i, logits[i], 0.0f});
    }
    std::make_heap(out.begin(), out.end(), above);    // the k-th best on top
    float floor = out.front().logit;
    auto consider = [&](int i) {
        if (logits[i] > floor) {
            std::pop_heap(out.begin(), out.end(), above);
            out.back() = {i, logits[i], 0.0f};
            std::push_heap(out.begin(), out.end(), above);
            floor = out.front().logit;
        }
    };
    int i = k;
    for (; i + BLOCK <= n; i += BLOCK) {
        if (block_max(logits + i) > floor) {
            for (int j = 0; j < BLOCK; j++) {
                consider(i + j);
            }
        }
    }
    for (; i < n; i++) {
        consider(i);
    }
    std::stable_sort(out.begin(), out.end(), above);
}

static const float * logits_at(llama_context * ctx, int idx) {
    const float * logits = llama_get_logits_ith(ctx, idx);
    if (logits == nullptr) {
        throw std::invalid_argument("no logits at batch index " + std::to_string(idx));
    }
    return logits;
}

static int n_vocab_of(llama_context * ctx) {
    return llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)));
}

int32_t sampler_sample(Sampler * sampler, llama_context * ctx, int idx, bool accept) {
    if (sampler->shortcut == Shortcut::none) {
        const llama_token token = common_sampler_sample(sampler->common, ctx, idx, false);
        if (accept) {
            common_sampler_accept(sampler->common, token, true);
        }
        return token;
    }
    // A shortcut's chain keeps no state that accepting a token would change (no penalty, grammar or budget).
    auto & candidates = sampler->candidates;
    const bool greedy = sampler->shortcut == Shortcut::argmax;
    top_k(logits_at(ctx, idx), n_vocab_of(ctx), greedy ? 1 : sampler->top_k, candidates);
    if (greedy) {
        return candidates.front().id;
    }
    llama_token_data_array cur_p = {candidates.data(), candidates.size(), -1, true};
    llama_sampler_apply(common_sampler_get(sampler->common), &cur_p);
    if (cur_p.selected < 0) {
        throw std::runtime_error("no token selected");
    }
    return cur_p.data[cur_p.selected].id;
}

float token_logprobs(llama_context * ctx, int idx, int32_t token, int n_top, int32_t * top_tokens,
                     float * top_logprobs) {
    const float * logits = logits_at(ctx, idx);
    const int n_vocab = n_vocab_of(ctx);
    std::vector<llama_token_data> top;
    top_k(logits, n_vocab, std::max(n_top, 1), top);
    const float max = top.front().logit;
    float total = 0.0f;
    for (int i = 0; i < n_vocab; i++) {
        total += expf(logits[i] - max);
    }
    const float log_z = max + logf(total);
    for (int i = 0; i < std::min(n_top, n_vocab); i++) {
        top_tokens[i]   = top[i].id;
        top_logprobs[i] = top[i].logit - log_z;
    }
    return logits[token] - log_z;
}

void sampler_accept(Sampler * sampler, int32_t token) { common_sampler_accept(sampler->common, token, true); }

void sampler_reset(Sampler * sampler) { common_sampler_reset(sampler->common); }

common_sampler * sampler_common(Sampler * sampler) { return sampler->common; }

bool sampler_has_shortcut(const Sampler * sampler) { return sampler->shortcut != Shortcut::none; }

const char * sampler_shortcut(const Sampler * sampler) {
    switch (sampler->shortcut) {
        case Shortcut::argmax: return "argmax";
        case Shortcut::top_k:  return "top_k";
        default:               return "";
    }
}

}  // namespace lb
