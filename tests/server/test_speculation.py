"""Speculative decoding through the server: every API, streamed and not, answers with drafts exactly as
without; /info and /metrics say how many drafted tokens were accepted."""

from __future__ import annotations

import httpx
import pytest

from llamabridge import synthetic
from llamabridge.runtime.config import load_config
from llamabridge.server.state import ServerState
from llamabridge.synthetic.families import Case

from ..families.api import APIS
from ..support import start_server

# the scripted model's reply is already twice in the conversation: the n-gram drafters find all of it (its
# margins are clear, so a batch of several rows answers as one row does; the tool-calling model's arguments are
# near-ties between tokens it does not want, which a batch's other summation order may tip)
CASE = Case("again", (
    {"role": "user", "content": "Hi"}, {"role": "assistant", "content": synthetic.SCRIPTED_REPLY},
    {"role": "user", "content": "Hi again"}, {"role": "assistant", "content": synthetic.SCRIPTED_REPLY},
    {"role": "user", "content": "And once more"}), {})
MAX_TOKENS = 80


def write_config(folder, speculation: str, draft=synthetic.QWEN3_SCRIPTED_DRAFT):
    path = folder / "config.toml"
    path.write_text(f"""
[models.scripted]
path = "{synthetic.ensure_model(synthetic.QWEN3_SCRIPTED)}"

[models.draft]
path = "{synthetic.ensure_model(draft)}"

[caches.scripted]
model = "scripted"
n_ctx = 2048
{speculation}
""")
    return path


def serve(tmp_path_factory, speculation: str):
    return start_server(ServerState(load_config(write_config(tmp_path_factory.mktemp("speculation"), speculation))))


def generated(usage: dict) -> dict:
    """The usage's count of generated tokens (its prompt's split into new and cached differs: the plain server
    has answered the same conversation for the other drafter)."""
    return {k: v for k, v in usage.items() if k in ("output_tokens", "completion_tokens", "eval_count")}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    plain = serve(tmp_path_factory, "")
    drafting = serve(tmp_path_factory, 'speculative = "ngram-simple"\ndraft_ngram = 2\ndraft_max = 16')
    with_model = serve(tmp_path_factory, 'draft_model = "draft"\ndraft_max = 4')
    yield plain, drafting, with_model
    for server in (plain, drafting, with_model):
        server.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("api", sorted(APIS))
@pytest.mark.parametrize("drafter", ["ngram", "draft model"])
def test_every_api_answers_the_same_with_drafts(servers, drafter, api, stream):
    answers = []
    for server in (servers[0], servers[1 if drafter == "ngram" else 2]):
        with httpx.Client(base_url=server.url, timeout=300) as http:        # a hang guard, not a speed
            answers.append(APIS[api](http, CASE, stream, max_tokens=MAX_TOKENS))
            speculation = http.get("/info").json()["caches"]["scripted"].get("speculation")
    plain, drafted = answers
    assert (drafted.text, drafted.stop, generated(drafted.usage)) == (plain.text, plain.stop, generated(plain.usage))
    assert plain.text == synthetic.SCRIPTED_REPLY and generated(plain.usage)
    assert speculation["accepted"] > 0


def test_info_and_metrics_count_the_drafts(servers):
    plain, drafting, with_model = servers
    for server, kind in ((drafting, "ngram-simple"), (with_model, "draft-simple")):
        with httpx.Client(base_url=server.url, timeout=300) as http:
            APIS["openai"](http, CASE, False, max_tokens=MAX_TOKENS)
            speculation = http.get("/info").json()["caches"]["scripted"]["speculation"]
            assert speculation["types"] == [kind]
            assert speculation["draft_model"] == (None if kind.startswith("ngram") else "draft")
            assert 0 < speculation["accepted"] <= speculation["drafted"]
            assert 0 < speculation["acceptance"] <= 1
            assert speculation["by_type"][kind]["accepted"] == speculation["accepted"]
            metrics = http.get("/metrics").text
            assert f'llamabridge_draft_tokens_total{{cache="scripted",type="{kind}",outcome="accepted"}} ' \
                   f'{speculation["accepted"]}\n' in metrics
            assert f'llamabridge_draft_acceptance_ratio{{cache="scripted",type="{kind}"}}' in metrics
    with httpx.Client(base_url=plain.url, timeout=300) as http:
        assert "speculation" not in http.get("/info").json()["caches"]["scripted"]
        assert "llamabridge_draft_tokens_total" not in http.get("/metrics").text


def test_a_draft_model_on_another_vocabulary_stops_the_start(tmp_path):
    """The pool refuses it at load, naming the config file, the cache and the key (the server then exits with
    that line)."""
    from llamabridge.runtime.config import ConfigError

    path = write_config(tmp_path, 'draft_model = "draft"', draft=synthetic.LLAMA31)
    state = ServerState(load_config(path))
    with pytest.raises(ConfigError, match=r"config.toml: caches.scripted.draft_model: the draft model draft "
                                          r"\(128256 tokens\) does not share scripted's vocabulary"):
        state.load()
    state.close()
