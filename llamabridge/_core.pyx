# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: language = c++
"""Native boundary: llama.cpp models, contexts, samplers and chat templates/parsers.

Every C handle is owned by one cdef class (`close()` is idempotent, `__dealloc__` frees
what is still open). Decoding and sampling run with the GIL released; return codes are
checked once the GIL is back and raised as the typed errors of `llamabridge.errors`.
"""

import json
import logging
import os
import threading
import warnings

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, strlen, strstr
from posix.unistd cimport write
from libcpp cimport bool as cbool
from libcpp.string cimport string
from libcpp.vector cimport vector

from .includes cimport bridge
from .includes.llama cimport *

from .errors import DecodeError, InvalidRequestError, ModelLoadError, TemplateError, decode_error

_log = logging.getLogger("llamabridge.llama")

cdef extern from *:
    """
    #ifndef LLAMABRIDGE_LLAMA_CPP_COMMIT
    #define LLAMABRIDGE_LLAMA_CPP_COMMIT "unknown"
    #endif
    """
    const char * LLAMABRIDGE_LLAMA_CPP_COMMIT

# the llama.cpp commit this extension was built against (from the vendored source's stamp or git)
LLAMA_CPP_COMMIT = LLAMABRIDGE_LLAMA_CPP_COMMIT.decode()

_FLASH_ATTN = {"auto": LLAMA_FLASH_ATTN_TYPE_AUTO, "on": LLAMA_FLASH_ATTN_TYPE_ENABLED,
               "off": LLAMA_FLASH_ATTN_TYPE_DISABLED}
# ggml_type values for the KV cache types a user may ask for
_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}


cdef enum:
    _MAX_WAKE = 64       # wake fds written without the GIL per decode; more are written before it

# ---------------------------------------------------------------- logging

cdef int _log_min_level = GGML_LOG_LEVEL_WARN
cdef int _log_last_level = GGML_LOG_LEVEL_INFO


# what llama.cpp said the context being created resolved flash_attn "auto" to: its INFO line "Flash Attention
# enabled" or its WARN line "Flash Attention not supported, set to disabled" (1 / 0; -1: nothing yet; -2: no
# context is being created, so log lines are not searched)
cdef int _flash_attn_said = -2


cdef void _log_callback(ggml_log_level level, const char * text, void * data) noexcept nogil:
    # Fires inside llama_decode too: filter without the GIL, take it only for what is logged.
    global _log_last_level, _flash_attn_said
    if _flash_attn_said == -1 and strstr(text, "Flash Attention") != NULL:
        _flash_attn_said = 0 if strstr(text, "not supported") != NULL else 1
    cdef int effective = _log_last_level if level == GGML_LOG_LEVEL_CONT else level
    if level != GGML_LOG_LEVEL_CONT:
        _log_last_level = level
    if effective < _log_min_level:
        return
    with gil:
        _emit_log(effective, text)


cdef void _emit_log(int level, const char * text) noexcept with gil:
    try:
        message = text.decode("utf-8", "replace").rstrip()
        if message:
            py_level = {GGML_LOG_LEVEL_DEBUG: logging.DEBUG, GGML_LOG_LEVEL_INFO: logging.INFO,
                        GGML_LOG_LEVEL_WARN: logging.WARNING}.get(level, logging.ERROR)
            _log.log(py_level, "%s", message)
    except Exception:
        pass


def set_log_level(str level):
    """Which llama.cpp log lines reach Python logging: debug, info, warn or error."""
    global _log_min_level
    _log_min_level = {"debug": GGML_LOG_LEVEL_DEBUG, "info": GGML_LOG_LEVEL_INFO,
                      "warn": GGML_LOG_LEVEL_WARN, "error": GGML_LOG_LEVEL_ERROR}[level]


# ---------------------------------------------------------------- when llama.cpp ends the process

# llama.cpp ends the process on errors it cannot go on from (GGML_ABORT): among them an rpc-server that went
# away while in use. Instead of its default (the message, then a debugger's backtrace), one line says what
# happened and, when rpc-servers are in use, which; then the process ends as llama.cpp meant (SIGABRT).
cdef char _abort_note[1024]


cdef void _on_abort(const char * message) noexcept nogil:
    cdef const char * head = b"llamabridge: llama.cpp ended the process: "
    write(2, head, strlen(head))
    write(2, message, strlen(message))
    write(2, _abort_note, strlen(_abort_note))
    write(2, b"\n", 1)
    with gil:
        _run_abort_hook(message)


_abort_hook = None


cdef void _run_abort_hook(const char * message) noexcept:
    # in the thread llama.cpp aborts in (ggml-rpc's dispatcher, a decode thread): the server's last word to
    # the requests it holds before the process ends
    if _abort_hook is None:
        return
    try:
        _abort_hook(message.decode("utf-8", "replace"))
    except BaseException:
        pass


def set_abort_hook(hook):
    """`hook(message)` runs, with the GIL, in the thread where llama.cpp ends the process, before it does
    (after the line above is written); None removes it. What it raises is ignored."""
    global _abort_hook
    _abort_hook = hook


def set_abort_note(str note):
    """Text added to the line written when llama.cpp ends the process (e.g. the rpc-servers in use)."""
    cdef bytes raw = _utf8(note)[:1000]
    memcpy(_abort_note, <const char *> raw, len(raw))
    _abort_note[len(raw)] = 0


cdef bint _backend_ready = False
_backend_lock = threading.Lock()


cdef _init_backend():
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_log_set(_log_callback, NULL)
            ggml_set_abort_callback(_on_abort)
            set_log_level(os.environ.get("LLAMABRIDGE_LLAMA_LOG", "warn"))
            llama_backend_init()
            _backend_ready = True


cdef cbool _progress_callback(float progress, void * data) noexcept with gil:
    # called by llama_model_load_from_file (which runs without the GIL) as tensors load
    try:
        (<object> data)(progress)
    except Exception:
        pass
    return True


cdef cbool _abort_callback(void * data) noexcept nogil:
    return (<int *> data)[0] != 0


cdef inline bytes _utf8(str s):
    return s.encode("utf-8")


# ---------------------------------------------------------------- devices

def devices():
    """ggml's backend devices: [{name, description, type (cpu | gpu | igpu | accel | meta), free, total}]
    (bytes of memory; a CPU device reports the system's)."""
    _init_backend()
    return json.loads(bridge.devices_json().decode())


def rpc_add_server(str endpoint):
    """Add an rpc-server's devices (`host:port`) to ggml's registry: their names. llama.cpp aborts the process
    when the server cannot be reached, so callers probe it first (engine/rpc.py)."""
    _init_backend()
    cdef string e = _utf8(endpoint)
    cdef string names
    with nogil:
        names = bridge.rpc_add_server(e)
    return json.loads(names.decode())


def release_compute_threads():
    """Hand back the calling thread's CPU compute threads (its OpenMP team) until it computes again: a cache's
    worker going idle calls it (shim/threads.cpp says why). False where ggml runs without OpenMP."""
    return bridge.release_compute_threads()


# ---------------------------------------------------------------- model

cdef class Model:
    """A GGUF model loaded once; contexts opened on it share its weights."""

    def __cinit__(self):
        self._model = NULL
        self._vocab = NULL
        self._templates = NULL
        self._plan = NULL
        self._users = 0
        self._closed = False

    def __init__(self, str path, *, placement=None, bint use_mmap=True, bint use_mlock=False,
                 bint vocab_only=False, str chat_template=None, progress=None):
        """`placement`: where the weights go and whether llama.cpp fits them (and one context) to the
        devices' free memory, a dict as bridge.h's plan_new reads it; None: all on the CPU. What was
        chosen is in `self.placement`. `progress`: optional callable taking a fraction 0..1 while the
        weights load."""
        _init_backend()
        if not os.path.isfile(path):
            raise ModelLoadError(f"model file not found: {path}")
        self.path = path
        cdef bytes bpath = os.fsencode(path)
        cdef string spath = bpath
        cdef string plan_params = _utf8(json.dumps(placement if placement is not None and not vocab_only
                                                   else {"devices": [], "fit": False}))
        try:
            with nogil:
                self._plan = bridge.plan_new(spath, plan_params)
        except ValueError as exc:          # a device named that ggml does not have
            raise ModelLoadError(f"{path}: {exc}") from None
        except RuntimeError as exc:
            raise ModelLoadError(f"{path}: fitting to the devices failed: {exc}") from None
        self.placement = json.loads(bridge.plan_json(self._plan).decode())
        cdef llama_model_params params = bridge.plan_model_params(self._plan)[0]
        params.vocab_only = vocab_only
        if progress is not None:
            params.progress_callback = _progress_callback
            params.progress_callback_user_data = <void *> progress
        if use_mmap and use_mlock:
            params.load_mode = LLAMA_LOAD_MODE_MMAP_MLOCK
        elif use_mmap:
            params.load_mode = LLAMA_LOAD_MODE_MMAP
        elif use_mlock:
            params.load_mode = LLAMA_LOAD_MODE_MLOCK
        else:
            params.load_mode = LLAMA_LOAD_MODE_NONE
        cdef const char * cpath = bpath
        with nogil:
            self._model = llama_model_load_from_file(cpath, params)
            bridge.release_compute_threads()   # the weights' conversion computed on this thread's team
        if self._model == NULL:
            raise ModelLoadError(f"failed to load model from {path} (not a GGUF file llama.cpp can read?)")
        self._vocab = llama_model_get_vocab(self._model)
        cdef string override = _utf8(chat_template or "")
        try:
            self._templates = bridge.templates_new(self._model, override)
        except Exception as exc:
            self.close()
            raise ModelLoadError(f"chat template of {path} cannot be used: {exc}") from None

    def __dealloc__(self):
        if self._model != NULL or self._plan != NULL:
            self._free()

    cdef _free(self):
        if self._templates != NULL:
            bridge.templates_free(self._templates)
            self._templates = NULL
        if self._model != NULL:
            llama_model_free(self._model)
            self._model = NULL
        if self._plan != NULL:
            bridge.plan_free(self._plan)
            self._plan = NULL

    def close(self):
        """Close the model: its own methods raise from now on. The weights are freed now, or when the
        last context or sampler open on them closes. Safe to call twice."""
        self._closed = True
        if self._users == 0:
            self._free()

    cdef _release(self):
        """A context or sampler on this model closed."""
        self._users -= 1
        if self._closed and self._users == 0:
            self._free()

    @property
    def closed(self):
        return self._closed or self._model == NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    cdef int _ensure_alive(self) except -1:
        if self._closed or self._model == NULL:
            raise ValueError("model is closed")
        return 0

    # -- metadata

    @property
    def n_ctx_train(self):
        self._ensure_alive()
        return llama_model_n_ctx_train(self._model)

    @property
    def n_vocab(self):
        self._ensure_alive()
        return llama_vocab_n_tokens(self._vocab)

    @property
    def n_embd(self):
        self._ensure_alive()
        return llama_model_n_embd(self._model)

    @property
    def n_layer(self):
        self._ensure_alive()
        return llama_model_n_layer(self._model)

    @property
    def recurrent(self):
        """Whether its memory is recurrent (or hybrid): a sequence cannot drop only its last positions."""
        self._ensure_alive()
        return llama_model_is_recurrent(self._model) or llama_model_is_hybrid(self._model)

    @property
    def n_head_kv(self):
        self._ensure_alive()
        return llama_model_n_head_kv(self._model)

    @property
    def n_head(self):
        self._ensure_alive()
        return llama_model_n_head(self._model)

    @property
    def size(self):
        """Bytes of weights."""
        self._ensure_alive()
        return llama_model_size(self._model)

    @property
    def n_params(self):
        self._ensure_alive()
        return llama_model_n_params(self._model)

    @property
    def description(self):
        self._ensure_alive()
        cdef char buf[256]
        llama_model_desc(self._model, buf, sizeof(buf))
        return buf.decode("utf-8", "replace")

    def metadata(self):
        """All GGUF key/value pairs (values as strings; long arrays are elided by llama.cpp)."""
        self._ensure_alive()
        cdef int n = llama_model_meta_count(self._model)
        cdef int i, size
        cdef char * buf = <char *> malloc(65536)
        out = {}
        try:
            for i in range(n):
                llama_model_meta_key_by_index(self._model, i, buf, 65536)
                key = buf.decode("utf-8", "replace")
                size = llama_model_meta_val_str_by_index(self._model, i, buf, 65536)
                out[key] = buf[:min(size, 65535)].decode("utf-8", "replace") if size >= 0 else ""
        finally:
            free(buf)
        return out

    @property
    def architecture(self):
        return self.metadata().get("general.architecture", "")

    @property
    def chat_template(self):
        """The Jinja source of the chat template in use."""
        self._ensure_alive()
        return bridge.templates_source(self._templates).decode("utf-8", "replace")

    @property
    def supports_thinking(self):
        self._ensure_alive()
        return bridge.templates_support_thinking(self._templates)

    @property
    def bos_token(self):
        self._ensure_alive()
        return llama_vocab_bos(self._vocab)

    @property
    def eos_token(self):
        self._ensure_alive()
        return llama_vocab_eos(self._vocab)

    @property
    def eot_token(self):
        self._ensure_alive()
        return llama_vocab_eot(self._vocab)

    @property
    def add_bos(self):
        self._ensure_alive()
        return llama_vocab_get_add_bos(self._vocab)

    def is_eog(self, int token):
        self._ensure_alive()
        return llama_vocab_is_eog(self._vocab, token)

    # -- tokens

    def tokenize(self, text, *, bint add_special=False, bint parse_special=True):
        """Token ids of `text` (str or UTF-8 bytes)."""
        self._ensure_alive()
        cdef bytes data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        cdef const char * ctext = data
        cdef int32_t n_text = len(data)
        cdef int32_t cap = n_text + 8
        cdef llama_token * tokens = <llama_token *> malloc(cap * sizeof(llama_token))
        cdef int32_t n
        try:
            with nogil:
                n = llama_tokenize(self._vocab, ctext, n_text, tokens, cap, add_special, parse_special)
            if n < 0:
                cap = -n
                free(tokens)
                tokens = <llama_token *> malloc(cap * sizeof(llama_token))
                with nogil:
                    n = llama_tokenize(self._vocab, ctext, n_text, tokens, cap, add_special, parse_special)
            if n < 0:
                raise InvalidRequestError("text could not be tokenized")
            return [tokens[i] for i in range(n)]
        finally:
            free(tokens)

    def count_tokens(self, text, *, bint add_special=False, bint parse_special=True):
        """How many tokens tokenize() would return, without building them in Python."""
        self._ensure_alive()
        cdef bytes data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        cdef const char * ctext = data
        cdef int32_t n_text = len(data)
        cdef int32_t n
        with nogil:
            n = llama_tokenize(self._vocab, ctext, n_text, NULL, 0, add_special, parse_special)
        return -n if n < 0 else n

    def token_to_piece(self, int token, *, bint special=False):
        """Raw bytes of one token (may be part of a UTF-8 sequence)."""
        self._ensure_alive()
        cdef char buf[256]
        cdef int32_t n = llama_token_to_piece(self._vocab, token, buf, sizeof(buf), 0, special)
        cdef char * big
        if n >= 0:
            return PyBytes_FromStringAndSize(buf, n)
        big = <char *> malloc(-n)
        try:
            n = llama_token_to_piece(self._vocab, token, big, -n, 0, special)
            return PyBytes_FromStringAndSize(big, n)
        finally:
            free(big)

    def detokenize(self, tokens, *, bint special=False):
        """Text of a token sequence (invalid UTF-8 replaced)."""
        self._ensure_alive()
        cdef int32_t n = len(tokens)
        cdef llama_token * arr = <llama_token *> malloc(max(n, 1) * sizeof(llama_token))
        cdef int32_t cap = n * 16 + 16
        cdef char * buf = NULL
        cdef int32_t size
        try:
            for i in range(n):
                arr[i] = tokens[i]
            buf = <char *> malloc(cap)
            size = llama_detokenize(self._vocab, arr, n, buf, cap, False, special)
            if size < 0:
                cap = -size
                free(buf)
                buf = <char *> malloc(cap)
                size = llama_detokenize(self._vocab, arr, n, buf, cap, False, special)
            return PyBytes_FromStringAndSize(buf, size).decode("utf-8", "replace")
        finally:
            free(arr)
            free(buf)

    # -- chat

    def apply_chat_template(self, dict inputs):
        """Render a chat with the model's Jinja template through llama.cpp common/chat.

        `inputs`: messages (OpenAI shape, with tool_calls and reasoning_content), tools,
        tool_choice, parallel_tool_calls, enable_thinking, chat_template_kwargs,
        json_schema, grammar, add_generation_prompt. Returns the prompt, grammar,
        triggers, preserved tokens, extra stops and the output parser definition.
        """
        self._ensure_alive()
        cdef string cinputs = _utf8(json.dumps(inputs, ensure_ascii=False))
        cdef string result
        try:
            with nogil:
                result = bridge.chat_apply(self._templates, cinputs)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        except RuntimeError as exc:
            raise TemplateError(f"chat template error: {exc}") from None
        return json.loads(result.decode("utf-8", "replace"))


# ---------------------------------------------------------------- context

@cython.no_gc_clear          # the model stays set until __dealloc__ has freed the context
cdef class Context:
    """One llama_context (its own KV cache) on a Model; the model's weights live as long as it."""

    def __cinit__(self):
        self._ctx = NULL
        self._batch_capacity = 0
        self._batch_pending = 0
        self._abort = 0

    def __init__(self, Model model, *, int n_ctx=4096, int n_batch=2048, int n_ubatch=512,
                 int n_seq_max=1, int n_threads=0, int n_threads_batch=0, str flash_attn="auto",
                 str type_k="f16", str type_v="f16", bint offload_kqv=True):
        model._ensure_alive()
        if flash_attn not in _FLASH_ATTN:
            raise ValueError(f"flash_attn must be one of auto, on, off, not {flash_attn!r}")
        for name, kv_type in (("type_k", type_k), ("type_v", type_v)):
            if kv_type not in _KV_TYPES:
                raise ValueError(f"{name} must be one of {', '.join(_KV_TYPES)}, not {kv_type!r}")
        self.model = model
        n_threads = n_threads or max(1, os.cpu_count() or 1)
        cdef llama_context_params params = llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = min(n_ubatch, n_batch)
        params.n_seq_max = n_seq_max
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch or n_threads
        params.flash_attn_type = _FLASH_ATTN[flash_attn]
        params.type_k = <ggml_type> _KV_TYPES[type_k]
        params.type_v = <ggml_type> _KV_TYPES[type_v]
        params.abort_callback = _abort_callback
        params.abort_callback_data = <void *> &self._abort
        params.kv_unified = True
        params.offload_kqv = offload_kqv
        params.no_perf = True
        global _flash_attn_said
        _flash_attn_said = -1
        with nogil:
            self._ctx = llama_init_from_model(model._model, params)
        said, _flash_attn_said = _flash_attn_said, -2
        if self._ctx == NULL:
            raise ModelLoadError(f"failed to create a context (n_ctx={n_ctx}): out of memory?")
        # "on" / "off" as llama.cpp resolved "auto" for the devices (its log line), else as asked
        self.flash_attn = flash_attn if flash_attn != "auto" else {1: "on", 0: "off"}.get(said, "auto")
        model._users += 1
        self._batch_capacity = llama_n_batch(self._ctx)
        self._batch = llama_batch_init(self._batch_capacity, 0, 1)

    def __dealloc__(self):
        if self._ctx != NULL:
            warnings.warn("llamabridge Context was not closed", ResourceWarning)
            self._free()

    cdef _free(self):
        if self._ctx != NULL:
            llama_batch_free(self._batch)
            llama_free(self._ctx)
            self._ctx = NULL
            self.model._release()

    def close(self):
        """Free the KV cache. Safe to call twice."""
        self._free()

    def memory(self):
        """Bytes this context and its model hold on each device: {"memory": {device: {model, context,
        compute}}, "model_devices": [the devices the model may use]} ("CPU" is host memory)."""
        self._ensure_alive()
        return json.loads(bridge.context_memory_json(self._ctx).decode())

    @property
    def closed(self):
        return self._ctx == NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    cdef int _ensure_alive(self) except -1:
        if self._ctx == NULL:
            raise ValueError("context is closed")
        return 0

    @property
    def n_ctx(self):
        self._ensure_alive()
        return llama_n_ctx(self._ctx)

    @property
    def n_batch(self):
        self._ensure_alive()
        return llama_n_batch(self._ctx)

    @property
    def n_ubatch(self):
        self._ensure_alive()
        return llama_n_ubatch(self._ctx)

    @property
    def n_seq_max(self):
        self._ensure_alive()
        return llama_n_seq_max(self._ctx)

    def set_n_threads(self, int n_threads, int n_threads_batch=0):
        self._ensure_alive()
        llama_set_n_threads(self._ctx, n_threads, n_threads_batch or n_threads)

    # -- cancellation: a flag the abort callback and the generation loop read

    def cancel(self):
        """Ask a running decode (and the generation loop above it) to stop. Thread-safe."""
        self._abort = 1

    def clear_cancel(self):
        self._abort = 0

    @property
    def cancelled(self):
        return self._abort != 0

    # -- memory (KV cache)

    def memory_clear(self):
        self._ensure_alive()
        llama_memory_clear(llama_get_memory(self._ctx), True)

    def memory_seq_rm(self, int seq_id, int p0, int p1=-1):
        """Remove positions [p0, p1) of a sequence; False if a partial removal is unsupported."""
        self._ensure_alive()
        return llama_memory_seq_rm(llama_get_memory(self._ctx), seq_id, p0, p1)

    def memory_seq_cp(self, int src, int dst, int p0=-1, int p1=-1):
        self._ensure_alive()
        llama_memory_seq_cp(llama_get_memory(self._ctx), src, dst, p0, p1)

    def memory_seq_pos_max(self, int seq_id):
        self._ensure_alive()
        return llama_memory_seq_pos_max(llama_get_memory(self._ctx), seq_id)

    # -- one sequence's KV state as bytes (saved prefixes)

    def state_seq_get(self, int seq_id):
        """A copy of one sequence's KV cells (positions and K/V rows), as llama.cpp serializes them."""
        self._ensure_alive()
        cdef size_t size, written
        with nogil:
            size = llama_state_seq_get_size(self._ctx, seq_id)
        if size == 0:
            raise ValueError(f"cannot serialize sequence {seq_id}")
        data = bytearray(size)
        cdef unsigned char[::1] view = data
        with nogil:
            written = llama_state_seq_get_data(self._ctx, &view[0], size, seq_id)
        if written != size:
            raise ValueError(f"serializing sequence {seq_id} wrote {written} of {size} bytes")
        return data

    def state_seq_set(self, int seq_id, const unsigned char[::1] data):
        """Replace one sequence's KV cells with a state from state_seq_get (of a context with the same
        model, KV types and build). True on success; False (and the sequence empty) otherwise."""
        self._ensure_alive()
        cdef size_t size = data.shape[0], read = 0
        if size == 0:
            return False
        with nogil:
            read = llama_state_seq_set_data(self._ctx, &data[0], size, seq_id)
        if read == 0:
            llama_memory_seq_rm(llama_get_memory(self._ctx), seq_id, -1, -1)
            return False
        return True

    # -- log-probabilities (OpenAI logprobs)

    def token_logprobs(self, int idx, int token, int n_top):
        """The log-probability of `token` and the `n_top` likeliest tokens at batch index `idx`:
        a log-softmax of the raw logits, before any sampler stage (as llama-server reports them).
        Returns (logprob, [(token, logprob), ...] likeliest first)."""
        self._ensure_alive()
        cdef int n_vocab = llama_vocab_n_tokens(self.model._vocab)
        if not 0 <= token < n_vocab:
            raise ValueError(f"token {token} is not in the vocabulary")
        n_top = max(0, min(n_top, n_vocab))
        cdef int32_t * top_tokens = <int32_t *> malloc(max(n_top, 1) * sizeof(int32_t))
        cdef float * top_logprobs = <float *> malloc(max(n_top, 1) * sizeof(float))
        cdef float logprob
        try:
            if top_tokens == NULL or top_logprobs == NULL:
                raise MemoryError()
            with nogil:
                logprob = bridge.token_logprobs(self._ctx, idx, token, n_top, top_tokens, top_logprobs)
            return logprob, [(top_tokens[i], top_logprobs[i]) for i in range(n_top)]
        finally:
            free(top_tokens)
            free(top_logprobs)

    # -- decode

    cdef inline void _put(self, int i, llama_token token, llama_pos pos, llama_seq_id seq_id, bint logits):
        self._batch.token[i] = token
        self._batch.pos[i] = pos
        self._batch.n_seq_id[i] = 1
        self._batch.seq_id[i][0] = seq_id
        self._batch.logits[i] = logits

    cdef int _decode_batch(self, int n_tokens, const int * wake=NULL, int n_wake=0) except -1:
        """llama_decode the first n_tokens of the batch, without the GIL; a non-zero code raises.
        First writes a byte to each of the `n_wake` file descriptors in `wake`, once the GIL is released."""
        cdef int rc, i
        self._batch.n_tokens = n_tokens
        with nogil:
            for i in range(n_wake):
                write(wake[i], b"\0", 1)         # a full pipe already wakes its reader; errors change nothing
            rc = llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise decode_error(rc)
        return 0

    def decode(self, tokens, int pos, int seq_id=0, bint logits_last=True):
        """Evaluate `tokens` at positions pos.. of one sequence, in n_batch chunks.

        Returns the batch index of the last token's logits (for sampling). Checks the
        abort flag between chunks; raises the typed DecodeError on failure.
        """
        self._ensure_alive()
        cdef int n = len(tokens)
        cdef int start = 0, count, i
        if n == 0:
            raise ValueError("decode needs at least one token")
        if self._batch_pending:
            raise ValueError("decode while a batch is being built (batch_add): use batch_decode")
        while start < n:
            count = min(self._batch_capacity, n - start)
            if self._abort:
                raise decode_error(2)
            for i in range(count):
                self._put(i, tokens[start + i], pos + start + i, seq_id,
                          logits_last and start + i == n - 1)
            self._decode_batch(count)
            start += count
        return count - 1

    def decode_one(self, int token, int pos, int seq_id=0):
        """Evaluate a single token of one sequence (a raw decode loop, e.g. benchmarks)."""
        self._ensure_alive()
        if self._batch_pending:
            raise ValueError("decode while a batch is being built (batch_add): use batch_decode")
        self._put(0, token, pos, seq_id, True)
        self._decode_batch(1)
        return 0

    # -- one batch built entry by entry: the scheduler's step (several sequences, mixed
    #    prompt chunks and generated tokens), decoded by one llama_decode call

    def batch_add(self, tokens, int pos, int seq_id, bint logits_last, bint logits_all=False):
        """Append `tokens` at positions pos.. of sequence `seq_id` to the pending batch.

        Returns the batch index of the last token (its logits are kept when `logits_last`; every token's with
        `logits_all`, at the indices before it: a draft being verified). Raises ValueError past the batch
        capacity (n_batch).
        """
        self._ensure_alive()
        cdef int n = len(tokens)
        cdef int base = self._batch_pending, i
        if n == 0:
            raise ValueError("batch_add needs at least one token")
        if base + n > self._batch_capacity:
            raise ValueError(f"batch holds {self._batch_capacity} tokens; {base} pending + {n} do not fit")
        for i in range(n):
            self._put(base + i, tokens[i], pos + i, seq_id, logits_all or (logits_last and i == n - 1))
        self._batch_pending = base + n
        return base + n - 1

    @property
    def batch_pending(self):
        """Tokens added to the pending batch since the last batch_decode."""
        return self._batch_pending

    @property
    def batch_capacity(self):
        return self._batch_capacity

    def batch_decode(self, wake=()):
        """Decode the pending batch in one llama_decode call (without the GIL); the batch is emptied
        whether it succeeds or raises the typed DecodeError.

        `wake`: file descriptors (pipes) to write one byte to as the decode starts, after the GIL is
        released: the threads waiting on them (consumers of the last step's tokens) run while the
        model computes, instead of taking the GIL back from this thread."""
        cdef int fds[_MAX_WAKE]
        cdef int n_wake = 0, i
        for fd in wake:
            if n_wake == _MAX_WAKE:
                write(fd, b"\0", 1)
            else:
                fds[n_wake] = fd
                n_wake += 1
        cdef int n = self._batch_pending
        self._batch_pending = 0
        if self._ctx == NULL or n == 0:
            for i in range(n_wake):                   # no decode to start: wake them now
                write(fds[i], b"\0", 1)
            self._ensure_alive()
            raise ValueError("batch_decode with an empty batch")
        self._decode_batch(n, fds, n_wake)


# ---------------------------------------------------------------- sampling

@cython.no_gc_clear          # the model stays set until __dealloc__ has freed the sampler
cdef class Sampler:
    """A common_sampler (sampling chain + grammar) for one generation."""

    def __cinit__(self):
        self._sampler = NULL

    def __init__(self, Model model, dict params):
        """`params`: temperature, top_k, top_p, min_p, repeat_penalty, presence_penalty,
        frequency_penalty, penalty_last_n, seed, grammar (+ grammar_type, grammar_lazy,
        grammar_triggers), preserved_tokens, generation_prompt, thinking tags and budget, logit_bias,
        shortcut (False: always the full chain)."""
        model._ensure_alive()
        self.model = model
        cdef string cparams = _utf8(json.dumps(params, ensure_ascii=False))
        cdef CSampler * made = NULL
        try:
            # without the GIL: a large grammar takes seconds to build, and nothing else may wait for it
            with nogil:
                made = bridge.sampler_new(model._model, cparams)
            self._sampler = made
        except (ValueError, RuntimeError) as exc:
            raise InvalidRequestError(f"invalid sampling parameters: {exc}") from None
        model._users += 1

    def __dealloc__(self):
        self.close()

    def close(self):
        if self._sampler != NULL:
            bridge.sampler_free(self._sampler)
            self._sampler = NULL
            self.model._release()

    cdef int _ensure_alive(self) except -1:
        if self._sampler == NULL:
            raise ValueError("sampler is closed")
        return 0

    cdef llama_token _sample(self, Context ctx, int idx, bint accept) except? -2:
        self._ensure_alive()
        ctx._ensure_alive()
        cdef llama_token token
        try:
            with nogil:
                token = bridge.sampler_sample(self._sampler, ctx._ctx, idx, accept)
        except RuntimeError as exc:
            raise DecodeError(-100, f"sampling ({exc})") from None
        return token

    def sample(self, Context ctx, int idx=-1):
        """Sample the next token from the logits at batch index `idx`."""
        return self._sample(ctx, idx, False)

    def accept(self, int token):
        self._ensure_alive()
        bridge.sampler_accept(self._sampler, token)

    def sample_accept(self, Context ctx, int idx=-1):
        """sample() then accept() in one call: the per-token hot path."""
        return self._sample(ctx, idx, True)

    def sample_draft(self, Context ctx, int first, list draft):
        """Verify a draft decoded at batch indices first.. (the token before it at `first`, then each draft
        token): the tokens this sampler takes, each accepted: the draft's while they are the ones sampled,
        then one more (1 to len(draft) + 1 tokens; llama.cpp's common_sampler_sample_and_accept_n)."""
        self._ensure_alive()
        ctx._ensure_alive()
        cdef vector[int32_t] cdraft = draft
        cdef vector[int] idxs
        cdef vector[int32_t] taken
        cdef int i
        for i in range(len(draft) + 1):
            idxs.push_back(first + i)
        try:
            with nogil:
                taken = bridge.sampler_sample_draft(self._sampler, ctx._ctx, idxs, cdraft)
        except RuntimeError as exc:
            raise DecodeError(-100, f"sampling ({exc})") from None
        return list(taken)

    def reset(self):
        self._ensure_alive()
        bridge.sampler_reset(self._sampler)

    @property
    def shortcut(self):
        """How tokens are picked: "argmax" (greedy), "top_k" (the chain on the k likeliest tokens only) or
        "" (the full chain on the whole vocabulary: a grammar, bias, penalty or budget reshapes the logits).
        `"shortcut": False` in the params forces the full chain."""
        self._ensure_alive()
        return bridge.sampler_shortcut(self._sampler).decode()


# ---------------------------------------------------------------- speculation

cdef class Speculator:
    """llama.cpp's drafters (common_speculative: its n-gram types, and draft-simple with a draft model) for the
    sequences of one context."""

    def __cinit__(self):
        self._spec = NULL

    def __init__(self, dict params, int n_seq, Context target=None, Context draft=None):
        """`params`: types (llama.cpp's names: ngram-simple, ngram-map-k, ngram-map-k4v, ngram-mod, draft-simple,
        tried in that order), ngram_size, n_max, n_min, min_hits, p_min. `draft`: the draft model's context
        (draft-simple), with n_seq sequences, on `target`'s model's vocabulary. Close it before either context.
        InvalidRequestError for what llama.cpp cannot use (a draft model whose vocabulary is not the target's)."""
        cdef string cparams = _utf8(json.dumps(params))
        cdef llama_context * ctx_tgt = NULL
        cdef llama_context * ctx_dft = NULL
        if target is not None:
            target._ensure_alive()
            ctx_tgt = target._ctx
        if draft is not None:
            if target is None:
                raise ValueError("a draft model's context drafts for a target context")
            draft._ensure_alive()
            ctx_dft = draft._ctx
        try:
            with nogil:
                self._spec = bridge.speculator_new(cparams, n_seq, ctx_tgt, ctx_dft)
        except (ValueError, RuntimeError) as exc:
            raise InvalidRequestError(f"speculation: {exc}") from None
        self.n_seq = n_seq
        self.types = tuple(name.decode() for name in bridge.speculator_types(self._spec))
        self._contexts = (target, draft)        # alive as long as it points at them

    def __dealloc__(self):
        if self._spec != NULL:
            bridge.speculator_free(self._spec)
            self._spec = NULL

    cdef int _check(self, int seq) except -1:
        if self._spec == NULL:
            raise ValueError("speculator is closed")
        if not 0 <= seq < self.n_seq:
            raise ValueError(f"sequence {seq} is not one of this speculator's {self.n_seq}")
        return 0

    @property
    def n_max(self):
        """The longest draft its types propose."""
        return bridge.speculator_n_max(self._spec) if self._spec != NULL else 0

    def begin(self, int seq, list prompt):
        """A sequence starts generating after `prompt` (its history from now on)."""
        self._check(seq)
        cdef vector[int32_t] cprompt = prompt
        with nogil:
            bridge.speculator_begin(self._spec, seq, cprompt)

    def want(self, int seq, list added, int last, int n_max):
        """The sequence's history grows by `added` (what it holds since the last call: only what is new crosses
        over, not the whole conversation at every token); with n_max > 0 it asks for a draft of at most n_max
        tokens to follow `last` (sampled, not decoded yet) at the next draft()."""
        self._check(seq)
        cdef vector[int32_t] cadded = added
        bridge.speculator_want(self._spec, seq, cadded, last, n_max)

    def draft(self):
        """The drafts asked for since the last call: {seq: (type, tokens)} for each sequence one of the types
        drafted for (the draft model decodes here: without the GIL)."""
        if self._spec == NULL:
            raise ValueError("speculator is closed")
        cdef vector[vector[int32_t]] drafts
        cdef vector[int] drafters
        with nogil:
            drafters = bridge.speculator_draft(self._spec, drafts)
        return {seq: (self.types[drafter], list(drafts[seq])) for seq, drafter in enumerate(drafters)
                if drafter >= 0}

    def accept(self, int seq, int n_accepted):
        """How many tokens of the sequence's last draft were accepted."""
        self._check(seq)
        bridge.speculator_accept(self._spec, seq, n_accepted)

    def close(self):
        if self._spec != NULL:
            bridge.speculator_free(self._spec)
            self._spec = NULL
        self._contexts = ()


# ---------------------------------------------------------------- chat output parser

cdef class ChatParser:
    """llama.cpp's parser of model output into content, reasoning and tool calls."""

    def __cinit__(self):
        self._parser = NULL

    def __init__(self, dict params):
        """`params`: format, parser (definition from apply_chat_template), generation_prompt,
        reasoning_format (deepseek|none), parse_tool_calls."""
        cdef string cparams = _utf8(json.dumps(params, ensure_ascii=False))
        try:
            self._parser = bridge.parser_new(cparams)
        except (ValueError, RuntimeError) as exc:
            raise TemplateError(f"chat parser cannot be built: {exc}") from None

    def __dealloc__(self):
        self.close()

    def close(self):
        if self._parser != NULL:
            bridge.parser_free(self._parser)
            self._parser = NULL

    def feed(self, str text, bint partial=True):
        """Append generated text; return the diffs since the last call.

        Each diff is a dict with any of: reasoning, content, tool_index + tool_name + tool_args.
        Raises ValueError when the final (non-partial) text does not parse.
        """
        if self._parser == NULL:
            raise ValueError("parser is closed")
        cdef string ctext = _utf8(text)
        cdef string result
        try:
            with nogil:
                result = bridge.parser_feed(self._parser, ctext, partial)
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
        return json.loads(result.decode("utf-8", "replace"))

    def message(self):
        """The message parsed so far: content, reasoning_content, tool_calls [{name, arguments}]."""
        if self._parser == NULL:
            raise ValueError("parser is closed")
        return json.loads(bridge.parser_message(self._parser).decode("utf-8", "replace"))
