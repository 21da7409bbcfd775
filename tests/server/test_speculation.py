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


def serve(tmp_path_factory, speculation: str):
    path = tmp_path_factory.mktemp("speculation") / "config.toml"
    path.write_text(f"""
[models.scripted]
path = "{synthetic.ensure_model(synthetic.QWEN3_SCRIPTED)}"

[caches.scripted]
model = "scripted"
n_ctx = 2048
{speculation}
""")
    return start_server(ServerState(load_config(path)))


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    plain = serve(tmp_path_factory, "")
    drafting = serve(tmp_path_factory, 'speculative = "ngram-simple"\ndraft_ngram = 2\ndraft_max = 16')
    yield plain, drafting
    plain.stop()
    drafting.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("api", sorted(APIS))
def test_every_api_answers_the_same_with_drafts(servers, api, stream):
    answers = []
    for server in servers:
        with httpx.Client(base_url=server.url, timeout=300) as http:        # a hang guard, not a speed
            answers.append(APIS[api](http, CASE, stream, max_tokens=MAX_TOKENS))
    plain, drafted = answers
    assert (drafted.text, drafted.stop, drafted.usage) == (plain.text, plain.stop, plain.usage)
    assert plain.text == synthetic.SCRIPTED_REPLY
    with httpx.Client(base_url=servers[1].url, timeout=300) as http:
        assert http.get("/info").json()["caches"]["scripted"]["speculation"]["accepted"] > 0


def test_info_and_metrics_count_the_drafts(servers):
    plain, drafting = servers
    with httpx.Client(base_url=drafting.url, timeout=300) as http:
        APIS["openai"](http, CASE, False, max_tokens=MAX_TOKENS)
        speculation = http.get("/info").json()["caches"]["scripted"]["speculation"]
        assert speculation["types"] == ["ngram-simple"]
        assert 0 < speculation["accepted"] <= speculation["drafted"]
        assert 0 < speculation["acceptance"] <= 1
        metrics = http.get("/metrics").text
        assert f'llamabridge_draft_tokens_total{{cache="scripted",outcome="accepted"}} {speculation["accepted"]}' \
            in metrics
        assert 'llamabridge_draft_acceptance_ratio{cache="scripted"}' in metrics
    with httpx.Client(base_url=plain.url, timeout=300) as http:
        assert "speculation" not in http.get("/info").json()["caches"]["scripted"]
        assert "llamabridge_draft_tokens_total" not in http.get("/metrics").text
