"""`llamabridge cc`: a fake `claude` that records what it was given, and the real Claude Code from npm."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamabridge.runtime.config import load_config
from llamabridge.server.state import ServerState
from llamabridge.synthetic import SCRIPTED_REPLY

from ..support import fake_program, start_server

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
CLAUDE_CODE_VERSION = "2.1.332"     # the current release when this was pinned (its requests have the fixtures' shape)

FAKE_CLAUDE = """#!{python}
import json, os, sys
with open({record!r}, "w") as f:
    json.dump({{"args": sys.argv[1:], "env": dict(os.environ)}}, f)
sys.exit(7)
"""


@pytest.fixture(scope="module")
def mock_server(config_path):
    running = start_server(ServerState(load_config(config_path), mock=True))
    yield running
    running.stop()


def fake_claude(tmp_path) -> tuple[Path, Path]:
    return fake_program(tmp_path, "claude", FAKE_CLAUDE)


def run_cc(args, env, timeout=120):
    return subprocess.run([str(BIN / "llamabridge"), "cc", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def base_env(path_first: Path | None = None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_", "LLAMABRIDGE_"))}
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


def test_arguments_environment_and_exit_code(mock_server, tmp_path):
    bindir, record = fake_claude(tmp_path)
    result = run_cc(["--url", mock_server.url, "-p", "hi there", "--output-format", "json", "--verbose"],
                    base_env(bindir))
    assert result.returncode == 7, result.stderr
    seen = json.loads(record.read_text())
    assert seen["args"] == ["-p", "hi there", "--output-format", "json", "--verbose"]
    env = seen["env"]
    assert env["ANTHROPIC_BASE_URL"] == mock_server.url
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-none"
    assert env["CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"
    # claude-opus-4-8 routes to the "main" cache of the test config: n_ctx 65536
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "16384"
    assert int(env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"]) == 100000
    assert int(env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"]) == int(100 * (65536 - 16384) / 100000)
    assert env["DISABLE_TELEMETRY"] == "1" and env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"


def test_user_settings_win(mock_server, tmp_path):
    bindir, record = fake_claude(tmp_path)
    result = run_cc(["-p", "x"], base_env(bindir, LLAMABRIDGE_URL=mock_server.url, ANTHROPIC_API_KEY="sk-mine",
                                          CLAUDE_CODE_MAX_OUTPUT_TOKENS="999", ANTHROPIC_MODEL="claude-haiku-4-5"))
    assert result.returncode == 7
    env = json.loads(record.read_text())["env"]
    assert env["ANTHROPIC_API_KEY"] == "sk-mine" and env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "999"
    assert env["ANTHROPIC_BASE_URL"] == mock_server.url


def test_model_argument_sizes_from_its_cache(mock_server, tmp_path):
    bindir, record = fake_claude(tmp_path)
    result = run_cc(["--url", mock_server.url, "--model", "claude-haiku-4-5", "-p", "x"], base_env(bindir))
    assert result.returncode == 7
    env = json.loads(record.read_text())["env"]
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == str(8192 // 4)   # the "fast" cache: n_ctx 8192


def test_a_server_with_a_key_gets_it_from_llamabridge_api_key(config_path, tmp_path):
    keyed = start_server(ServerState(load_config(config_path), mock=True, api_keys=("sk-team-1",)))
    try:
        bindir, record = fake_claude(tmp_path)
        result = run_cc(["--url", keyed.url, "-p", "x"], base_env(bindir))
        assert result.returncode == 1 and "requires an API key" in result.stderr
        assert "LLAMABRIDGE_API_KEY" in result.stderr
        result = run_cc(["--url", keyed.url, "-p", "x"], base_env(bindir, LLAMABRIDGE_API_KEY="sk-team-1"))
        assert result.returncode == 7, result.stderr
        assert json.loads(record.read_text())["env"]["ANTHROPIC_API_KEY"] == "sk-team-1"
    finally:
        keyed.stop()


def test_a_context_smaller_than_claude_codes_prompt_is_warned_about(mock_server, tmp_path):
    bindir, _ = fake_claude(tmp_path)
    result = run_cc(["--url", mock_server.url, "--model", "small-model", "-p", "x"], base_env(bindir))
    assert result.returncode == 7
    assert "warning: cache small holds 256 tokens" in result.stderr and "--n-ctx" in result.stderr
    result = run_cc(["--url", mock_server.url, "-p", "x"], base_env(bindir))       # the main cache: 65536
    assert "warning" not in result.stderr


def test_no_server(tmp_path):
    bindir, _ = fake_claude(tmp_path)
    result = run_cc(["--url", "http://127.0.0.1:9", "-p", "x"], base_env(bindir))
    assert result.returncode == 1 and "no llamabridge server answers" in result.stderr
    assert "Traceback" not in result.stderr


def test_claude_not_installed(mock_server, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = base_env()
    env["PATH"] = str(empty)
    result = subprocess.run([str(BIN / "llamabridge"), "cc", "--url", mock_server.url], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "npm install -g @anthropic-ai/claude-code" in result.stderr and "Traceback" not in result.stderr


def install_claude_code() -> Path | None:
    """The real Claude Code from the npm registry, installed once under .cache/claude-code."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    prefix = ROOT / ".cache" / "claude-code"
    package = prefix / "node_modules" / "@anthropic-ai" / "claude-code"
    manifest = package / "package.json"
    if not (prefix / "node_modules" / ".bin" / "claude").exists() or not manifest.exists() \
            or json.loads(manifest.read_text())["version"] != CLAUDE_CODE_VERSION:
        installed = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                                    f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"], capture_output=True,
                                   text=True, timeout=600)
        if installed.returncode != 0:   # the npm registry cannot be reached from here
            pytest.skip(f"npm could not install Claude Code: {installed.stderr.strip()[-300:]}")
    # npm may skip install scripts; the package's own installer links the platform binary (idempotent)
    subprocess.run(["node", "install.cjs"], cwd=package, check=True, capture_output=True, timeout=300)
    return prefix / "node_modules" / ".bin"


@pytest.fixture(scope="module")
def claude_bin():
    bindir = install_claude_code()
    if bindir is None:
        pytest.skip("npm is not available: cannot install Claude Code "
                    f"(npm install @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION})")
    return bindir


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    from llamabridge.engine import CacheParams
    from llamabridge.runtime.config import single_model_config
    from llamabridge.synthetic import QWEN3_SCRIPTED, ensure_model

    config = single_model_config(str(ensure_model(QWEN3_SCRIPTED)), CacheParams(n_ctx=65536))
    running = start_server(ServerState(config))
    yield running
    running.stop()


def test_real_claude_code_completes(claude_bin, demo_server, tmp_path):
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = base_env(claude_bin, HOME=str(home), LLAMABRIDGE_URL=demo_server.url)
    result = subprocess.run([str(BIN / "llamabridge"), "cc", "-p", "hi", "--output-format", "json"], env=env,
                            cwd=work, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    output = json.loads(result.stdout)
    assert output["is_error"] is False and output["subtype"] == "success"
    assert output["result"] == SCRIPTED_REPLY
    assert output["usage"]["input_tokens"] + output["usage"]["cache_read_input_tokens"] > 10000


@pytest.mark.parametrize("name", ["qwen3-coder", "glm-4.7"])
def test_real_claude_code_runs_bash_on_a_family_model_and_reads_its_result(claude_bin, name, tmp_path):
    """Claude Code -p on a model of the family's own tool-call syntax: the model calls Bash, Claude Code runs
    the command (the file it creates is there), sends its output back, and the model's answer to that output
    is the result."""
    from llamabridge.engine import CacheParams
    from llamabridge.runtime.config import single_model_config
    from llamabridge.synthetic import families

    path, scripted = families.ensure_family_model(families.FAMILIES[name])
    server = start_server(ServerState(single_model_config(str(path), CacheParams(n_ctx=65536), name="m")))
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = base_env(claude_bin, HOME=str(home), LLAMABRIDGE_URL=server.url)
    try:
        result = subprocess.run([str(BIN / "llamabridge"), "cc", "-p", "Create ran.txt with the Bash tool.",
                                 "--output-format", "json", "--max-turns", "4", "--allowedTools", "Bash"],
                                env=env, cwd=work, capture_output=True, text=True, timeout=900,
                                stdin=subprocess.DEVNULL)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    output = json.loads(result.stdout)
    assert (work / "ran.txt").exists()                        # the tool ran
    assert output["result"] == scripted.answers["bash-after"]["content"]     # its output reached the model
    assert output["num_turns"] >= 2
