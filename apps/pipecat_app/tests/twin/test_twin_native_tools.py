"""Native tool calls (experts with ``tool_calls = true``, llama-server ``--jinja``).

SmolLM2-135M, the only model on the test machine, has no tool support in its
own chat template, and with a tool-aware template (``chatml-tools.jinja``)
it still seldom chooses to call (llama-server lets free text come before the
``<tool_call>`` marker, and a 135M model often talks until ``max_tokens``).
So the native path is tested in three parts:

1. A whole TwinService turn over a stream recorded from the real llama-server
   (``tests/recorded/llama-server_native_tool_*``, made by
   ``record_native_tool_stream.py``): text and four parallel calls in
   ``tool_calls`` deltas, then the answer after the results.
2. The real llama-server with ``chatml-tools.jinja`` takes the two requests
   TwinService sent in that turn: it renders the tool exchange into the
   prompt, and streams every round without an error.
3. ``live``: the whole turn against a model that calls tools, when
   ``TWIN_TOOL_GGUF`` names one (for example a Qwen2.5-Instruct GGUF).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from helpers.llama_server import LlamaServer, start_llama_server
from helpers.llm_skip import smollm2_gguf_or_skip

from pipecat_app.metrics import TOOL_CALLS
from pipecat_app.twin.discovery import Expert
from pipecat_app.twin.llm import ExpertClient, TextDelta, ToolCalls
from pipecat_app.twin.service import NO_EXPERT_REPLY
from pipecat_app.twin.toolbox import Tool, ToolBox
from pipecat_app.twin.tools import current_time
from recorded.record_native_tool_stream import streamed

from .twin_turns import Replay, ask, expert, make_twin, replay_server

pytestmark = [pytest.mark.anyio]

HERE = Path(__file__).resolve().parent
RECORDED = HERE.parent / "recorded"
TEMPLATE = HERE / "chatml-tools.jinja"
QUESTION = "What time is it in Paris?"
# Round one: text, then four calls; round two, after the results: the answer.
ROUNDS = [RECORDED / f"llama-server_native_tool_round{n}.sse" for n in (1, 2)]


def outcomes(tool: str, outcome: str) -> float:
    return TOOL_CALLS.labels(tool=tool, outcome=outcome)._value.get()


# -- an expert that replays the recorded streams ----------------------------------------


@pytest.fixture
def replay() -> Iterator[Replay]:
    with replay_server([path.read_bytes() for path in ROUNDS]) as state:
        yield state


async def replayed_turn(replay: Replay, tmp_path: Path) -> str:
    """One TwinService turn, tools required, against the replayed expert."""
    twin = make_twin(
        tmp_path,
        [expert("native", replay.url, tool_calls=True)],
        toolbox=ToolBox([Tool(current_time)]),
    )
    twin.context.set_tool_choice("required")
    await twin.start()
    try:
        return await ask(twin, QUESTION)
    finally:
        await twin.stop()


# -- 1. a whole turn over the recorded stream ------------------------------------------


async def test_streamed_parallel_tool_calls_are_run_and_their_results_sent_back(
    replay: Replay, tmp_path: Path
):
    (text1, calls1), (text2, calls2) = [streamed(path.read_bytes()) for path in ROUNDS]
    assert (len(calls1), len(calls2)) == (4, 0)  # see the recording's .json
    before = {o: outcomes("current_time", o) for o in ("ok", "invalid_arguments")}

    answer = await replayed_turn(replay, tmp_path)

    first, second = replay.requests
    assert first["stream"] is True
    assert first["tool_choice"] == "required"
    assert [t["function"]["name"] for t in first["tools"]] == ["current_time"]
    assert first["messages"][-1] == {"role": "user", "content": QUESTION}

    # Round two carries the calls as the model made them, then one result per call.
    call_message, *results = second["messages"][-5:]
    assert call_message["role"] == "assistant"
    assert call_message["content"] == text1  # what the user heard before the calls
    assert [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in call_message["tool_calls"]
    ] == [(c["id"], c["name"], c["arguments"]) for c in calls1]
    assert [r["role"] for r in results] == ["tool"] * 4
    assert [r["tool_call_id"] for r in results] == [c["id"] for c in calls1]
    by_zone = {}
    for call, result in zip(calls1, results, strict=True):
        by_zone[json.loads(call["arguments"]).get("timezone", "")] = json.loads(result["content"])
    assert by_zone["Europe/Paris"]["ok"] is True
    assert by_zone["Europe/Paris"]["result"]["timezone"] == "Europe/Paris"
    assert by_zone[""]["result"]["timezone"] == "UTC"  # no argument: the tool's default
    assert by_zone["EUR_UTC"]["ok"] is False  # a bad zone is the model's error, not a crash
    assert by_zone["EUR_UTC"]["error"]["type"] == "invalid_arguments"
    assert second["tool_choice"] == "auto"

    assert outcomes("current_time", "ok") == before["ok"] + 3
    assert outcomes("current_time", "invalid_arguments") == before["invalid_arguments"] + 1
    # Every round's text is spoken, in order.
    assert answer == text1 + text2
    assert answer != NO_EXPERT_REPLY


# -- 2. the real llama-server takes what TwinService sent ---------------------------------


@pytest.fixture(scope="module")
def llama_tools(llama_binary: Path) -> Iterator[LlamaServer]:
    """llama-server with SmolLM2 and a chat template that carries tool calls."""
    server = start_llama_server(
        llama_binary, smollm2_gguf_or_skip(), extra_args=["--chat-template-file", str(TEMPLATE)]
    )
    yield server
    server.kill()


@pytest.mark.slow
async def test_real_llama_server_renders_and_answers_the_tool_exchange_twin_sends(
    replay: Replay, tmp_path: Path, llama_tools: LlamaServer
):
    caps = httpx.get(f"{llama_tools.url}/props", timeout=10).json()
    assert caps["chat_template_caps"]["supports_tool_calls"] is True
    await replayed_turn(replay, tmp_path)
    first, second = replay.requests

    rendered = httpx.post(
        f"{llama_tools.url}/apply-template",
        json={"messages": second["messages"], "tools": second["tools"]},
        timeout=30,
    )
    assert rendered.status_code == 200, rendered.text
    prompt = rendered.json()["prompt"]
    system, conversation = prompt.split("<|im_end|>", 1)
    assert '"name": "current_time"' in system.split("</tools>")[0]  # the tool is described
    assert conversation.count("<tool_call>") == 4
    assert '{"name": "current_time", "arguments": {"timezone": "Europe/Paris"}}' in prompt
    assert conversation.count("<tool_response>") == 4
    assert '"timezone": "Europe/Paris"' in prompt.split("<tool_response>")[-1]
    assert prompt.endswith("<|im_start|>assistant\n")

    # Both rounds stream from the real server through TwinService's client.
    client = ExpertClient(timeout_s=120, max_tokens=96, temperature=0.0)
    target = Expert("native", "general", "", llama_tools.base_url, tool_calls=True)
    tools = [Tool(current_time)]
    try:
        for request, choice in ((first, "required"), (second, "auto")):
            stream = client.stream(target, request["messages"], tools, choice=choice)
            events = [e async for e in stream]
            assert events, f"no output for the {choice} round"
            for calls in (e for e in events if isinstance(e, ToolCalls)):
                for call in calls.calls:  # the server's grammar keeps calls to the schema
                    assert call.name == "current_time"
                    jsonschema.validate(json.loads(call.arguments), tools[0].json_schema)
            assert all(isinstance(e, TextDelta | ToolCalls) for e in events)
    finally:
        await client.close()


# -- 3. live: a model that calls tools ---------------------------------------------------


@pytest.mark.live
@pytest.mark.slow
async def test_model_with_tool_support_calls_the_tool_and_answers(
    llama_binary: Path, tmp_path: Path
):
    gguf = os.environ.get("TWIN_TOOL_GGUF")
    if not gguf:
        pytest.skip("set TWIN_TOOL_GGUF to a GGUF whose chat template supports tools")
    template = os.environ.get("TWIN_TOOL_CHAT_TEMPLATE")
    extra = ["--chat-template-file", template] if template else []
    server = start_llama_server(llama_binary, Path(gguf), extra_args=extra)
    try:
        twin = make_twin(
            tmp_path,
            [expert("native", server.base_url, tool_calls=True)],
            120,
            toolbox=ToolBox([Tool(current_time)]),
        )
        twin.context.set_tool_choice("required")
        before = outcomes("current_time", "ok")
        await twin.start()
        try:
            answer = await ask(twin, QUESTION)
        finally:
            await twin.stop()
    finally:
        server.kill()
    assert outcomes("current_time", "ok") >= before + 1
    assert answer.strip()
    assert answer != NO_EXPERT_REPLY
