"""What a model asks llama.cpp's fitting for (placement.request, fitted_caches) and the settings that feed it;
the fitting itself runs in tests/device (make test-vulkan)."""

from __future__ import annotations

import pytest

from llamabridge.engine import placement
from llamabridge.engine.params import CacheParams, ModelParams, ParamError, SplitMode
from llamabridge.errors import ModelLoadError


def test_model_params_take_auto_all_or_a_count_of_layers():
    assert ModelParams().n_gpu_layers == "auto"
    assert ModelParams(n_gpu_layers="12").n_gpu_layers == 12
    assert ModelParams(n_gpu_layers=-1).n_gpu_layers == "all"            # llama.cpp's -1
    assert ModelParams(n_gpu_layers=0).offloads is False
    assert ModelParams(devices="none").devices == () and ModelParams(devices=()).offloads is False
    assert ModelParams(devices=["Vulkan0", " CUDA1 "]).devices == ("Vulkan0", "CUDA1")
    assert ModelParams(split_mode="row").split_mode is SplitMode.ROW
    assert ModelParams(tensor_split=[3, 1]).tensor_split == (3.0, 1.0)


@pytest.mark.parametrize("kwargs, field", [
    ({"n_gpu_layers": "most"}, "n_gpu_layers"), ({"n_gpu_layers": 2.5}, "n_gpu_layers"),
    ({"devices": [""]}, "devices"), ({"devices": ["none", "CUDA0"]}, "devices"),
    ({"split_mode": "tensor"}, "split_mode"), ({"tensor_split": [0, 0]}, "tensor_split"),
    ({"tensor_split": [-1, 2]}, "tensor_split"), ({"main_gpu": -1}, "main_gpu"),
])
def test_bad_model_settings_name_their_field(kwargs, field):
    with pytest.raises(ParamError) as caught:
        ModelParams(**kwargs)
    assert caught.value.field == field


def test_automatic_caches_are_the_fitted_context_and_the_others_are_counted_beside_it():
    auto_a, auto_b, fixed = CacheParams(n_parallel=2), CacheParams(n_parallel=3), CacheParams(n_ctx=8192, n_parallel=2)
    asked = placement.request(ModelParams(), [fixed, auto_a, auto_b])
    assert asked["fit"] is True and asked["n_gpu_layers"] == -1 and "devices" not in asked
    assert asked["main"]["n_ctx"] == 0 and asked["main"]["n_seq_max"] == 5 and asked["main"]["kv_unified"] is False
    assert [o["n_ctx"] for o in asked["others"]] == [16384]
    assert asked["n_ctx_min"] == placement.MIN_CTX


def test_explicit_caches_fit_the_layers_around_the_first():
    a, b = CacheParams(n_ctx=4096, kv_size=6000, n_parallel=2), CacheParams(n_ctx=2048)
    asked = placement.request(ModelParams(), [a, b])
    assert asked["main"]["n_ctx"] == 6000 and asked["main"]["kv_unified"] is True
    assert [o["n_ctx"] for o in asked["others"]] == [2048]


def test_a_model_that_names_no_device_keeps_off_other_models_rpc_servers(monkeypatch):
    """Once an rpc-server was added to the process, llama.cpp's own choice would take its devices for every
    model: a model gets its own servers' devices (first), then the local GPUs."""
    local = [placement.Device("CPU", "", "cpu", 1, 1), placement.Device("Vulkan0", "", "gpu", 1, 1),
             placement.Device("RPC0", "a:1", "gpu", 1, 1), placement.Device("RPC1", "b:2", "gpu", 1, 1)]
    monkeypatch.setattr(placement, "devices", lambda: local)
    added = {"a:1": ["RPC0"], "b:2": ["RPC1"]}
    assert placement.request(ModelParams(rpc=("b:2",)), [], added)["devices"] == ["RPC1", "Vulkan0"]
    assert placement.request(ModelParams(), [], added)["devices"] == ["Vulkan0"]
    assert "devices" not in placement.request(ModelParams(), [], {})


def test_rpc_endpoints_are_host_and_port():
    assert ModelParams(rpc=["10.0.0.2:50052", " [::1]:50053 "]).rpc == ("10.0.0.2:50052", "[::1]:50053")
    for bad in (["nohost"], ["host:0"], ["host:port"], [":50052"]):
        with pytest.raises(ParamError, match="rpc: each server must be host:port"):
            ModelParams(rpc=bad)


def test_what_is_not_fitted():
    fixed = CacheParams(n_ctx=4096)
    assert placement.request(ModelParams(n_gpu_layers=10), [fixed])["fit"] is False       # nothing left to choose
    assert placement.request(ModelParams(n_gpu_layers=10), [CacheParams()])["fit"] is True  # its context is
    assert placement.request(ModelParams(n_gpu_layers="all"), [fixed])["n_gpu_layers"] == placement.ALL
    assert placement.request(ModelParams(devices=()), [CacheParams()])["fit"] is False      # CPU only
    assert placement.request(ModelParams(devices=("Vulkan0",)), [fixed])["devices"] == ["Vulkan0"]


def test_the_fitted_context_is_shared_by_the_automatic_slots():
    auto, fixed = CacheParams(n_parallel=2), CacheParams(n_ctx=1024)
    chosen = {"fitted": True, "status": "fits", "n_ctx": 3 * 10000}
    fitted = placement.fitted_caches([auto, fixed, CacheParams()], chosen, n_ctx_train=32768, model_name="m")
    assert [c.n_ctx for c in fitted] == [9984, 1024, 9984]          # 30000 / 3 slots, down to 256s
    capped = placement.fitted_caches([auto], {**chosen, "n_ctx": 10**6}, n_ctx_train=32768, model_name="m")
    assert capped[0].n_ctx == 32768                                 # never past the training context
    assert placement.fitted_caches([auto], {"fitted": False}, 32768, "m") == [auto]


def test_a_context_reduced_to_the_minimum_that_still_does_not_fit_is_an_error():
    chosen = {"fitted": True, "status": "does not fit", "n_ctx": placement.MIN_CTX * 4}
    with pytest.raises(ModelLoadError, match="model m: even a 4096-token context"):
        placement.fitted_caches([CacheParams(n_parallel=4)], chosen, 32768, "m")


def test_log_lines_say_where_layers_and_kv_are():
    memory = {"memory": {"Vulkan0": {"model": 3 << 30, "context": 1 << 29, "compute": 0},
                         "CPU": {"model": 200 << 20, "context": 0, "compute": 0}}, "model_devices": ["Vulkan0"]}
    chosen = {"fitted": True, "status": "fits", "n_gpu_layers": 20, "offload": True}
    assert placement.layers_line("m", chosen, 28, memory) == \
        "model m: 20/29 layers on Vulkan0 (3.0 GiB), 200 MiB in RAM; fitted to free memory"
    assert placement.cache_line("main", CacheParams(n_ctx=32768, n_parallel=4), memory) == \
        "cache main: n_ctx 32768 x 4 slots, KV 512 MiB on Vulkan0"
    cpu = {"memory": {"CPU": {"model": 1 << 20, "context": 1 << 20, "compute": 0}}, "model_devices": []}
    assert placement.layers_line("m", {"offload": False, "n_gpu_layers": 0}, 2, cpu) == "model m: 0/3 layers on the CPU"
