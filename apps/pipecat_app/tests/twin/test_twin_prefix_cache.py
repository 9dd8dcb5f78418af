"""Each turn's request begins with the previous one: llama-server reuses its prompt cache.

llama-server keeps the tokens of a slot's last request and, with
``cache_prompt`` (on by default), evaluates only what follows the longest
prefix a new request shares with them. So what changes every turn, the
recalled memory and the camera's observation, goes after the history, as a
system message of its own just before the user's message; the system prompt
(and the tools, rendered with it) and the history come first, unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.llm_skip import smollm2_server_or_skip

from pipecat_app.twin.llm import ExpertClient
from pipecat_app.twin.service import NO_EXPERT_REPLY, fit_history

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


def prompt_tokens(url: str) -> tuple[float, float]:
    """llama-server's prompt tokens so far (``--metrics``): evaluated, and reused from its cache."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = dict(re.findall(r"^llamacpp:(prompt_tokens\w*_total) (\S+)$", text, re.M))
    return float(found["prompt_tokens_total"]), float(found["prompt_tokens_cached_total"])


@pytest.mark.slow
async def test_llama_server_reuses_the_history_from_its_prompt_cache(tmp_path: Path):
    """With SmolLM2 on a real llama-server, the prompt tokens taken from its cache grow with
    the history, turn after turn, while each turn recalls another memory."""
    llama = smollm2_server_or_skip(extra_args=["--metrics"])
    try:
        twin = make_twin(
            tmp_path,
            [expert("general", llama.base_url)],
            client=ExpertClient(timeout_s=120, max_tokens=48, temperature=0.0),
        )
        await twin.start()
        try:
            for fact in ("Ana's dog is called Rex", "Ana's bike is green", "Ana's cat is Tom"):
                twin.memory.remember("ana", fact, kind="fact")
            cached: list[float] = []
            for question in ("What is my dog called?", "Is my bike green?", "Who is Tom?"):
                before = prompt_tokens(llama.url)
                answer = await ask(twin, question)
                assert answer.strip()
                assert NO_EXPERT_REPLY not in answer
                cached.append(prompt_tokens(llama.url)[1] - before[1])
        finally:
            await twin.stop()
    finally:
        llama.kill()
    # Turn 2 reuses the system prompt; turn 3 the system prompt and turn 1's
    # question and answer too. With the memory in the system message, the cache
    # ended where the memory began: the system prompt, every turn.
    assert cached[1] > 0, cached
    assert cached[2] > cached[1] + 10, cached
