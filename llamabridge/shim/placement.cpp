// Where a model's weights and its caches' KV go: ggml's devices, llama.cpp's own fitting (common/fit.h)
// and the memory a context took on each device. JSON in, JSON out, like bridge.cpp.
#include "bridge.h"

#include "fit.h"
#include "ggml-backend.h"
#include "json.h"
#include "../src/llama-ext.h"   // the memory breakdown (staging API), as common/fit.cpp reads it
#include "llama.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

using json = common_json;

namespace lb {

static const char * type_name(enum ggml_backend_dev_type type) {
    switch (type) {
        case GGML_BACKEND_DEVICE_TYPE_CPU:   return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU:   return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU:  return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        case GGML_BACKEND_DEVICE_TYPE_META:  return "meta";
    }
    return "unknown";
}

static json device_json(ggml_backend_dev_t dev) {
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(dev, &free, &total);
    json out = json::object();
    out["name"]        = std::string(ggml_backend_dev_name(dev));
    out["description"] = std::string(ggml_backend_dev_description(dev));
    out["type"]        = std::string(type_name(ggml_backend_dev_type(dev)));
    out["free"]        = (uint64_t) free;
    out["total"]       = (uint64_t) total;
    return out;
}

std::string devices_json() {
    json out = json::array();
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        out.push_back(device_json(ggml_backend_dev_get(i)));
    }
    return out.dump();
}

std::string rpc_add_server(const std::string & endpoint) {
    ggml_backend_reg_t rpc = ggml_backend_reg_by_name("RPC");
    if (rpc == nullptr) {
        throw std::runtime_error("this build has no RPC backend (llama.cpp built without GGML_RPC=ON)");
    }
    using add_server_t = ggml_backend_reg_t (*)(const char * endpoint);
    auto add_server = (add_server_t) ggml_backend_reg_get_proc_address(rpc, "ggml_backend_rpc_add_server");
    if (add_server == nullptr) {
        throw std::runtime_error("the RPC backend has no ggml_backend_rpc_add_server");
    }
    ggml_backend_reg_t server = add_server(endpoint.c_str());    // aborts the process if it cannot connect
    ggml_backend_register(server);
    json names = json::array();
    for (size_t i = 0; i < ggml_backend_reg_dev_count(server); i++) {
        names.push_back(std::string(ggml_backend_dev_name(ggml_backend_reg_dev_get(server, i))));
    }
    return names.dump();
}

// the devices a model is given by name (an empty list: none, CPU only)
static std::vector<ggml_backend_dev_t> named_devices(const json & names) {
    std::vector<ggml_backend_dev_t> devs;
    for (const auto & name : names) {
        ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.get<std::string>().c_str());
        if (dev == nullptr) {
            throw std::invalid_argument("no device named " + name.get<std::string>());
        }
        devs.push_back(dev);
    }
    return devs;
}

static const std::map<std::string, ggml_type> KV_TYPES = {
    {"f32", GGML_TYPE_F32}, {"f16", GGML_TYPE_F16}, {"bf16", GGML_TYPE_BF16}, {"q8_0", GGML_TYPE_Q8_0},
    {"q4_0", GGML_TYPE_Q4_0}, {"q4_1", GGML_TYPE_Q4_1}, {"q5_0", GGML_TYPE_Q5_0}, {"q5_1", GGML_TYPE_Q5_1},
};

static llama_flash_attn_type flash_attn_of(const std::string & value) {
    if (value == "on")  return LLAMA_FLASH_ATTN_TYPE_ENABLED;
    if (value == "off") return LLAMA_FLASH_ATTN_TYPE_DISABLED;
    return LLAMA_FLASH_ATTN_TYPE_AUTO;
}

// a cache's context as the fit measures it: all its KV cells in one unified cache
static llama_context_params context_params(const json & c) {
    llama_context_params p = llama_context_default_params();
    p.n_ctx           = c.value("n_ctx", 0u);
    p.n_seq_max       = c.value("n_seq_max", 1u);
    p.kv_unified      = c.value("kv_unified", true);
    p.n_batch         = c.value("n_batch", 2048u);
    p.n_ubatch        = std::min(c.value("n_ubatch", 512u), p.n_batch);
    p.type_k          = KV_TYPES.at(c.value("type_k", std::string("f16")));
    p.type_v          = KV_TYPES.at(c.value("type_v", std::string("f16")));
    p.flash_attn_type = flash_attn_of(c.value("flash_attn", std::string("auto")));
    p.offload_kqv     = c.value("offload_kqv", true);
    p.no_perf         = true;
    return p;
}

struct ModelPlan {
    std::string                                    path;
    llama_model_params                             mparams;
    std::vector<ggml_backend_dev_t>                devices;       // null-terminated, when given by name
    std::vector<float>                             tensor_split;
    std::vector<llama_model_tensor_buft_override>  overrides;     // written by the fit, null-terminated
    json                                           chosen;
};

ModelPlan * plan_new(const std::string & path, const std::string & params_json) {
    const json p = json::parse(params_json);
    auto plan = new ModelPlan();
    try {
        plan->path    = path;
        plan->mparams = llama_model_default_params();
        llama_model_params & mp = plan->mparams;

        // by name, or (null) llama.cpp's own choice: RPC servers, GPUs, integrated GPUs when there is no GPU
        // (an RPC backend with no server added offers nothing: llama_supports_gpu_offload would say yes)
        bool offload = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU) != nullptr ||
                       ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_IGPU) != nullptr;
        if (p.contains("devices") && p.at("devices").is_array()) {
            plan->devices = named_devices(p.at("devices"));
            offload = !plan->devices.empty();
            plan->devices.push_back(nullptr);
            mp.devices = plan->devices.data();
        }

        const int n_gpu_layers = p.value("n_gpu_layers", -1);   // -1: all (or as the fit decides), N: N
        mp.n_gpu_layers = offload ? n_gpu_layers : 0;
        const std::string split = p.value("split_mode", std::string("layer"));
        mp.split_mode = split == "none" ? LLAMA_SPLIT_MODE_NONE : split == "row" ? LLAMA_SPLIT_MODE_ROW
                                                                                 : LLAMA_SPLIT_MODE_LAYER;
        mp.main_gpu = p.value("main_gpu", 0);
        plan->tensor_split.assign(llama_max_devices(), 0.0f);
        const json split_given = p.value("tensor_split", json::array());
        for (size_t i = 0; i < split_given.size() && i < plan->tensor_split.size(); i++) {
            plan->tensor_split[i] = (float) split_given[i].get<double>();
        }
        // given: the user's; otherwise the fit may write its own split into the same buffer
        mp.tensor_split = split_given.empty() ? nullptr : plan->tensor_split.data();
        plan->overrides.assign(llama_max_tensor_buft_overrides(), {nullptr, nullptr});

        json chosen = {{"fitted", false}, {"status", "not fitted"}};
        llama_context_params main = context_params(p.value("main", json::object()));
        const bool fit = offload && p.value("fit", true);
        if (fit) {
            // the other caches of the model: what their contexts take on each device (KV and compute
            // buffers, measured by llama.cpp with no allocation) is left free beside the main context
            std::vector<size_t> margins(llama_max_devices(), p.value("margin", size_t(1) << 30));
            for (const auto & other : p.value("others", json::array())) {
                llama_context_params cp = context_params(other);
                std::vector<ggml_backend_dev_t> devs;
                uint32_t ngl = 0, nct = 0, nex = 0;
                const auto measured = common_get_device_memory_data(path.c_str(), &mp, &cp, devs, ngl, nct, nex,
                                                                    GGML_LOG_LEVEL_ERROR);
                for (size_t d = 0; d < devs.size() && d < margins.size(); d++) {   // the model's devices, in order
                    margins[d] += measured[d].context + measured[d].compute;
                }
            }
            const uint32_t n_ctx_min = p.value("n_ctx_min", 4096u);
            const auto status = common_fit_params(path.c_str(), &mp, &main, plan->tensor_split.data(),
                                                  plan->overrides.data(), margins.data(), n_ctx_min, nullptr,
                                                  GGML_LOG_LEVEL_ERROR);
            chosen["fitted"] = true;
            chosen["status"] = status == COMMON_PARAMS_FIT_STATUS_SUCCESS ? "fits"
                             : status == COMMON_PARAMS_FIT_STATUS_FAILURE ? "does not fit" : "error";
        }
        int n_overrides = 0;
        while (mp.tensor_buft_overrides != nullptr && plan->overrides[n_overrides].pattern != nullptr) {
            n_overrides++;
        }
        chosen["n_gpu_layers"]  = mp.n_gpu_layers;
        chosen["n_ctx"]         = main.n_ctx;
        chosen["overrides"]     = n_overrides;     // tensors the fit kept in system memory (MoE experts)
        chosen["offload"]       = offload;
        plan->chosen = chosen;
    } catch (...) {
        delete plan;
        throw;
    }
    return plan;
}

std::string plan_json(const ModelPlan * plan) { return plan->chosen.dump(); }

void plan_free(ModelPlan * plan) { delete plan; }

llama_model_params * plan_model_params(ModelPlan * plan) { return &plan->mparams; }

std::string context_memory_json(const llama_context * ctx) {
    const llama_model * model = llama_get_model(ctx);
    struct Bytes { uint64_t model = 0, context = 0, compute = 0; };
    std::vector<std::pair<std::string, Bytes>> by_device;
    for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
        std::string name = "CPU";
        if (!ggml_backend_buft_is_host(buft)) {
            ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
            name = dev != nullptr ? ggml_backend_dev_name(dev) : ggml_backend_buft_name(buft);
        }
        auto it = std::find_if(by_device.begin(), by_device.end(), [&](const auto & e) { return e.first == name; });
        if (it == by_device.end()) {
            by_device.push_back({name, Bytes()});
            it = by_device.end() - 1;
        }
        it->second.model   += mb.model;
        it->second.context += mb.context;
        it->second.compute += mb.compute;
    }
    json memory = json::object();
    for (const auto & [name, bytes] : by_device) {
        json entry = json::object();
        entry["model"]   = bytes.model;
        entry["context"] = bytes.context;
        entry["compute"] = bytes.compute;
        memory[name] = entry;
    }
    json devices = json::array();
    for (int i = 0; i < llama_model_n_devices(model); i++) {
        devices.push_back(std::string(ggml_backend_dev_name(llama_model_get_device(model, i))));
    }
    json out = json::object();
    out["memory"] = memory;
    out["model_devices"] = devices;
    return out.dump();
}

}  // namespace lb
