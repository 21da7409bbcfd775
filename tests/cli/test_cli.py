"""The command line as a whole: help with examples everywhere, one clean line for a user's mistake."""

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(*args, exe="llamabridge"):
    return subprocess.run([str(BIN / exe), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", ["serve", "chat", "bench", "hfd", "cc", "devices", "rpc-server"])
def test_every_command_has_help_with_examples(command):
    result = run(command, "--help")
    assert result.returncode == 0
    assert "Examples" in result.stdout and f"llamabridge {command}" in result.stdout


def test_short_aliases_take_no_system_tools_name():
    result = run("--help", exe="hfd")
    assert result.returncode == 0 and "Examples" in result.stdout
    # `cc` is the C compiler and `serve` a common static file server: inside the venv (uv run, an activated
    # one) an alias of that name would be run instead, and a C build there would start Claude Code
    assert not (BIN / "cc").exists() and not (BIN / "serve").exists()


def test_top_level_help_is_quick_and_lists_commands():
    result = run("--help")
    for command in ("serve", "chat", "bench", "hfd", "cc"):
        assert command in result.stdout


@pytest.mark.parametrize("args", [
    ["chat", "--model", "no/such/model.gguf"],
    ["bench", "--model", "no/such/model.gguf"],
    ["serve", "--model", "no/such/model.gguf"],
])
def test_missing_model_is_one_clean_line(args):
    result = run(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "no model at 'no/such/model.gguf'" in result.stderr and "llamabridge hfd" in result.stderr


def test_bad_config_in_chat(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[models.a]\n")
    result = run("chat", "--config", str(config))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "models.a: missing required key 'path'" in result.stderr


def test_chat_against_no_server_says_so():
    result = subprocess.run([str(BIN / "llamabridge"), "chat", "--url", "http://127.0.0.1:9"], input="hi\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot talk to http://127.0.0.1:9" in result.stderr
