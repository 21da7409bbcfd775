"""`llamabridge codex`: a fake `codex` that records what it was given, and the real Codex CLI from npm."""

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import tomllib

from llamabridge.cli.codex_home import dump_toml
from llamabridge.engine.params import CacheParams
from llamabridge.runtime.config import load_config, single_model_config
from llamabridge.server.state import ServerState
from llamabridge.synthetic import QWEN3_SCRIPTED, SCRIPTED_REPLY, ensure_model

from ..support import fake_program, start_server

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
CODEX_VERSION = "0.171.0"

FAKE_CODEX = """#!{python}
import json, os, pathlib, sys
if sys.argv[1:3] == ["debug", "models"]:
    print(json.dumps({{"models": [{{"slug": "gpt-x", "tool_mode": "code_mode_only", "context_window": 1}},
                                 {{"slug": "gpt-plain", "context_window": 272000,
                                   "base_instructions": "Be Codex."}}]}}))
    sys.exit(0)
home = pathlib.Path(os.environ["CODEX_HOME"])
with open({record!r}, "w") as f:
    json.dump({{"args": sys.argv[1:], "home": str(home), "config": (home / "config.toml").read_text(),
               "auth": (home / "auth.json").read_text() if (home / "auth.json").exists() else None}}, f)
sys.exit(5)
"""


@pytest.fixture(scope="module")
def mock_server(config_path):
    running = start_server(ServerState(load_config(config_path), mock=True))
    yield running
    running.stop()


def fake_codex(tmp_path) -> tuple[Path, Path]:
    return fake_program(tmp_path, "codex", FAKE_CODEX)


def codex_env(tmp_path, bindir: Path, url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "LLAMABRIDGE_", "XDG_"))}
    env.update(PATH=f"{bindir}{os.pathsep}{env['PATH']}", HOME=str(tmp_path / "home"), LLAMABRIDGE_URL=url)
    return env


def test_private_home_points_codex_at_the_server(mock_server, tmp_path):
    bindir, record = fake_codex(tmp_path)
    user_home = tmp_path / "home" / ".codex"
    user_home.mkdir(parents=True)
    (user_home / "config.toml").write_text('approval_policy = "never"\nmodel = "gpt-5"\n\n'
                                           '[profiles.fast]\nmodel = "o4"\n')
    (user_home / "auth.json").write_text('{"token": "mine"}')
    env = codex_env(tmp_path, bindir, mock_server.url)
    result = subprocess.run([str(BIN / "llamabridge"), "codex", "-m", "tool-caller", "exec", "--json", "Say hi"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 5, result.stderr       # Codex's own exit code
    seen = json.loads(record.read_text())
    assert seen["args"] == ["-m", "tool-caller", "exec", "--json", "Say hi"]
    assert Path(seen["home"]) == tmp_path / "home" / ".cache" / "llamabridge" / "codex-home"
    config = tomllib.loads(seen["config"])
    assert config["model"] == "tool-caller" and config["model_provider"] == "llamabridge"
    provider = config["model_providers"]["llamabridge"]
    assert provider["base_url"] == mock_server.url + "/v1" and provider["wire_api"] == "responses"
    assert config["approval_policy"] == "never" and config["profiles"]["fast"]["model"] == "o4"   # the user's own
    catalog = json.loads(Path(config["model_catalog_json"]).read_text())["models"]
    assert [(m["slug"], m["context_window"]) for m in catalog] == [("tool-caller", 4096)]
    assert catalog[0]["base_instructions"] == "Be Codex." and catalog[0]["input_modalities"] == ["text"]
    assert seen["auth"] == '{"token": "mine"}'                     # linked, not copied
    assert (user_home / "config.toml").read_text().startswith('approval_policy = "never"')   # untouched


def test_default_model_is_the_first_the_server_lists(mock_server, tmp_path):
    bindir, record = fake_codex(tmp_path)
    result = subprocess.run([str(BIN / "llamabridge"), "codex", "exec", "hi"], env=codex_env(tmp_path, bindir,
                            mock_server.url), capture_output=True, text=True, timeout=120)
    assert result.returncode == 5, result.stderr
    config = tomllib.loads(json.loads(record.read_text())["config"])
    assert config["model"] == "tool-caller"      # the test config's first literal route


def test_missing_codex_and_missing_server(mock_server, tmp_path):
    env = codex_env(tmp_path, tmp_path, mock_server.url)
    env["PATH"] = str(BIN)
    result = subprocess.run([str(BIN / "llamabridge"), "codex"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "npm install -g @openai/codex" in result.stderr
    bindir, _ = fake_codex(tmp_path)
    env = codex_env(tmp_path, bindir, "http://127.0.0.1:9")
    result = subprocess.run([str(BIN / "llamabridge"), "codex"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "no llamabridge server answers" in result.stderr
    assert "Traceback" not in result.stderr


def test_toml_writer_round_trips():
    data = {"model": "x", "n": 3, "ratio": 0.5, "on": True, "list": ["a", 1], "when": date(2026, 1, 2),
            "inline": [{"a": 1}], "weird key": "v", "t": {"nested": {"deep": "y"}, "k": "z"}, "empty": {}}
    assert tomllib.loads(dump_toml(data)) == data


# ---------------------------------------------------------------- the real Codex CLI

def install_codex() -> Path:
    """Codex CLI from the npm registry (pinned), installed once under .cache/codex."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not available: cannot install Codex CLI (npm install @openai/codex@{CODEX_VERSION})")
    prefix = ROOT / ".cache" / "codex"
    package = prefix / "node_modules" / "@openai" / "codex" / "package.json"
    if not package.exists() or json.loads(package.read_text())["version"] != CODEX_VERSION:
        installed = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                                    f"@openai/codex@{CODEX_VERSION}"], capture_output=True, text=True, timeout=600)
        if installed.returncode != 0:   # the npm registry cannot be reached from here
            pytest.skip(f"npm could not install Codex CLI: {installed.stderr.strip()[-300:]}")
    return prefix / "node_modules" / ".bin"


@pytest.fixture(scope="module")
def demo_server():
    config = single_model_config(str(ensure_model(QWEN3_SCRIPTED)), CacheParams(n_ctx=65536))
    running = start_server(ServerState(config))
    yield running
    running.stop()


def test_real_codex_exec_completes(demo_server, tmp_path):
    bindir = install_codex()
    work = tmp_path / "work"
    work.mkdir()
    env = codex_env(tmp_path, bindir, demo_server.url)
    result = subprocess.run([str(BIN / "llamabridge"), "codex", "exec", "--skip-git-repo-check", "Say hello"],
                            env=env, cwd=work, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(SCRIPTED_REPLY)
    assert "Model metadata" not in result.stderr and "error" not in result.stderr.lower().replace("error_", "")


def test_real_codex_exec_runs_a_command_on_gpt_oss_and_reads_its_output(tmp_path):
    """codex exec on a model of gpt-oss's own syntax (what `codex --oss` runs): the model calls exec_command,
    Codex runs it (the file it creates is there), sends its output back, and the model's answer to that output
    is the last message."""
    from llamabridge.synthetic import families

    bindir = install_codex()
    path, scripted = families.ensure_family_model(families.FAMILIES["gpt-oss"])
    server = start_server(ServerState(single_model_config(str(path), CacheParams(n_ctx=65536), name="m")))
    work = tmp_path / "work"
    work.mkdir()
    env = codex_env(tmp_path, bindir, server.url)
    try:
        result = subprocess.run([str(BIN / "llamabridge"), "codex", "exec", "--skip-git-repo-check",
                                 "--dangerously-bypass-approvals-and-sandbox", families.CODEX_PROMPT],
                                env=env, cwd=work, capture_output=True, text=True, timeout=900,
                                stdin=subprocess.DEVNULL)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "ran.txt").exists()                                        # the command ran
    assert result.stdout.strip().endswith(scripted.answers["codex-after"]["content"])   # its output came back
