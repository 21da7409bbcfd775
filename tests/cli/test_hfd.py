"""`llamabridge hfd` against a fake Hub on loopback (HF_ENDPOINT), as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .fake_hub import FakeHub

BIN = Path(sys.executable).parent
REPO = "acme/Tiny-GGUF"
FILES = {
    "README.md": b"# Tiny\n",
    "tiny-Q4_K_M.gguf": b"GGUF" + os.urandom(300_000),
    "tiny-Q8_0.gguf": b"GGUF" + os.urandom(200_000),
    "Q6/tiny-Q6-00001-of-00002.gguf": b"GGUF" + b"1" * 1000,
    "Q6/tiny-Q6-00002-of-00002.gguf": b"GGUF" + b"2" * 1000,
}


def hfd(args, endpoint, cwd, token=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(cwd / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"})
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([str(BIN / "hfd"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def hub():
    with FakeHub({REPO: dict(FILES)}) as hub:
        yield hub


def test_include_downloads_into_models_repo_id(hub, tmp_path):
    result = hfd([REPO, "--include", "*Q4_K_M*"], hub.url, tmp_path)
    assert result.returncode == 0, result.stderr
    target = tmp_path / "models" / "acme" / "Tiny-GGUF"
    assert (target / "tiny-Q4_K_M.gguf").read_bytes() == FILES["tiny-Q4_K_M.gguf"]
    assert not (target / "tiny-Q8_0.gguf").exists() and not (target / "README.md").exists()
    assert result.stdout.strip() == str(Path("models") / REPO)


def test_exclude_and_local_dir(hub, tmp_path):
    result = hfd([REPO, "--include", "*.gguf", "--exclude", "*Q8*", "--exclude", "Q6/*",
                  "--local-dir", str(tmp_path / "here")], hub.url, tmp_path)
    assert result.returncode == 0, result.stderr
    got = sorted(p.name for p in (tmp_path / "here").rglob("*.gguf"))
    assert got == ["tiny-Q4_K_M.gguf"]


def test_subfolder_split_model_and_resume(hub, tmp_path):
    target = tmp_path / "models" / REPO
    assert hfd([REPO, "--include", "Q6/*"], hub.url, tmp_path).returncode == 0
    first = target / "Q6" / "tiny-Q6-00001-of-00002.gguf"
    assert first.read_bytes() == FILES["Q6/tiny-Q6-00001-of-00002.gguf"]
    # a second run finds the files complete and downloads nothing again
    before = len([r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]])
    assert hfd([REPO, "--include", "Q6/*"], hub.url, tmp_path).returncode == 0
    after = len([r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]])
    assert after == before
    from llamabridge.runtime.model_files import resolve_model_path
    assert resolve_model_path(REPO, models_dir=tmp_path / "models") == first


def test_token_is_sent(tmp_path):
    with FakeHub({REPO: dict(FILES)}, token="hf_secret") as hub:
        denied = hfd([REPO, "--include", "README.md"], hub.url, tmp_path)
        assert denied.returncode == 1 and "Traceback" not in denied.stderr
        allowed = hfd([REPO, "--include", "README.md"], hub.url, tmp_path, token="hf_secret")
        assert allowed.returncode == 0, allowed.stderr


def test_unknown_repo(hub, tmp_path):
    result = hfd(["acme/Nope"], hub.url, tmp_path)
    assert result.returncode == 1
    assert "acme/Nope" in result.stderr and "not found" in result.stderr and "Traceback" not in result.stderr


def test_no_matching_files(hub, tmp_path):
    result = hfd([REPO, "--include", "*Q2_K*"], hub.url, tmp_path)
    assert result.returncode == 1 and "no file" in result.stderr and "tiny-Q4_K_M.gguf" in result.stderr


def test_no_network(tmp_path):
    result = hfd([REPO], "http://127.0.0.1:9", tmp_path, timeout=180)
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr


def test_revision(hub, tmp_path):
    from .fake_hub import COMMIT

    ok = hfd([REPO, "--include", "README.md", "--revision", COMMIT], hub.url, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "models" / REPO / "README.md").read_bytes() == FILES["README.md"]
    bad = hfd([REPO, "--revision", "no-such-branch"], hub.url, tmp_path)
    assert bad.returncode == 1 and "no-such-branch" in bad.stderr and "Traceback" not in bad.stderr
