"""SSE rendering: errors after the stream started, keep-alive pings, block assembly."""

import asyncio
import json

from llamabridge.engine import Done, Idle, TextDelta, Timings, ToolCallDelta, ToolCallEnd, ToolCallStart, Usage
from llamabridge.errors import ContextFullError
from llamabridge.server.anthropic.serving import MessageStream
from llamabridge.server.blocks import BlockAssembler, assemble
from llamabridge.server.errors import InternalError
from llamabridge.server.openai.serving import CompletionStream
from llamabridge.server.streaming import render_stream


async def failing_engine():
    yield TextDelta("partial")
    raise ContextFullError(1)


async def broken_engine():
    yield TextDelta("partial")
    raise KeyError("bug")


def collect(stream, events):
    async def run():
        return [c.decode() async for c in render_stream(stream, events, lambda exc: InternalError())]
    return asyncio.run(run())


def test_anthropic_error_after_start_is_an_error_event():
    chunks = collect(MessageStream("msg_1", "m", 10), failing_engine())
    assert chunks[0].startswith("event: message_start")
    assert "text_delta" in chunks[2]
    last = chunks[-1]
    assert last.startswith("event: error\n")
    body = json.loads(last.split("data: ", 1)[1])
    assert body == {"type": "error", "error": {"type": "api_error", "message": body["error"]["message"]}}
    assert "no KV cache slot" in body["error"]["message"]


def test_unexpected_fault_mid_stream_hides_details():
    chunks = collect(MessageStream("msg_1", "m", 10), broken_engine())
    assert "internal server error" in chunks[-1] and "KeyError" not in chunks[-1] and "bug" not in chunks[-1]


def test_openai_error_after_start_then_done():
    chunks = collect(CompletionStream("c1", "m", include_usage=False), failing_engine())
    assert chunks[-1] == "data: [DONE]\n\n"
    error = json.loads(chunks[-2][len("data: "):])
    assert error["error"]["type"] == "server_error" and "no KV cache slot" in error["error"]["message"]


def test_idle_is_a_ping():
    async def silent_then_text():
        yield Idle()
        yield TextDelta("late")
    chunks = collect(MessageStream("msg_1", "m", 10), silent_then_text())
    assert chunks[1].startswith("event: ping") and "text_delta" in chunks[-1]


def test_blocks_never_leave_an_empty_text_block_beside_a_tool_call():
    done = Done("tool_use", Usage(1, 1, 0), Timings())
    blocks, _ = assemble([TextDelta("\n\n"), ToolCallStart(0, "f"), ToolCallDelta(0, '{"a":'),
                          ToolCallDelta(0, "1}"), ToolCallEnd(0), done])
    assert [(b.kind, b.text) for b in blocks] == [("tool_use", '{"a":1}')]
    assembler = BlockAssembler()
    for event in (TextDelta("Hi"), TextDelta(" "), TextDelta("there ")):
        assembler.feed(event)
    assembler.finish()
    assert [b.text for b in assembler.blocks] == ["Hi there "]


def test_a_block_read_while_it_grows_keeps_every_piece():
    assembler = BlockAssembler()
    pieces = [f"piece {i}, " for i in range(2000)]
    seen = []
    for i, piece in enumerate(pieces):
        (op,) = [op for op in assembler.feed(TextDelta(piece)) if op.op == "delta"]
        if i % 500 == 0:
            seen.append(op.block.text)           # read midway (a thinking block's signature reads it at its end)
    assembler.finish()
    assert seen == ["".join(pieces[:i + 1]) for i in range(0, 2000, 500)]
    assert [b.text for b in assembler.blocks] == ["".join(pieces)]


def test_responses_error_after_start_is_an_error_event_then_failed():
    from llamabridge.server.responses.items import Tools
    from llamabridge.server.responses.serving import ResponseStream

    response = {"id": "resp_1", "object": "response", "status": "in_progress", "output": [], "error": None}
    chunks = collect(ResponseStream(response, Tools(), summary=False, encrypted=False), failing_engine())
    events = [(c.split("\n")[0][len("event: "):], json.loads(c.split("data: ", 1)[1])) for c in chunks
              for c in c.split("\n\n") if c]
    kinds = [name for name, _ in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "no KV cache slot" in events[-2][1]["message"]
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["content"][0]["text"] == "partial"
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
