"""Each turn's request begins with the previous one: llama-server reuses its prompt cache.

llama-server keeps the tokens of a slot's last request and, with
``cache_prompt`` (on by default), evaluates only what follows the longest
prefix a new request shares with them. So what changes every turn, the
recalled memory and the camera's observation, goes after the history, as a
system message of its own just before the user's message; the system prompt
(and the tools, rendered with it) and the history come first, unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipecat_app.twin.service import fit_history

from .twin_turns import ask, expert, make_twin, replay_server, sse, turn_context

pytestmark = pytest.mark.anyio


def without_context(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's messages without its turn context (the system messages after the first)."""
    return [messages[0], *(m for m in messages[1:] if m.get("role") != "system")]


async def test_each_request_begins_with_the_previous_one_whatever_memory_recalled(
    tmp_path: Path,
):
    answers = [sse("Your dog is Rex."), sse("It is green."), sse("Good night, Ana.")]
    with replay_server(answers) as replay:
        twin = make_twin(tmp_path, [expert("general", replay.url, tool_calls=True)])
        await twin.start()
        try:
            twin.memory.remember("ana", "Ana's dog is called Rex", kind="fact")
            twin.memory.remember("ana", "Ana's bike is green", kind="fact")
            await ask(twin, "What is my dog called?")
            await ask(twin, "What colour is my bike?")
            await ask(twin, "Good night.")
        finally:
            await twin.stop()
    first, second, third = replay.requests
    # Each turn recalled something else...
    assert "Rex" in turn_context(first)
    assert "green" not in turn_context(first)
    assert "green" in turn_context(second)
    assert "Rex" not in turn_context(second)
    # ...into a message after the history, just before the user's; the system
    # message is the prompt alone and the tools are the same every turn.
    for request, question in zip(replay.requests[:2], ("dog", "bike"), strict=True):
        assert request["messages"][-2]["content"] == turn_context(request)
        assert question in request["messages"][-1]["content"]
    assert {r["messages"][0]["content"] for r in replay.requests} == {twin.system_prompt}
    assert first["tools"] == second["tools"] == third["tools"]
    # Each request begins with the one before it, less that turn's context:
    # system prompt, then the history, then the previous user message.
    for before, after in ((first, second), (second, third)):
        kept = without_context(before["messages"])
        assert after["messages"][: len(kept)] == kept
        assert after["messages"][len(kept)]["role"] == "assistant"


def test_the_turn_context_stays_just_before_the_users_message_when_history_is_cut():
    history = [{"role": "user", "content": "x" * 4000}, {"role": "assistant", "content": "ok"}]
    history += [{"role": "user", "content": "latest question"}]
    # Tool rounds of this turn follow the user's message; the context stays before it.
    rounds = [
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "c", "content": "{}"},
    ]
    fitted = fit_history(
        history + rounds, "prompt", 512, 256, turn_context="memory", turn_start=len(history) - 1
    )
    assert [m["role"] for m in fitted] == [
        "system",
        "assistant",
        "system",
        "user",
        *["assistant", "tool"],
    ]
    assert fitted[0]["content"] == "prompt"
    assert fitted[2] == {"role": "system", "content": "memory"}
    assert fitted[3]["content"] == "latest question"
    # No context: no message for it.
    assert [m["role"] for m in fit_history(history, "prompt", 2048, 256)] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
