"""Starting Codex CLI against a llamabridge server: a private CODEX_HOME that points Codex at it.

The private home holds a config.toml (the user's own settings, plus a provider with
`wire_api = "responses"` at the server, the model, and a model catalog entry sized to the
cache's context) and links to everything else in the user's Codex home (auth, sessions,
history, skills), which stays untouched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from ..errors import BridgeError
from .claude_code import ServerInfo
from .client import key_headers, server_key

if sys.version_info >= (3, 11):
    import tomllib
else:                             # Python 3.10
    import tomli as tomllib

log = logging.getLogger("llamabridge.cli.codex_home")

PROVIDER = "llamabridge"
INSTALL_HINT = "install it with: npm install -g @openai/codex"
CATALOG_FILE = "llamabridge-models.json"


class CodexError(BridgeError):
    """Codex CLI cannot be started: not installed, or its home cannot be prepared."""


def find_codex() -> str:
    path = shutil.which("codex")
    if path is None:
        raise CodexError(f"Codex CLI (`codex`) is not on PATH; {INSTALL_HINT}")
    return path


def user_codex_home(env: dict[str, str]) -> Path:
    return Path(env.get("CODEX_HOME") or Path(env.get("HOME") or Path.home()) / ".codex")


def private_codex_home(env: dict[str, str]) -> Path:
    cache = Path(env.get("XDG_CACHE_HOME") or Path(env.get("HOME") or Path.home()) / ".cache")
    return cache / "llamabridge" / "codex-home"


def default_model(url: str) -> str:
    """The first model name the server lists (what `serve --model` or the config's routes offer)."""
    try:
        with httpx.Client(base_url=url, timeout=5) as http:
            response = http.get("/v1/models", headers=key_headers(server_key()))
    except httpx.HTTPError:
        return "local-model"        # no server: checking it says so
    names = [m["id"] for m in response.json().get("data", [])] if response.status_code == 200 else []
    return names[0] if names else "local-model"


def bundled_catalog(codex: str, private: Path) -> list[dict]:
    """Codex's own model catalog (`codex debug models`, in a home of its own so no catalog of ours
    replaces it): the template of our entry. [] if it fails."""
    probe = private / "catalog-probe"
    probe.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CODEX_HOME=str(probe))
    try:
        result = subprocess.run([codex, "debug", "models"], env=env, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        return json.loads(result.stdout)["models"] if result.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError):
        return []


def catalog_entry(templates: list[dict], model: str, n_ctx: int) -> dict | None:
    """Codex's metadata for `model`: a bundled entry that needs no code mode, renamed and sized to the
    cache's context, text input only. None when Codex offers no entry to start from."""
    plain = [t for t in templates if not t.get("tool_mode")] or templates
    if not plain:
        return None
    entry = json.loads(json.dumps(plain[0]))
    entry.update({
        "slug": model, "display_name": model, "description": f"{model}, served by llamabridge",
        "context_window": n_ctx, "max_context_window": n_ctx, "visibility": "list", "priority": 0,
        "input_modalities": ["text"], "upgrade": None, "availability_nux": None,
        "additional_speed_tiers": [], "service_tiers": [], "default_reasoning_summary": "auto",
    })
    return entry


def write_home(private: Path, user_home: Path, server: ServerInfo, model: str, entry: dict | None,
               api_key_env: str | None = None) -> Path:
    """The private CODEX_HOME: config.toml and the model catalog written, the rest linked to the user's."""
    private.mkdir(parents=True, exist_ok=True)
    user_config = user_home / "config.toml"
    config: dict[str, Any] = {}
    if user_config.is_file():
        try:
            config = tomllib.loads(user_config.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise CodexError(f"{user_config}: invalid TOML: {exc}") from None
    provider = {"name": "llamabridge", "base_url": f"{server.url}/v1", "wire_api": "responses",
                "stream_idle_timeout_ms": 3_600_000, "request_max_retries": 1, "stream_max_retries": 1}
    if api_key_env:
        provider["env_key"] = api_key_env
    config["model"] = model
    config["model_provider"] = PROVIDER
    config.setdefault("model_providers", {})[PROVIDER] = provider
    if entry is not None:
        catalog = private / CATALOG_FILE
        _write_atomic(catalog, json.dumps({"models": [entry]}, indent=1))
        config["model_catalog_json"] = str(catalog)
    else:
        config["model_context_window"] = server.n_ctx
    _write_atomic(private / "config.toml", dump_toml(config))
    _link_user_files(private, user_home)
    return private


def _link_user_files(private: Path, user_home: Path) -> None:
    if not user_home.is_dir():
        return
    for source in user_home.iterdir():
        if source.name in ("config.toml", CATALOG_FILE, "catalog-probe"):
            continue
        target = private / source.name
        if target.is_symlink():
            target.unlink()           # relinked: the user's home may have moved
        if not target.exists():
            target.symlink_to(source)


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


# ---------------------------------------------------------------- a small TOML writer (config.toml only)

def dump_toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _dump_table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)}
    if path and (scalars or not table):
        lines.append(f"\n[{'.'.join(_key(p) for p in path)}]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            _dump_table(value, path + [key], lines)
        elif _is_table_array(value):
            for item in value:
                lines.append(f"\n[[{'.'.join(_key(p) for p in path + [key])}]]")
                for k, v in item.items():
                    lines.append(f"{_key(k)} = {_value(v)}")


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise CodexError(f"cannot write {value!r} to config.toml")
