# Declarations of llamabridge/shim/bridge.h: the C++ shim around llama.cpp common/chat.
from libc.stdint cimport int32_t
from libcpp cimport bool as cbool
from libcpp.string cimport string
from libcpp.vector cimport vector

from .llama cimport llama_context, llama_model, llama_model_params, llama_token


cdef extern from "bridge.h" namespace "lb" nogil:
    cdef cppclass ChatTemplates:
        pass
    cdef cppclass ChatParser:
        pass
    cdef cppclass Sampler:
        pass
    cdef cppclass ModelPlan:
        pass
    cdef cppclass Speculator:
        pass

    ChatTemplates * templates_new(const llama_model * model, const string & template_override) except +
    void templates_free(ChatTemplates * tmpls)
    string templates_source(const ChatTemplates * tmpls) except +
    cbool templates_support_thinking(const ChatTemplates * tmpls) except +
    string chat_apply(const ChatTemplates * tmpls, const string & inputs_json) except +

    ChatParser * parser_new(const string & params_json) except +
    void parser_free(ChatParser * parser)
    string parser_feed(ChatParser * parser, const string & text_added, cbool is_partial) except +
    string parser_message(const ChatParser * parser) except +

    Sampler * sampler_new(const llama_model * model, const string & params_json) except +
    void sampler_free(Sampler * sampler)
    llama_token sampler_sample(Sampler * sampler, llama_context * ctx, int idx, cbool accept) except +
    void sampler_accept(Sampler * sampler, llama_token token) except +
    void sampler_reset(Sampler * sampler) except +
    const char * sampler_shortcut(const Sampler * sampler)
    float token_logprobs(llama_context * ctx, int idx, int32_t token, int n_top, int32_t * top_tokens,
                         float * top_logprobs) except +

    string devices_json() except +
    string rpc_add_server(const string & endpoint) except +
    ModelPlan * plan_new(const string & path, const string & params_json) except +
    string plan_json(const ModelPlan * plan) except +
    llama_model_params * plan_model_params(ModelPlan * plan)
    void plan_free(ModelPlan * plan)
    string context_memory_json(const llama_context * ctx) except +
    cbool release_compute_threads()

    Speculator * speculator_new(const string & params_json, int n_seq, llama_context * ctx_tgt,
                                llama_context * ctx_dft) except +
    void speculator_free(Speculator * s)
    int speculator_n_max(const Speculator * s)
    vector[string] speculator_types(const Speculator * s)
    void speculator_begin(Speculator * s, int seq, const vector[int32_t] & prompt) except +
    void speculator_want(Speculator * s, int seq, const vector[int32_t] & added, int32_t id_last,
                         int n_max) except +
    vector[int] speculator_draft(Speculator * s, vector[vector[int32_t]] & drafts) except +
    void speculator_accept(Speculator * s, int seq, int n_accepted) except +
    vector[int32_t] sampler_sample_draft(Sampler * sampler, llama_context * ctx, const vector[int] & idxs,
                                         const vector[int32_t] & draft) except +
