"""Saved prefixes through real `llamabridge serve` processes: a restart, a kill during a save, /info.

The model is the random-weight one, so a greedy answer depends on every bit of the KV it reads:
an answer equal to the one without a restart means the restored state is the evaluated one.
"""

import json
import os
import re
from pathlib import Path

import httpx
import pytest

from llamabridge import synthetic

from ..support import FIXTURES, ServeProcess, sse_events

ROOT = Path(__file__).resolve().parents[2]
FIRST = FIXTURES / "claude-code-2.1.331-first-request.json"
NEXT = FIXTURES / "claude-code-2.1.331-tool-result-request.json"
SKIP_HEADERS = {"host", "content-length", "accept-encoding", "connection"}


def claude_code_config(tmp_path: Path, state_dir: Path) -> Path:
    """configs/claude-code.toml as shipped, on the random test model, with its saved prefixes in state_dir."""
    text = (ROOT / "configs" / "claude-code.toml").read_text()
    model = synthetic.ensure_model(synthetic.QWEN3)
    text, n = re.subn(r'^path = ".*"', f'path = "{model}"', text, flags=re.M)
    assert n == 1
    path = tmp_path / "claude-code.toml"
    path.write_text(f'state_dir = "{state_dir}"\ncache_ram_mb = 256\n\n' + text)
    return path


def replay(url: str, capture_file: Path) -> tuple[str, dict]:
    """A captured Claude Code request, greedy and short: (the answer's text, its usage)."""
    capture = json.loads(capture_file.read_text())
    body = {**capture["body"], "temperature": 0, "max_tokens": 24}
    headers = {k: v for k, v in capture["headers"].items() if k.lower() not in SKIP_HEADERS}
    with httpx.Client(base_url=url, timeout=300) as http, \
            http.stream("POST", capture["path"], json=body, headers=headers) as response:
        assert response.status_code == 200, response.read()
        events = sse_events(response)
    text = "".join(d["delta"].get("text", "") + d["delta"].get("thinking", "") for n, d in events
                   if n == "content_block_delta")
    return text, [d for n, d in events if n == "message_delta"][-1]["usage"]


@pytest.mark.skipif(not (FIRST.exists() and NEXT.exists()), reason=f"captured requests not found in {FIXTURES}")
def test_restart_restores_claude_codes_prefix_from_disk(tmp_path):
    """configs/claude-code.toml: turn one, stop, start, turn two: the prefix comes back from disk and the
    answer equals the one of a server that never stopped."""
    with ServeProcess("--config", str(claude_code_config(tmp_path, tmp_path / "reference"))) as server:
        replay(server.url, FIRST)
        expected, expected_usage = replay(server.url, NEXT)
    state_dir = tmp_path / "kv"
    config = claude_code_config(tmp_path, state_dir)
    with ServeProcess("--config", str(config)) as server:
        _, first_usage = replay(server.url, FIRST)
        log = server.stop()
    assert "saved" in log and len(list(state_dir.glob("*.lbkv"))) == 1
    with ServeProcess("--config", str(config)) as server:
        line = server.wait_for("restored")
        assert "from disk" in line and "ms" in line
        info = httpx.get(server.url + "/info").json()["saved_prefixes"]
        assert info["disk"]["entries"] == 1 and info["disk"]["dir"] == str(state_dir)
        answer, usage = replay(server.url, NEXT)
    assert usage["cache_read_input_tokens"] == expected_usage["cache_read_input_tokens"] > 10_000
    assert usage["input_tokens"] == expected_usage["input_tokens"]
    assert answer == expected


def ask(url: str, name: str, turn: int = 1) -> dict:
    """One conversation's turn (a prompt of a few hundred tokens): the response's usage."""
    messages = []
    for t in range(turn):
        messages.append({"role": "user", "content": f"{name}, part {t}: " + f"{name} " * 200})
        if t < turn - 1:
            messages.append({"role": "assistant", "content": f"Noted part {t}."})
    body = {"model": "random", "max_tokens": 4, "temperature": 0, "messages": messages}
    response = httpx.post(url + "/v1/messages", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["usage"]


def test_a_kill_during_a_save_loses_that_entry_only(tmp_path, qwen3_path):
    args = ("--model", str(qwen3_path), "--n-ctx", "4096", "--state-dir", str(tmp_path), "--cache-ram-mb", "0")
    with ServeProcess(*args, env={"LLAMABRIDGE_FAULT_STALL_SAVE": "2"}) as server:
        first = ask(server.url, "alpha")
        ask(server.url, "bravo")        # alpha leaves the slot: saved to disk (no RAM tier)
        ask(server.url, "charlie")      # bravo leaves: its save stops halfway...
        server.wait_for("fault injection")
        assert list(tmp_path.glob("*.lbkv.tmp-*")), "the save was in progress"
        server.kill()                   # ...and the server dies there (kill -9)
    assert len(list(tmp_path.glob("*.lbkv"))) == 1
    with ServeProcess(*args) as server:
        line = server.wait_for("restored")                   # alpha's prefix, back in the slot
        assert "from disk" in line
        assert any("interrupted save" in line for line in server.lines)
        assert not list(tmp_path.glob("*tmp*"))
        assert ask(server.url, "alpha", 2)["cache_read_input_tokens"] >= 0.9 * first["input_tokens"]
        assert ask(server.url, "bravo", 2)["cache_read_input_tokens"] < 16     # lost with the kill
        server.stop()


def test_bad_files_in_the_state_dir_are_skipped_with_a_warning(tmp_path, qwen3_path):
    args = ("--model", str(qwen3_path), "--n-ctx", "4096", "--state-dir", str(tmp_path))
    with ServeProcess(*args) as server:
        first = ask(server.url, "delta")
        server.stop()
    (saved,) = tmp_path.glob("*.lbkv")
    (tmp_path / "copy.lbkv").write_bytes(saved.read_bytes()[:-100])          # truncated
    with ServeProcess(*args, "--n-ctx", "2048") as server:                    # another n_ctx
        server.wait_for("n_ctx 4096 (here 2048)")
        assert any("truncated" in line for line in server.lines)
        assert ask(server.url, "delta", 2)["cache_read_input_tokens"] < 16
        server.stop()
    assert saved.exists() and not (tmp_path / "copy.lbkv").exists()
    with ServeProcess(*args) as server:                                       # the original n_ctx again
        server.wait_for("restored")
        assert ask(server.url, "delta", 2)["cache_read_input_tokens"] >= 0.9 * first["input_tokens"]
        server.stop()


def test_state_flags_and_keys_are_validated(tmp_path, qwen3_path):
    from llamabridge.runtime.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="cache_ram_mb: must be 0"):
        parse_config({"models": {"m": {"path": "x"}}, "cache_ram_mb": -1}, "test.toml")
    with pytest.raises(ConfigError, match="state_dir: must be str"):
        parse_config({"models": {"m": {"path": "x"}}, "state_dir": 3}, "test.toml")
    config = parse_config({"models": {"m": {"path": "x"}}, "state_dir": "kv", "cache_disk_mb": 100}, "t.toml",
                          base_dir=tmp_path)
    assert config.store.resolve()[0] == tmp_path / "kv" and config.store.resolve()[2] == 100 << 20
    assert parse_config({"models": {"m": {"path": "x"}}, "state_dir": ""}, "t").store.resolve()[0] is None
    import subprocess
    import sys
    result = subprocess.run([str(Path(sys.executable).parent / "llamabridge"), "serve", "--model", str(qwen3_path),
                             "--cache-disk-mb", "-5"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--cache-disk-mb" in result.stderr


def test_default_state_dir_is_under_the_users_cache(monkeypatch, tmp_path):
    from llamabridge.runtime.config import StoreConfig, default_state_dir

    monkeypatch.delenv("LLAMABRIDGE_STATE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_state_dir() == os.path.join(str(tmp_path), "llamabridge", "kv")
    state_dir, ram, disk = StoreConfig().resolve()
    assert state_dir == tmp_path / "llamabridge" / "kv"
    assert 0 < ram <= 8192 << 20 and 0 < disk <= 20480 << 20
    monkeypatch.setenv("LLAMABRIDGE_STATE_DIR", "")
    assert StoreConfig().resolve()[0] is None
