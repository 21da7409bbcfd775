# Declarations of llamabridge/shim/bridge.h: the C++ shim around llama.cpp common/chat.
from libcpp cimport bool as cbool
from libcpp.string cimport string

from .common cimport common_sampler
from .llama cimport llama_model


cdef extern from "bridge.h" namespace "lb" nogil:
    cdef cppclass ChatTemplates:
        pass
    cdef cppclass ChatParser:
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

    common_sampler * sampler_new(const llama_model * model, const string & params_json) except +
