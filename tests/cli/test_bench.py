"""`llamabridge bench`: local runs, runs against a server over either API, the agent scenario."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def bench(*args, timeout=300):
    return subprocess.run([str(BIN / "llamabridge"), "bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_local_json(qwen3_path):
    result = bench("--model", str(qwen3_path), "--reps", "2", "--prompt-tokens", "256", "--tokens", "16", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["quant"] == "F16" and row["size_bytes"] == qwen3_path.stat().st_size
    assert row["startup"]["median"] > 0 and len(row["cold"]["values"]) == 2
    assert row["prefill_tps"]["median"] > 0 and row["decode_tps"]["median"] > 0
    assert row["hot_reused"] >= row["prompt_tokens"] - 5, "the hot request reuses the cold one's prompt"
    assert row["tokens_per_step"] is None                   # no speculative decoding


def test_tokens_per_step_with_a_draft_model(scripted_path):
    """The scripted model with its one-layer copy drafting: several tokens a step, shown in the table."""
    from llamabridge import synthetic

    draft = synthetic.ensure_model(synthetic.QWEN3_SCRIPTED_DRAFT)
    args = ("--model", str(scripted_path), "--draft-model", str(draft), "--reps", "1", "--prompt-tokens", "64",
            "--tokens", "16")
    result = bench(*args, "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["tokens_per_step"]["median"] >= 2       # a 12-token answer in drafts of 3 (llama.cpp's default)
    result = bench(*args)
    assert result.returncode == 0, result.stderr
    assert "tokens per step: each decode step's token plus the draft tokens accepted" in " ".join(result.stdout.split())


def test_table(qwen3_path):
    result = bench("--model", str(qwen3_path), "--reps", "1", "--prompt-tokens", "64", "--tokens", "8")
    assert result.returncode == 0, result.stderr
    for column in ("model", "size", "quant", "startup", "cold", "hot", "prefill", "decode"):
        assert column in result.stdout


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_url(server, api):
    result = bench("--url", server.url, "--api", api, "--name", "random", "--reps", "2", "--prompt-tokens", "128",
                   "--tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["startup"] is None and row["cold"]["median"] > 0
    assert row["hot_reused"] > 0 and row["decode_tps"]["median"] > 0


def test_agent_scenario_keeps_the_main_prefix(server):
    result = bench("--url", server.url, "--name", "claude-sonnet-4-5", "--scenario", "agent", "--turns", "3",
                   "--prompt-tokens", "256", "--tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    turns = json.loads(result.stdout)
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert turns[0]["background_ttft"] is not None and turns[-1]["background_ttft"] is None
    for previous, turn in zip(turns, turns[1:]):
        # the haiku request in between went to its own cache: the main conversation's prefix survived
        assert turn["reused_tokens"] >= previous["prompt_tokens"] - 5
        assert turn["prompt_tokens"] > previous["prompt_tokens"]


def test_needs_exactly_one_target():
    result = bench()
    assert result.returncode == 2 and "exactly one of --model, --config or --url" in result.stderr
