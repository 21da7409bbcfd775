"""The native extension loads only where a model is: the CLI's help, the mock server, `cc`, `hfd` and
the HTTP schemas never load it (each checked in a fresh interpreter)."""

import subprocess
import sys

import pytest

PROBES = {
    "llamabridge --help": "from typer.testing import CliRunner; from llamabridge.cli import app; "
                          "assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
                          "assert CliRunner().invoke(app, ['serve', '--help']).exit_code == 0",
    "serve --mock": "from llamabridge.runtime.config import single_model_config; "
                    "from llamabridge.engine.params import CacheParams; "
                    "from llamabridge.server.state import ServerState; "
                    "from llamabridge.server.app import create_app; "
                    "state = ServerState(single_model_config('mock', CacheParams()), mock=True); state.load(); "
                    "create_app(state)",
    "cc and hfd": "import llamabridge.cli.cc, llamabridge.cli.hfd, llamabridge.cli.claude_code, "
                  "llamabridge.runtime.hub",
    "protocols": "import llamabridge.server.anthropic.protocol, llamabridge.server.openai.protocol, "
                 "llamabridge.server.responses.protocol, llamabridge.server.ollama.protocol, "
                 "llamabridge.engine.request, llamabridge.engine.planning",
}


@pytest.mark.parametrize("name", PROBES)
def test_the_native_extension_is_not_loaded(name):
    code = PROBES[name] + "; import sys; print('llamabridge._core' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_engine_names_still_import_from_the_package():
    import llamabridge.engine as engine
    from llamabridge.engine import Cache, ChatRequest, Model, plan_max_tokens  # noqa: F401
    with pytest.raises(AttributeError):
        engine.NoSuchThing   # noqa: B018


def test_the_package_root_holds_packages_not_pieces():
    """Runtime pieces live in runtime/, the apps behind commands in cli/, the protocols in server/."""
    from pathlib import Path

    import llamabridge

    root = Path(llamabridge.__file__).parent
    assert sorted(p.name for p in root.glob("*.py")) == ["__init__.py", "errors.py"]
    assert {p.name for p in root.iterdir() if (p / "__init__.py").exists()} == {"engine", "runtime", "server", "cli",
                                                                             "synthetic"}
