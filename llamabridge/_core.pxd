# Layouts of the cdef classes in _core.pyx: each owns exactly one native handle.
from .includes.bridge cimport (
    ChatParser as CChatParser, ChatTemplates, ModelPlan, Sampler as CSampler, Speculator as CSpeculator,
)
from .includes.llama cimport (
    llama_batch, llama_context, llama_model, llama_pos, llama_seq_id, llama_token, llama_vocab,
)


cdef class Model:
    cdef llama_model * _model
    cdef const llama_vocab * _vocab
    cdef ChatTemplates * _templates
    cdef ModelPlan * _plan          # how the weights were placed (its arrays live as long as the model)
    cdef readonly str path
    cdef readonly object placement  # what the plan chose (a dict)
    cdef int _users             # open contexts and samplers: the weights stay until the last closes
    cdef bint _closed
    cdef int _ensure_alive(self) except -1
    cdef _free(self)
    cdef _release(self)


cdef class Context:
    cdef llama_context * _ctx
    cdef llama_batch _batch
    cdef int _batch_capacity
    cdef int _batch_pending
    cdef int _abort
    cdef readonly Model model
    cdef readonly str flash_attn     # "on" / "off" as resolved for the devices ("auto" if llama.cpp did not say)
    cdef int _ensure_alive(self) except -1
    cdef _free(self)
    cdef inline void _put(self, int i, llama_token token, llama_pos pos, llama_seq_id seq_id, bint logits)
    cdef int _decode_batch(self, int n_tokens, const int * wake=*, int n_wake=*) except -1


cdef class Sampler:
    cdef CSampler * _sampler
    cdef readonly Model model
    cdef int _ensure_alive(self) except -1
    cdef llama_token _sample(self, Context ctx, int idx, bint accept) except? -2


cdef class ChatParser:
    cdef CChatParser * _parser


cdef class Speculator:
    cdef CSpeculator * _spec
    cdef readonly int n_seq
    cdef readonly tuple types
    cdef tuple _contexts
    cdef int _check(self, int seq) except -1
