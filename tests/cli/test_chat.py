"""`llamabridge chat` in a pseudo-terminal, as a person uses it; piped stdin; against a server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from llamabridge.synthetic import SCRIPTED_REPLY

BIN = Path(sys.executable).parent
PROMPT = "›"   # prompt_toolkit draws the space after it with a cursor move


def spawn(args, tmp_path):
    env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": "120",
           "LLAMABRIDGE_HISTORY": str(tmp_path / "history")}
    # the timeout only turns a hang into a failure: a busy machine may take minutes to stream a screenful
    child = pexpect.spawn(str(BIN / "llamabridge"), ["chat", *args], env=env, encoding="utf-8", timeout=600,
                          dimensions=(40, 120))
    child.expect_exact(PROMPT)
    return child


def test_send_reset_save_and_exit(scripted_path, tmp_path):
    child = spawn(["--model", str(scripted_path)], tmp_path)
    child.sendline("hi there")
    child.expect_exact(SCRIPTED_REPLY)
    child.expect(r"12 tokens · [\d.]+ tok/s · prompt \d+ \(reused 0\) · end_turn")
    child.expect_exact(PROMPT)
    child.sendline("and again")
    child.expect(r"\(reused [1-9]\d*\)")        # the second turn reuses the first from the KV cache
    child.expect_exact(PROMPT)
    saved = tmp_path / "conversation.json"
    child.sendline(f"/save {saved}")
    child.expect_exact("saved 4 messages")
    child.sendline("/reset")
    child.expect_exact("conversation cleared")
    child.sendline("/model")
    child.expect_exact("model: ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    data = json.loads(saved.read_text())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert data["messages"][1]["content"] == SCRIPTED_REPLY
    assert "hi there" in (tmp_path / "history").read_text()


@pytest.mark.skipif(__import__("signal").getsignal(__import__("signal").SIGINT) is __import__("signal").SIG_IGN,
                    reason="SIGINT is ignored in this process (a background job): the terminal's Ctrl-C "
                           "cannot be tested")
def test_ctrl_c_stops_a_generation_and_ctrl_d_leaves(qwen3_path, tmp_path):
    # greedy: this random model's reply to this prompt never ends by itself (sampled, it sometimes did)
    child = spawn(["--model", str(qwen3_path), "--n-ctx", "65536", "--temperature", "0"], tmp_path)
    child.sendline("write forever")
    child.expect_exact("●")
    child.expect(r"\S{20}")                      # the reply is streaming...
    child.expect_exact("...")                    # ...past the screen's 40 lines (a long reply to stop)
    child.sendintr()
    child.expect(r"\[stopped\] \d+ tokens")
    child.expect_exact(PROMPT)
    child.sendline("/load " + str(tmp_path / "missing.json"))
    child.expect_exact("cannot load")
    child.expect_exact(PROMPT)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_piped_stdin_prints_the_reply(scripted_path):
    result = subprocess.run([str(BIN / "llamabridge"), "chat", "--model", str(scripted_path)], input="hello\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == SCRIPTED_REPLY


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_against_a_server(server, api, tmp_path):
    child = spawn(["--url", server.url, "--api", api, "--name", "claude-x"], tmp_path)
    child.sendline("hi")
    child.expect_exact(SCRIPTED_REPLY)
    child.expect("tok/s")
    child.sendline("/model thinker")
    child.expect_exact("model: thinker")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_unknown_model_name_is_shown_and_the_repl_goes_on(server, tmp_path):
    child = spawn(["--url", server.url, "--name", "gpt-nothing"], tmp_path)
    child.sendline("hi")
    child.expect_exact("error: HTTP 404")
    child.expect_exact(PROMPT)
    child.sendline("/model claude-x")
    child.sendline("hi")
    child.expect_exact(SCRIPTED_REPLY)
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_multiline_input_and_system_prompt(scripted_path, tmp_path):
    child = spawn(["--model", str(scripted_path)], tmp_path)
    child.sendline("/system You are terse.")
    child.expect_exact("system prompt set; conversation cleared")
    child.expect_exact(PROMPT)
    child.send("first line")
    child.send("\x1b\r")                # Alt-Enter: a new line, not sent yet
    child.send("second line\r")
    child.expect_exact(SCRIPTED_REPLY)
    child.expect_exact(PROMPT)
    saved = tmp_path / "c.json"
    child.sendline(f"/save {saved}")
    child.expect_exact("saved 2 messages")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    data = json.loads(saved.read_text())
    assert data["system"] == "You are terse."
    assert data["messages"][0]["content"] == "first line\nsecond line"


def test_ctrl_c_before_the_reply_reaches_the_engine_still_stops_it():
    """The regression: a Ctrl-C while the prompt was templated (before cache.chat returned) was lost and
    the reply ran to the end of the context."""
    from llamabridge.cli.chat_session import LocalBackend

    class Stream:
        cancelled = False

        def cancel(self):
            self.cancelled = True

    class Cache:
        calls = 0

        def chat(self, request):
            Cache.calls += 1
            if Cache.calls == 1:
                backend.cancel()          # Ctrl-C lands here, before stream() has the stream
            return Stream()

    class State:
        def cache_for(self, model):
            return None, Cache()

    backend = LocalBackend(State())
    backend.begin()
    assert backend.stream("m", [{"role": "user", "content": "hi"}], "", None, False).cancelled
    backend.begin()                       # the next reply starts clean
    assert not backend.stream("m", [{"role": "user", "content": "again"}], "", None, False).cancelled
