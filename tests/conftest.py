"""Shared fixtures: synthetic GGUF models (generated once, cached under .cache/models) and engines on them."""

from __future__ import annotations

import os

import httpx
import pytest

from llamabridge import synthetic

# servers started by tests keep saved prefixes in RAM only, unless a test gives a state dir: nothing
# is written under the user's cache directory, and no server restores what an earlier test left
os.environ["LLAMABRIDGE_STATE_DIR"] = ""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: longer-running tests (still part of `make test`)")
    config.addinivalue_line("markers", "device: on a GPU-like device (tests/device; make test-vulkan)")


@pytest.fixture(scope="session")
def qwen3_path():
    return synthetic.ensure_model(synthetic.QWEN3)


@pytest.fixture(scope="session")
def llama31_path():
    return synthetic.ensure_model(synthetic.LLAMA31)


@pytest.fixture(scope="session")
def scripted_path():
    return synthetic.ensure_model(synthetic.QWEN3_SCRIPTED)


@pytest.fixture(scope="session")
def tool_caller_path():
    return synthetic.ensure_model(synthetic.QWEN3_TOOL_CALLER)


def _engine_model(path):
    from llamabridge.engine import Model

    model = Model(path)
    yield model
    model.close()


@pytest.fixture(scope="session")
def qwen3(qwen3_path):
    yield from _engine_model(qwen3_path)


@pytest.fixture(scope="session")
def llama31(llama31_path):
    yield from _engine_model(llama31_path)


@pytest.fixture(scope="session")
def scripted(scripted_path):
    yield from _engine_model(scripted_path)


@pytest.fixture(scope="session")
def tool_caller(tool_caller_path):
    yield from _engine_model(tool_caller_path)


# -- a real server over the test config (tests/support.py), shared by the server and CLI tests

@pytest.fixture(scope="session")
def config_path(tmp_path_factory):
    from .support import write_config

    return write_config(tmp_path_factory.mktemp("config") / "test.toml")


@pytest.fixture(scope="session")
def server(config_path):
    from llamabridge.runtime.config import load_config
    from llamabridge.server.state import ServerState

    from .support import start_server

    running = start_server(ServerState(load_config(config_path), heartbeat_seconds=0.05))
    yield running
    running.stop()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client
