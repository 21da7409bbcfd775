"""TOML configuration: parsing, defaults, and errors that name the file and the key."""

from pathlib import Path

import pytest

from llamabridge.runtime.config import ConfigError, load_config, parse_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_shipped_configs_parse():
    claude = load_config(CONFIGS / "claude-code.toml")
    assert claude.route_for_model("claude-haiku-4-5-20251001").name == "background"
    assert claude.route_for_model("claude-opus-4-8").name == "main"
    assert claude.caches["main"].params.n_ctx == 65536 and claude.caches["main"].overflow == "clamp"
    multi = load_config(CONFIGS / "multi-model.toml")
    assert multi.route_for_model("coder").model == "coder"
    assert multi.route_for_model("claude-haiku-4-5").model == "small"
    assert multi.route_for_model("gpt-4o") is None


def test_defaults_one_cache_per_model():
    config = parse_config({"models": {"a": {"path": "a.gguf"}}}, "x.toml")
    assert list(config.caches) == ["a"] and config.route_for_model("anything").name == "a"
    two = parse_config({"models": {"a": {"path": "a.gguf"}, "b": {"path": "b.gguf"}}}, "x.toml")
    assert two.route_for_model("b").name == "b" and two.route_for_model("c") is None


@pytest.mark.parametrize("text, says", [
    ('[models.a]\npath = "a.gguf"\ncolour = "red"\n', "models.a.colour: unknown key"),
    ('[models.a]\n', "models.a: missing required key 'path'"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "b"\n', "caches.c.model: no [models.b]"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\nn_ctx = "big"\n', "caches.c.n_ctx: must be int"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\noverflow = "drop"\n', "caches.c.overflow"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\nstream_interval_ms = -5\n',
     "caches.c.stream_interval_ms: must be 0"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\nflash_attn = "yes"\n', "caches.c.flash_attn: must be 'auto'"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\nn_parallel = 0\n', "caches.c.n_parallel: must be a positive"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\nn_ctx = 4096\nkv_size = 100\n',
     "caches.c.kv_size: must be 0 or at least n_ctx (4096)"),
    ('[models.a]\npath = "a"\n[[routes]]\nmatch = "*"\ncache = "zzz"\n', "routes[0].cache: no [caches.zzz]"),
    ('[models.a]\npath = "a"\n[[routes]]\nmatch = "*"\n', "routes[0]: needs both"),
    ('nonsense = 1\n', "nonsense: unknown key"),
    ('[models.a]\npath = "a"\nn_gpu_layers = "most"\n', "models.a.n_gpu_layers: must be 'auto', 'all'"),
    ('[models.a]\npath = "a"\nn_gpu_layers = true\n', "models.a.n_gpu_layers: must be int or str"),
    ('[models.a]\npath = "a"\ndevices = 3\n', "models.a.devices: must be list or str"),
    ('[models.a]\npath = "a"\nsplit_mode = "tensor"\n', "models.a.split_mode: must be 'none', 'layer' or 'row'"),
    ('[models.a]\npath = "a"\ntensor_split = [0, 0]\n', "models.a.tensor_split: must be up to 16 shares"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\noffload_kqv = "no"\n', "caches.c.offload_kqv: must be bool"),
    ('[caches.c]\nmodel = "a"\n', "models: at least one"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\ndraft_model = "small"\n',
     "caches.c.draft_model: no [models.small]"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\ndraft_model = "a"\n',
     "caches.c.draft_model: is the cache's own"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\nspeculative = "draft-simple"\n',
     "caches.c.speculative: draft-simple drafts with a draft model"),
    ('[models.a]\npath = "a"\n[caches.c]\nmodel = "a"\ndraft_p_min = 2\n',
     "caches.c.draft_p_min: must be a probability"),
    ('[models.a\n', "invalid TOML"),
])
def test_errors_name_file_and_key(tmp_path, text, says):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message and says in info.value.message
    assert "\n" not in info.value.message


def test_cache_settings_are_checked_where_they_are_defined():
    """The library, the config and the CLI share one check (CacheParams), each naming the setting its way."""
    from llamabridge.engine.params import CacheParams, ParamError

    with pytest.raises(ParamError) as info:
        CacheParams(n_ubatch=0)
    assert info.value.field == "n_ubatch" and isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_model_placement_settings(tmp_path):
    config = load_config(write(tmp_path, '[models.a]\npath = "a"\nn_gpu_layers = "all"\ndevices = ["Vulkan0", "RPC0"]\n'
                                         'split_mode = "row"\ntensor_split = [3, 1]\nmain_gpu = 1\n'
                                         '[models.b]\npath = "b"\nn_gpu_layers = 20\ndevices = "none"\n'
                                         '[caches.c]\nmodel = "a"\noffload_kqv = false\n'))
    a, b = config.models["a"].params, config.models["b"].params
    assert (a.n_gpu_layers, a.devices, a.split_mode, a.tensor_split, a.main_gpu) == \
        ("all", ("Vulkan0", "RPC0"), "row", (3.0, 1.0), 1)
    assert (b.n_gpu_layers, b.devices) == (20, ())
    assert config.caches["c"].params.offload_kqv is False
    defaults = load_config(write(tmp_path, '[models.a]\npath = "a"\n')).models["a"].params
    assert (defaults.n_gpu_layers, defaults.devices) == ("auto", None)


def test_cache_settings(tmp_path):
    config = load_config(write(tmp_path, '[models.a]\npath = "a"\n[caches.main]\nmodel = "a"\nn_ctx = 4096\n'
                                         'n_threads = 4\nflash_attn = "on"\ntype_k = "q8_0"\noverflow = "reject"\n'
                                         'stream_interval_ms = 0\n'))
    cache = config.caches["main"]
    assert (cache.params.n_ctx, cache.params.n_threads, cache.params.flash_attn, cache.params.type_k,
            cache.params.stream_interval_ms) == (4096, 4, "on", "q8_0", 0)
    assert cache.overflow == "reject"


def test_a_draft_model(tmp_path):
    config = load_config(write(tmp_path, '[models.big]\npath = "big.gguf"\n[models.small]\npath = "small.gguf"\n'
                                         '[caches.c]\nmodel = "big"\ndraft_model = "small"\ndraft_p_min = 0.5\n'
                                         'speculative = "ngram-mod"\n'))
    params = config.caches["c"].params
    assert params.draft_model == "small" and params.draft_p_min == 0.5
    assert params.speculative_types == ("ngram-mod", "draft-simple")


def test_serve_draft_model_flag_config():
    from llamabridge.engine.params import CacheParams
    from llamabridge.runtime.config import DRAFT_MODEL_NAME, single_model_config

    config = single_model_config("/m/big.gguf", CacheParams(draft_model=DRAFT_MODEL_NAME), draft_model="/m/small.gguf")
    assert {n: m.path for n, m in config.models.items()} == {"big": "/m/big.gguf", "draft": "/m/small.gguf"}
    assert config.caches["big"].params.draft_model == "draft" and config.route_for_model("x").name == "big"
