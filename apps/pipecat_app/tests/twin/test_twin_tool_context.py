"""A tool exchange stays in the conversation: the next turn knows what a tool returned.

TwinService runs the tool rounds of a turn itself; it broadcasts pipecat's
function-call frames, and pipecat's own assistant aggregator writes the calls
and their results into the ``LLMContext``, as it does for pipecat's LLM
services. These tests run the app's real text pipeline
(``LLMContextAggregatorPair`` around TwinService, :class:`TextSession`)
against experts that replay streams: the recorded llama-server streams of
``test_twin_native_tools`` (native calls), and fallback replies hand-written
in the JSON shape the fallback's schema makes the model write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from pipecat_app.config import AppConfig
from pipecat_app.session import TextSession
from pipecat_app.twin.exchange import ANSWER_NOW
from pipecat_app.twin.toolbox import Tool, ToolBox
from pipecat_app.twin.tools import current_time
from recorded.record_native_tool_stream import streamed

from .twin_turns import Replay, expert, make_twin, replay_server, sse

pytestmark = [pytest.mark.anyio]

RECORDED = Path(__file__).resolve().parent.parent / "recorded"
NATIVE_ROUNDS = [RECORDED / f"llama-server_native_tool_round{n}.sse" for n in (1, 2)]


@pytest.fixture
def serve() -> Iterator[Callable[[list[bytes]], Replay]]:
    with ExitStack() as stack:
        yield lambda streams: stack.enter_context(replay_server(streams))


async def converse(
    tmp_path: Path, replay: Replay, questions: list[str], **twin: Any
) -> TextSession:
    """The questions, one turn each, through the app's text pipeline; the session, closed."""
    session = TextSession(AppConfig(), twin_factory=lambda _config: make_twin(tmp_path, **twin))
    await session.start()
    try:
        for question in questions:
            await session.answer(question)
    finally:
        await session.close()
    return session


async def test_native_tool_calls_and_results_enter_the_context_and_reach_the_next_turn(
    serve: Callable[[list[bytes]], Replay], tmp_path: Path
):
    (said, calls), (answer, _) = [streamed(p.read_bytes()) for p in NATIVE_ROUNDS]
    # Turn one: the recorded calls, then the recorded answer; turn two: that answer again.
    rounds = [p.read_bytes() for p in NATIVE_ROUNDS]
    replay = serve([*rounds, rounds[1]])
    session = await converse(
        tmp_path,
        replay,
        ["What time is it in Paris?", "And which zone did you look up?"],
        experts=[expert("native", replay.url, tool_calls=True)],
        toolbox=ToolBox([Tool(current_time)]),
    )

    messages = session.twin.context.get_messages()
    by_id = {m["tool_call_id"]: m for m in messages if m.get("role") == "tool"}
    assert sorted(by_id) == sorted(c["id"] for c in calls)  # every result, by its call's id
    for call in calls:
        result = json.loads(by_id[call["id"]]["content"])  # the result, not "IN_PROGRESS"
        zone = json.loads(call["arguments"]).get("timezone", "UTC")
        assert result["ok"] is (zone != "EUR_UTC")
    made = [c for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls", [])]
    assert [(c["id"], c["function"]["name"]) for c in made] == [(c["id"], c["name"]) for c in calls]

    # The second turn's request carries turn one's exchange, as the context has it.
    third = replay.requests[2]["messages"]
    assert third[-1] == {"role": "user", "content": "And which zone did you look up?"}
    sent_results = {m["tool_call_id"]: m["content"] for m in third if m.get("role") == "tool"}
    assert sent_results == {i: m["content"] for i, m in by_id.items()}
    assert any(m.get("role") == "assistant" and m.get("content") == said + answer for m in third)


async def test_fallback_expert_sees_the_tool_exchange_of_the_last_turn_as_plain_text(
    serve: Callable[[list[bytes]], Replay], tmp_path: Path
):
    fact = "The user's dog is called Rex."
    replay = serve(
        [
            sse(json.dumps({"tool": "remember", "arguments": {"fact": fact}})),
            sse(json.dumps({"answer": "Noted."})),
            sse(json.dumps({"answer": "That your dog is called Rex."})),
        ]
    )
    session = await converse(
        tmp_path,
        replay,
        ["Remember that my dog is called Rex.", "What did you just remember?"],
        experts=[expert("fallback", replay.url)],
    )

    # In the context, the exchange is in the OpenAI form with the tool's real result.
    messages = session.twin.context.get_messages()
    (call,) = [c for m in messages for c in m.get("tool_calls", [])]
    assert call["function"]["name"] == "remember"
    assert json.loads(call["function"]["arguments"]) == {"fact": fact}
    (result,) = [m for m in messages if m.get("role") == "tool"]
    assert result["tool_call_id"] == call["id"]
    assert json.loads(result["content"])["result"]["remembered"] == fact

    # The fallback expert gets it in its own words: no tool roles, the result as text.
    within_turn, next_turn = replay.requests[1]["messages"], replay.requests[2]["messages"]
    for request in (within_turn, next_turn):
        assert all(m["role"] in ("system", "user", "assistant") for m in request)
        assert not any("tool_calls" in m for m in request)
    assert within_turn[-1]["content"].startswith("Result of tool remember: ")
    assert within_turn[-1]["content"].endswith(ANSWER_NOW)  # answer now, in this turn
    assert next_turn[-1] == {"role": "user", "content": "What did you just remember?"}
    results = [m["content"] for m in next_turn if m["content"].startswith("Result of tool")]
    assert len(results) == 1
    stored = json.loads(results[0].removeprefix("Result of tool remember: "))
    assert stored["result"]["remembered"] == fact
    assert {"role": "assistant", "content": "Noted."} in next_turn
