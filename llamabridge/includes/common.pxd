# C++ declarations from llama.cpp's common/sampling.h: the per-token sampler calls _core makes.
from .llama cimport llama_context, llama_token


cdef extern from "sampling.h" nogil:
    cdef cppclass common_sampler:
        pass

    void common_sampler_free(common_sampler * gsmpl)
    void common_sampler_accept(common_sampler * gsmpl, llama_token token, bint is_generated)
    void common_sampler_reset(common_sampler * gsmpl)
    llama_token common_sampler_sample(common_sampler * gsmpl, llama_context * ctx, int idx, bint grammar_first) except +
