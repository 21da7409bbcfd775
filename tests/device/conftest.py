"""Device tests: the engine and the server on a real non-CPU ggml backend (`make test-vulkan`: Vulkan on
Mesa's lavapipe; the CUDA script on an NVIDIA GPU). Skipped, with the reason, where this build has no device
to offload to; LLAMABRIDGE_DEVICE names the device the tests expect (default: the first GPU-like one)."""

from __future__ import annotations

import os

import pytest


def _device() -> str | None:
    from llamabridge.engine import placement

    wanted = os.environ.get("LLAMABRIDGE_DEVICE")
    found = [d.name for d in placement.devices() if d.kind in ("gpu", "igpu")]
    if wanted:
        return wanted if wanted in found else None
    return found[0] if found else None


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    mine = [item for item in items if str(item.fspath).startswith(here)]
    for item in mine:
        item.add_marker(pytest.mark.device)
    if mine and _device() is None:
        skip = pytest.mark.skip(reason="no GPU-like device in this build (make test-vulkan runs these on "
                                       "lavapipe; GGML_VK_VISIBLE_DEVICES must name it)")
        for item in mine:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> str:
    name = _device()
    assert name is not None
    return name
