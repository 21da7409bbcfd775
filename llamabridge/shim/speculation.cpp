// Implementation of bridge.h's speculation: llama.cpp's common_speculative (its n-gram drafters) per context,
// and the verification of a draft by a slot's sampler.
#include "bridge.h"

#include "common.h"
#include "json.h"
#include "sampling.h"
#include "speculative.h"

#include <stdexcept>
#include <string>
#include <vector>

using json = common_json;

namespace lb {

// The sampler of bridge.cpp (its common_sampler and the greedy / top-k shortcut); see sampler_sample.
common_sampler * sampler_common(Sampler * sampler);
bool             sampler_has_shortcut(const Sampler * sampler);

struct Speculator {
    common_params_speculative params;
    common_speculative *      spec = nullptr;
    std::vector<llama_tokens> history;   // per sequence: what it holds, as the drafters read it
    std::vector<llama_tokens> drafts;    // per sequence: the result buffer common_speculative_draft fills
};

Speculator * speculator_new(const std::string & params_json, int n_seq) {
    const json body = json::parse(params_json);
    common_params_speculative p;
    std::vector<std::string> names = body.value("types", std::vector<std::string>{});
    p.types = common_speculative_types_from_names(names);
    for (const auto type : p.types) {
        if (type == COMMON_SPECULATIVE_TYPE_NONE) {
            throw std::invalid_argument("unknown speculation type in [" + string_join(names, ", ") + "]; known: " +
                                        common_speculative_all_types_str());
        }
        if (type != COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE && type != COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K &&
            type != COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K4V && type != COMMON_SPECULATIVE_TYPE_NGRAM_MOD) {
            throw std::invalid_argument("speculation type '" + common_speculative_type_to_str(type) +
                                        "' is not supported here (the n-gram types are: ngram-simple, ngram-map-k, "
                                        "ngram-map-k4v, ngram-mod)");
        }
    }
    if (body.contains("ngram_size")) {            // the n-gram looked up (the key), every n-gram type
        const int n = body.at("ngram_size").get<int>();
        p.ngram_simple.size_n = p.ngram_map_k.size_n = p.ngram_map_k4v.size_n = (uint16_t) n;
        p.ngram_mod.n_match = n;
    }
    if (body.contains("n_max")) {                 // the most tokens one draft proposes
        const int n = body.at("n_max").get<int>();
        p.ngram_simple.size_m = p.ngram_map_k.size_m = p.ngram_map_k4v.size_m = (uint16_t) n;
        p.ngram_mod.n_max = n;
        p.ngram_mod.n_min = std::min(p.ngram_mod.n_min, n);
    }
    if (body.contains("n_min")) {                 // a shorter draft is not proposed (ngram-mod)
        p.ngram_mod.n_min = body.at("n_min").get<int>();
    }
    if (body.contains("min_hits")) {              // times an n-gram was seen before it drafts (ngram-map-*)
        const int n = body.at("min_hits").get<int>();
        p.ngram_simple.min_hits = p.ngram_map_k.min_hits = p.ngram_map_k4v.min_hits = (uint16_t) n;
    }
    auto * s = new Speculator{p, nullptr, std::vector<llama_tokens>(n_seq), std::vector<llama_tokens>(n_seq)};
    s->spec = common_speculative_init(s->params, (uint32_t) n_seq);
    if (s->spec == nullptr) {
        delete s;
        throw std::runtime_error("llama.cpp initialised no speculative implementation");
    }
    return s;
}

void speculator_free(Speculator * s) {
    if (s) {
        common_speculative_free(s->spec);
        delete s;
    }
}

int speculator_n_max(const Speculator * s) { return common_speculative_n_max(s->spec); }

void speculator_begin(Speculator * s, int seq, const std::vector<int32_t> & prompt) {
    s->history.at(seq) = prompt;
    common_speculative_begin(s->spec, seq, prompt);
}

std::vector<int32_t> speculator_draft(Speculator * s, int seq, const std::vector<int32_t> & added, int32_t id_last,
                                      int n_max) {
    auto & tokens = s->history.at(seq);
    tokens.insert(tokens.end(), added.begin(), added.end());
    auto & result = s->drafts.at(seq);
    result.clear();
    if (n_max <= 0) {
        return result;
    }
    common_speculative_get_draft_params(s->spec, seq) = {
        /* .drafting = */ true,
        /* .n_max    = */ n_max,
        /* .pos0     = */ (llama_pos) tokens.size(),
        /* .id_last  = */ id_last,
        /* .prompt   = */ &tokens,
        /* .result   = */ &result,
    };
    common_speculative_draft(s->spec);
    if ((int) result.size() > n_max) {
        result.resize(n_max);
    }
    return result;
}

void speculator_accept(Speculator * s, int seq, int n_accepted) {
    common_speculative_accept(s->spec, seq, (uint16_t) n_accepted);
}

std::vector<int32_t> sampler_sample_draft(Sampler * sampler, llama_context * ctx, const std::vector<int> & idxs,
                                          const std::vector<int32_t> & draft) {
    if (idxs.size() != draft.size() + 1) {
        throw std::invalid_argument("a draft of n tokens is verified at n + 1 batch indices");
    }
    if (!sampler_has_shortcut(sampler)) {
        return common_sampler_sample_and_accept_n(sampler_common(sampler), ctx, idxs, draft);
    }
    // the shortcut's own token at each index, with llama.cpp's rule (common_sampler_sample_and_accept_n)
    const llama_vocab * vocab = llama_model_get_vocab(llama_get_model(ctx));
    std::vector<int32_t> result;
    size_t i = 0;
    for (; i < draft.size(); i++) {
        const llama_token id = sampler_sample(sampler, ctx, idxs[i], true);
        result.push_back(id);
        if (draft[i] != id || (llama_vocab_is_eog(vocab, id) && i + 1 < draft.size())) {
            break;
        }
    }
    if (i == draft.size()) {
        result.push_back(sampler_sample(sampler, ctx, idxs[i], true));
    }
    return result;
}

}  // namespace lb
