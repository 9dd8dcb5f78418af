"""TwinService against REAL llama-servers (SmolLM2-135M): tool fallback, failover.

The fallback is what prima.cpp experts get: llama-server honours
``response_format`` with a JSON schema the same way prima.cpp's server does.
Native tool calls are in ``test_twin_native_tools.py``.
"""

from __future__ import annotations

import json
import socket
import time

import jsonschema
import pytest
from pipecat.frames.frames import (
    Frame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_app.metrics import EXPERT_ERRORS, ROUTING_DECISIONS, TOOL_CALLS
from pipecat_app.twin.discovery import Expert
from pipecat_app.twin.llm import ExpertClient, TextDelta, ToolCalls
from pipecat_app.twin.service import NO_EXPERT_REPLY
from pipecat_app.twin.toolbox import Tool, ToolBox
from pipecat_app.twin.tools import current_time

from .conftest import LlamaServer, free_port
from .twin_turns import ask, builtin_toolbox, expert, make_twin

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def tool_calls(name: str) -> float:
    """Calls of a tool, whatever their outcome (a small model may pass a bad time zone)."""
    outcomes = ("ok", "invalid_arguments", "unavailable", "failed", "timeout", "error")
    return sum(TOOL_CALLS.labels(tool=name, outcome=o)._value.get() for o in outcomes)


def errors(name: str, kind: str) -> float:
    return EXPERT_ERRORS.labels(expert=name, kind=kind)._value.get()


# -- tool calling, both modes -------------------------------------------------------


async def test_fallback_required_tool_call_is_returned_with_schema_valid_arguments(
    llama_one: LlamaServer, tmp_path
):
    from pipecat_app.twin.memory import MemoryStore

    store = MemoryStore(tmp_path / "m.sqlite3")
    store.open()
    # The tools a turn offers (memory and the time), with the limits the app gives them.
    box = builtin_toolbox(store)
    tools = box.available()
    client = ExpertClient(timeout_s=60, max_tokens=512, temperature=0.0)
    target = Expert("e", "general", "", llama_one.base_url, tool_calls=False)
    messages = [
        {"role": "system", "content": "You are a helpful assistant with tools."},
        {"role": "user", "content": "Please remember that my bike is green."},
    ]
    events = [e async for e in client.stream(target, messages, tools, choice="required")]
    await client.close()
    calls = [e for e in events if isinstance(e, ToolCalls)]
    assert len(calls) == 1, events
    call = calls[0].calls[0]
    assert call.name in box.names
    # The constraint guarantees the shape; whether the values make sense is the model's.
    jsonschema.validate(json.loads(call.arguments), box.get(call.name).json_schema)


async def test_json_schema_fallback_streams_the_answer_text(llama_one: LlamaServer):
    client = ExpertClient(timeout_s=60, max_tokens=64, temperature=0.0)
    target = Expert("e", "general", "", llama_one.base_url, tool_calls=False)
    messages = [{"role": "user", "content": "Say hello to Ana."}]
    events = [e async for e in client.stream(target, messages, [], choice="none")]
    await client.close()
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(texts) > 1  # streamed in pieces, not one block at the end
    answer = "".join(texts)
    assert answer.strip()
    assert not answer.lstrip().startswith("{")  # the JSON envelope is not spoken


async def test_fallback_tool_result_is_fed_back_and_the_turn_is_answered(
    llama_one: LlamaServer, tmp_path
):
    twin = make_twin(
        tmp_path, [expert("solo", llama_one.base_url)], toolbox=ToolBox([Tool(current_time)])
    )
    twin.context.set_tool_choice("required")  # first round must call the tool
    before = tool_calls("current_time")
    await twin.start()
    try:
        answer = await ask(twin, "What time is it now?")
    finally:
        await twin.stop()
    assert tool_calls("current_time") >= before + 1
    assert answer.strip()
    assert answer != NO_EXPERT_REPLY


# -- failover ---------------------------------------------------------------------------


async def test_refused_connection_fails_over_to_the_next_expert_in_the_same_turn(
    llama_one: LlamaServer, tmp_path
):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    twin = make_twin(tmp_path, [expert("a-dead", dead), expert("b-live", llama_one.base_url)])
    before = errors("a-dead", "connect")
    failovers = ROUTING_DECISIONS.labels(expert="b-live", reason="failover")._value.get()
    await twin.start()
    try:
        answer = await ask(twin, "Hello, who are you?")
    finally:
        await twin.stop()
    assert answer.strip()
    assert NO_EXPERT_REPLY not in answer
    assert errors("a-dead", "connect") == before + 1
    assert (
        ROUTING_DECISIONS.labels(expert="b-live", reason="failover")._value.get() == failovers + 1
    )
    assert twin.routing_state.expert == "b-live"


async def test_silent_expert_times_out_and_the_turn_goes_to_the_next(
    llama_one: LlamaServer, tmp_path
):
    # A real TCP listener that accepts connections and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
    twin = make_twin(tmp_path, [expert("a-silent", url), expert("b-live", llama_one.base_url)], 8)
    before = errors("a-silent", "timeout")
    await twin.start()
    try:
        started = time.monotonic()
        answer = await ask(twin, "Hello there!")
        elapsed = time.monotonic() - started
    finally:
        await twin.stop()
        silent.close()
    assert answer.strip()
    assert NO_EXPERT_REPLY not in answer
    assert errors("a-silent", "timeout") == before + 1
    assert elapsed < 60


async def test_expert_killed_mid_conversation_next_turn_answered_by_the_other(
    llama_pair: tuple[LlamaServer, LlamaServer], tmp_path
):
    first, second = llama_pair
    twin = make_twin(tmp_path, [expert("a", first.base_url), expert("b", second.base_url)])
    before = errors("a", "connect")
    await twin.start()
    try:
        assert (await ask(twin, "Hi! My name is Ana.")).strip()
        assert twin.routing_state.expert == "a"
        first.kill()
        answer = await ask(twin, "What is my name?")
    finally:
        await twin.stop()
    assert answer.strip()
    assert NO_EXPERT_REPLY not in answer
    assert twin.routing_state.expert == "b"
    assert errors("a", "connect") == before + 1


class KillOnFirstText(FrameProcessor):
    """Kills a llama-server when the first answer text passes (a crash mid-stream)."""

    def __init__(self, server: LlamaServer) -> None:
        super().__init__()
        self._server = server
        self.texts_after_kill: list[str] = []
        self._killed = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            if self._killed:
                self.texts_after_kill.append(frame.text)
            else:
                self._server.kill()
                self._killed = True
        await self.push_frame(frame, direction)


async def test_expert_killed_while_streaming_the_same_turn_is_finished_by_the_other(
    llama_pair: tuple[LlamaServer, LlamaServer], tmp_path
):
    first, second = llama_pair
    twin = make_twin(
        tmp_path,
        [
            expert("a", first.base_url, tool_calls=True),
            expert("b", second.base_url, tool_calls=True),
        ],
        # Plain streaming, no tools: the answer starts with the first token and is long.
        toolbox=ToolBox([]),
        client=ExpertClient(timeout_s=30, max_tokens=400, temperature=0.7),
    )
    killer = KillOnFirstText(first)
    before = errors("a", "connect") + errors("a", "timeout")
    await twin.start()
    try:
        answer = await ask(
            twin, "Tell me a long story about a dragon who learns to cook.", extra=[killer]
        )
    finally:
        await twin.stop()
    assert errors("a", "connect") + errors("a", "timeout") == before + 1
    assert twin.routing_state.expert == "b"
    assert "".join(killer.texts_after_kill).strip()
    assert NO_EXPERT_REPLY not in answer
