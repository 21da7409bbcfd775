// Implementation of bridge.h's speculation: llama.cpp's common_speculative (its n-gram drafters and draft-simple,
// a draft model on its own context) per context, and the verification of a draft by a slot's sampler.
#include "bridge.h"

#include "common.h"
#include "json.h"
#include "sampling.h"
#include "speculative.h"

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using json = common_json;

namespace lb {

// The sampler of bridge.cpp (its common_sampler and the greedy / top-k shortcut); see sampler_sample.
common_sampler * sampler_common(Sampler * sampler);
bool             sampler_has_shortcut(const Sampler * sampler);

// One drafter: a common_speculative of one type, so that its drafts and what was accepted of them are told
// apart from the other types' (llama.cpp's own chain of several types in one common_speculative does not say
// which type drafted; its types' "accept by another type" is a no-op in every type used here).
struct Drafter {
    std::string          name;
    common_speculative * spec  = nullptr;
    bool                 model = false;   // draft-simple: drafts with a draft model on ctx_dft
};

struct Speculator {
    std::vector<Drafter>      drafters;    // in llama.cpp's order of preference: the n-gram types, then the model
    llama_context *           ctx_dft = nullptr;
    llama_batch               batch{};     // ctx_dft's catch-up batch
    int                       n_batch = 0;
    std::vector<llama_tokens> history;     // per sequence: what the target holds, as the drafters read it
    std::vector<llama_tokens> held;        // per sequence: what ctx_dft holds
    std::vector<llama_tokens> drafts;      // per sequence: the result buffer common_speculative_draft fills
    std::vector<int>          want_n;      // per sequence: the longest draft asked for this step (0: none)
    std::vector<int32_t>      want_last;   // per sequence: the sampled token the draft follows
    std::vector<int>          last;        // per sequence: the drafter of its last draft (-1: none)
};

static bool is_ngram(common_speculative_type type) {
    return type == COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE || type == COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K ||
           type == COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K4V || type == COMMON_SPECULATIVE_TYPE_NGRAM_MOD;
}

static size_t common_prefix(const llama_tokens & a, const llama_tokens & b) {
    size_t n = 0;
    while (n < a.size() && n < b.size() && a[n] == b[n]) {
        n++;
    }
    return n;
}

Speculator * speculator_new(const std::string & params_json, int n_seq, llama_context * ctx_tgt,
                            llama_context * ctx_dft) {
    const json body = json::parse(params_json);
    common_params_speculative p;
    std::vector<std::string> names = body.value("types", std::vector<std::string>{});
    const auto types = common_speculative_types_from_names(names);
    for (const auto type : types) {
        if (type == COMMON_SPECULATIVE_TYPE_NONE) {
            throw std::invalid_argument("unknown speculation type in [" + string_join(names, ", ") + "]; known: " +
                                        common_speculative_all_types_str());
        }
        if (!is_ngram(type) && type != COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE) {
            throw std::invalid_argument("speculation type '" + common_speculative_type_to_str(type) +
                                        "' is not supported here (the n-gram types: ngram-simple, ngram-map-k, "
                                        "ngram-map-k4v, ngram-mod; and draft-simple, with a draft model)");
        }
        if (type == COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE && ctx_dft == nullptr) {
            throw std::invalid_argument("draft-simple needs a draft model");
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
        p.draft.n_max = n;
    }
    if (body.contains("n_min")) {                 // a shorter draft is not proposed (ngram-mod, the draft model)
        p.ngram_mod.n_min = p.draft.n_min = body.at("n_min").get<int>();
    }
    if (body.contains("min_hits")) {              // times an n-gram was seen before it drafts (ngram-map-*)
        const int n = body.at("min_hits").get<int>();
        p.ngram_simple.min_hits = p.ngram_map_k.min_hits = p.ngram_map_k4v.min_hits = (uint16_t) n;
    }
    if (body.contains("p_min")) {                 // the draft model stops where its top token is less likely
        p.draft.p_min = body.at("p_min").get<float>();
    }
    p.draft.ctx_tgt = ctx_tgt;
    p.draft.ctx_dft = ctx_dft;

    std::unique_ptr<Speculator, void (*)(Speculator *)> s(new Speculator, speculator_free);
    s->history.resize(n_seq);
    s->held.resize(n_seq);
    s->drafts.resize(n_seq);
    s->want_n.assign(n_seq, 0);
    s->want_last.assign(n_seq, LLAMA_TOKEN_NULL);
    s->last.assign(n_seq, -1);
    // llama.cpp's order of preference (common_speculative_init): the first type with a draft drafts
    const common_speculative_type order[] = {
        COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE, COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K, COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K4V,
        COMMON_SPECULATIVE_TYPE_NGRAM_MOD, COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE,
    };
    for (const auto type : order) {
        if (std::find(types.begin(), types.end(), type) == types.end()) {
            continue;
        }
        common_params_speculative one = p;
        one.types = {type};
        Drafter d;
        d.name  = common_speculative_type_to_str(type);
        d.model = type == COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE;
        try {
            d.spec = common_speculative_init(one, (uint32_t) n_seq);
        } catch (const std::runtime_error & e) {    // e.g. the draft model's vocabulary is not the target's
            throw std::invalid_argument(d.name + ": " + e.what());
        }
        if (d.spec == nullptr) {
            throw std::runtime_error("llama.cpp initialised no " + d.name + " drafter");
        }
        s->drafters.push_back(d);
    }
    if (s->drafters.empty()) {
        throw std::invalid_argument("no speculation type given");
    }
    if (ctx_dft != nullptr) {
        s->ctx_dft = ctx_dft;
        s->n_batch = (int) llama_n_batch(ctx_dft);
        s->batch   = llama_batch_init(s->n_batch, 0, 1);
    }
    return s.release();
}

void speculator_free(Speculator * s) {
    if (s) {
        for (auto & d : s->drafters) {
            common_speculative_free(d.spec);
        }
        if (s->ctx_dft != nullptr) {
            llama_batch_free(s->batch);
        }
        delete s;
    }
}

int speculator_n_max(const Speculator * s) {
    int n = 0;
    for (const auto & d : s->drafters) {
        n = std::max(n, (int) common_speculative_n_max(d.spec));
    }
    return n;
}

std::vector<std::string> speculator_types(const Speculator * s) {
    std::vector<std::string> names;
    for (const auto & d : s->drafters) {
        names.push_back(d.name);
    }
    return names;
}

void speculator_begin(Speculator * s, int seq, const std::vector<int32_t> & prompt) {
    s->history.at(seq) = prompt;
    s->want_n.at(seq) = 0;
    for (auto & d : s->drafters) {
        common_speculative_begin(d.spec, seq, prompt);
    }
}

void speculator_want(Speculator * s, int seq, const std::vector<int32_t> & added, int32_t id_last, int n_max) {
    auto & tokens = s->history.at(seq);
    tokens.insert(tokens.end(), added.begin(), added.end());
    s->want_n.at(seq)    = std::max(n_max, 0);
    s->want_last.at(seq) = id_last;
}

// What ctx_dft holds of a sequence, after a decode that may have failed: the tokens it was to hold, up to its
// last position there.
static void resync(Speculator * s, int seq, const llama_tokens & expected) {
    const llama_pos pos_max = llama_memory_seq_pos_max(llama_get_memory(s->ctx_dft), seq);
    auto & held = s->held[seq];
    held.assign(expected.begin(), expected.begin() + std::min(expected.size(), (size_t) (pos_max + 1)));
}

// Brings what ctx_dft holds of each sequence to its history: the prefix it shares kept (or a longer one another
// sequence holds copied), the rest removed, what is missing decoded, one batch of tokens at most per step (a long
// prompt catches up over several steps). Returns the sequences that are caught up.
static std::vector<int> catch_up(Speculator * s, const std::vector<int> & seqs) {
    llama_memory_t mem = llama_get_memory(s->ctx_dft);
    const int n_seq = (int) s->history.size();
    for (const int seq : seqs) {
        const auto & history = s->history[seq];
        auto & held = s->held[seq];
        size_t keep = common_prefix(held, history);
        int from = -1;
        for (int other = 0; other < n_seq; other++) {
            const size_t n = other == seq ? 0 : common_prefix(s->held[other], history);
            if (n > keep) {
                keep = n;
                from = other;
            }
        }
        if (from >= 0) {             // as the target's slots share a prefix: a copy, not a decode
            llama_memory_seq_rm(mem, seq, -1, -1);
            llama_memory_seq_cp(mem, from, seq, 0, (llama_pos) keep);
            held.assign(history.begin(), history.begin() + keep);
        } else if (keep < held.size()) {
            llama_memory_seq_rm(mem, seq, (llama_pos) keep, -1);
            held.resize(keep);
        }
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        llama_batch & batch = s->batch;
        batch.n_tokens = 0;
        for (const int seq : seqs) {
            const auto & history = s->history[seq];
            for (size_t i = s->held[seq].size(); i < history.size() && batch.n_tokens < s->n_batch; i++) {
                const int k = batch.n_tokens++;
                batch.token[k]     = history[i];
                batch.pos[k]       = (llama_pos) i;
                batch.n_seq_id[k]  = 1;
                batch.seq_id[k][0] = seq;
                batch.logits[k]    = false;
            }
        }
        if (s->batch.n_tokens == 0) {
            break;
        }
        const int ret = llama_decode(s->ctx_dft, s->batch);
        for (const int seq : seqs) {
            resync(s, seq, s->history[seq]);
        }
        if (ret != 1) {              // done (0), or failed: the sequences not caught up draft no more this step
            break;
        }
        // no room in ctx_dft's KV: what it holds for the sequences not drafting now goes (the target's KV may
        // have dropped them already), then once more
        for (int other = 0; other < n_seq; other++) {
            if (std::find(seqs.begin(), seqs.end(), other) == seqs.end() && !s->held[other].empty()) {
                llama_memory_seq_rm(mem, other, -1, -1);
                s->held[other].clear();
            }
        }
    }
    std::vector<int> ready;
    for (const int seq : seqs) {
        if (s->held[seq].size() == s->history[seq].size()) {
            ready.push_back(seq);
        }
    }
    return ready;
}

std::vector<int> speculator_draft(Speculator * s, std::vector<std::vector<int32_t>> & drafts) {
    const int n_seq = (int) s->history.size();
    std::vector<int> drafter(n_seq, -1);
    drafts.assign(n_seq, {});
    std::vector<int> waiting;
    for (int seq = 0; seq < n_seq; seq++) {
        if (s->want_n[seq] > 0) {
            waiting.push_back(seq);
        }
    }
    for (int i = 0; i < (int) s->drafters.size() && !waiting.empty(); i++) {
        auto & d = s->drafters[i];
        const std::vector<int> asked = d.model ? catch_up(s, waiting) : waiting;
        for (const int seq : asked) {
            s->drafts[seq].clear();
            common_speculative_get_draft_params(d.spec, seq) = {
                /* .drafting = */ true,
                /* .n_max    = */ s->want_n[seq],
                /* .pos0     = */ (llama_pos) s->history[seq].size(),
                /* .id_last  = */ s->want_last[seq],
                /* .prompt   = */ &s->history[seq],
                /* .result   = */ &s->drafts[seq],
            };
        }
        if (!asked.empty()) {
            common_speculative_draft(d.spec);
        }
        std::vector<int> still;
        for (const int seq : waiting) {
            const bool was_asked = std::find(asked.begin(), asked.end(), seq) != asked.end();
            auto & result = s->drafts[seq];
            if (was_asked && d.model) {      // ctx_dft now holds id_last and the draft's tokens but its last
                llama_tokens expected = s->history[seq];
                expected.push_back(s->want_last[seq]);
                expected.insert(expected.end(), result.begin(), result.end());
                resync(s, seq, expected);
            }
            if (was_asked && !result.empty()) {
                if ((int) result.size() > s->want_n[seq]) {
                    result.resize(s->want_n[seq]);
                }
                drafter[seq] = i;
                s->last[seq] = i;
                drafts[seq]  = result;
            } else {
                still.push_back(seq);
            }
        }
        waiting = still;
    }
    std::fill(s->want_n.begin(), s->want_n.end(), 0);
    return drafter;
}

void speculator_accept(Speculator * s, int seq, int n_accepted) {
    const int i = s->last.at(seq);
    if (i >= 0) {
        common_speculative_accept(s->drafters[i].spec, seq, (uint16_t) n_accepted);
        s->last[seq] = -1;
    }
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
