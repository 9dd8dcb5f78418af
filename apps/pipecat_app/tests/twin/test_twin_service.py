"""TwinService in a pipecat pipeline (run_test): frames, fallback answers, memory in context.

The tests here need no LLM: experts are unreachable (a closed port, a real
connection refusal) or absent. Tests against real llama-servers are in
``test_twin_experts.py``.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from helpers.memory_db import query
from pipecat.frames.frames import (
    ErrorFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext, is_given
from pipecat.tests.utils import SleepFrame, run_test

from pipecat_app.metrics import EXPERT_ERRORS, ROUTING_DECISIONS
from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.service import NO_EXPERT_REPLY, TwinLLMProcessor, TwinService, fit_history
from pipecat_app.twin.toolbox import Tool, ToolBox, ToolContext

from .conftest import free_port, load_fixture, until
from .twin_turns import replay_server, sse

pytestmark = pytest.mark.anyio


def make_twin(tmp_path, experts, **overrides) -> TwinService:
    data = {
        "user_id": "ana",
        "memory": {"path": str(tmp_path / "memory.sqlite3"), "token_budget": 64},
        "experts": experts,
        "routing": {"expert_timeout_s": 2},
        **overrides,
    }
    return TwinService(TwinConfig.model_validate(data))


def closed_expert(name: str, domain: str = "general") -> dict:
    return {
        "name": name,
        "domain": domain,
        "description": "Everyday conversation",
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
    }


def turns(twin: TwinService) -> TwinLLMProcessor:
    """The twin's stage, which runs its turns."""
    (processor,) = twin.processors()
    assert isinstance(processor, TwinLLMProcessor)
    return processor


def user_turn(twin: TwinService, text: str) -> LLMContextFrame:
    twin.context.add_message({"role": "user", "content": text})
    return LLMContextFrame(context=twin.context)


async def test_frames_other_than_context_pass_through_unchanged(tmp_path):
    twin = make_twin(tmp_path, [closed_expert("a")])
    await twin.start()
    try:
        down, _ = await run_test(
            twin.processors()[0],
            frames_to_send=[TextFrame("hello")],
            expected_down_frames=[TextFrame],
        )
        assert down[0].text == "hello"
    finally:
        await twin.stop()


async def test_speculative_context_produces_nothing(tmp_path):
    twin = make_twin(tmp_path, [closed_expert("a")])
    await twin.start()
    try:
        twin.context.add_message({"role": "user", "content": "hi"})
        await run_test(
            twin.processors()[0],
            frames_to_send=[LLMContextFrame(context=twin.context, speculation=True)],
            expected_down_frames=[],
        )
    finally:
        await twin.stop()


async def test_every_expert_down_still_answers_the_turn_and_reports_errors(tmp_path):
    twin = make_twin(tmp_path, [closed_expert("down-a"), closed_expert("down-b")])
    await twin.start()
    before = {
        n: EXPERT_ERRORS.labels(expert=n, kind="connect")._value.get() for n in ("down-a", "down-b")
    }
    failovers = ROUTING_DECISIONS.labels(expert="down-b", reason="failover")._value.get()
    try:
        down, up = await run_test(
            twin.processors()[0],
            frames_to_send=[user_turn(twin, "What is the capital of Portugal?")],
            expected_down_frames=[LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame],
        )
    finally:
        await twin.stop()
    assert down[1].text == NO_EXPERT_REPLY
    assert any(isinstance(f, ErrorFrame) for f in up)
    # Both go to the back of the order for the next turns.
    assert all(twin.router.is_down(e) for e in twin.cluster.experts.experts)
    for name in ("down-a", "down-b"):
        assert EXPERT_ERRORS.labels(expert=name, kind="connect")._value.get() == before[name] + 1
    assert (
        ROUTING_DECISIONS.labels(expert="down-b", reason="failover")._value.get() == failovers + 1
    )


async def test_no_known_experts_still_answers_the_turn(tmp_path):
    twin = make_twin(
        tmp_path,
        [],  # Consul down, no fallback configured
        discovery={
            "mode": "consul",
            "consul_addr": f"http://127.0.0.1:{free_port()}",
            "retry_s": 5,
        },
    )
    await twin.start()
    try:
        down, _ = await run_test(
            twin.processors()[0],
            frames_to_send=[user_turn(twin, "hello?")],
            expected_down_frames=[LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame],
        )
    finally:
        await twin.stop()
    assert down[1].text == NO_EXPERT_REPLY


async def test_consul_unreachable_at_start_the_configured_expert_answers(tmp_path):
    with replay_server([sse("Lisbon.")]) as local:
        twin = make_twin(
            tmp_path,
            [{"name": "local", "base_url": local.url}],
            discovery={
                "mode": "consul",
                "consul_addr": f"http://127.0.0.1:{free_port()}",
                "retry_s": 0.1,
            },
        )
        await twin.start()
        try:
            await until(lambda: twin.cluster.experts.failing)
            down, _ = await run_test(
                twin.processors()[0],
                frames_to_send=[user_turn(twin, "What is the capital of Portugal?")],
            )
        finally:
            await twin.stop()
    assert [f.text for f in down if isinstance(f, LLMTextFrame)] == ["Lisbon."]
    assert twin.routing_state.expert == "local"


async def test_each_turn_is_stored_as_episodic_memory(tmp_path):
    twin = make_twin(tmp_path, [closed_expert("a")])
    await twin.start()
    try:
        await run_test(
            twin.processors()[0],
            frames_to_send=[user_turn(twin, "My cat is called Mingau")],
        )
        items = twin.memory.recall("ana", "cat Mingau")
    finally:
        await twin.stop()
    assert [(i.kind, i.role, i.text) for i in items] == [
        ("episode", "user", "My cat is called Mingau")
    ]


async def test_a_huge_turn_is_stored_cut_to_the_limit_the_remember_tool_shows(tmp_path):
    memory = {"path": str(tmp_path / "memory.sqlite3"), "max_item_chars": 300}
    twin = make_twin(tmp_path, [closed_expert("a")], memory=memory)
    assert twin.toolbox.get("remember").properties["fact"]["maxLength"] == 300
    huge = "lighthouse " * (5 * 1024 * 1024 // 11)  # a 5 MiB message
    await twin.start()
    try:
        await run_test(twin.processors()[0], frames_to_send=[user_turn(twin, huge)])
    finally:
        await twin.stop()
    rows = query(tmp_path / "memory.sqlite3", "SELECT role, length(text) FROM memories ORDER BY id")
    assert rows == [("user", 300), ("assistant", len(NO_EXPERT_REPLY))]
    # The default: a remembered item, a turn or a fact, keeps up to 1000 characters.
    default = TwinService(TwinConfig.model_validate({"experts": [closed_expert("a")]}))
    assert default.memory.max_item_chars == 1000
    assert default.toolbox.get("remember").properties["fact"]["maxLength"] == 1000


async def test_earlier_conversations_are_recalled_but_not_the_current_one(tmp_path):
    twin = make_twin(tmp_path, [closed_expert("a")])
    twin.memory.open()
    yesterday = time.time() - 86400
    twin.memory.remember(
        "ana", "We talked about the lighthouse trip", kind="episode", role="user", at=yesterday
    )
    twin.memory.close()
    await twin.start()
    try:
        twin.turn_memory.remember_turn("user", "The lighthouse is closed on Mondays")
        recalled = turns(twin).recalled("tell me about the lighthouse")
    finally:
        await twin.stop()
    assert "the user said: We talked about the lighthouse trip" in recalled
    assert "closed on Mondays" not in recalled


async def test_recalled_memory_is_within_the_budget_and_out_of_the_system_prompt(tmp_path):
    twin = make_twin(tmp_path, [closed_expert("a")])
    await twin.start()
    try:
        twin.memory.remember("ana", "Ana's daughter is called Rita")
        twin.memory.remember("ana", "Rita plays the cello " + "very " * 100)  # > 64 tokens
        twin.memory.remember("ana", "Tomas plays football on Sundays")
        recalled = turns(twin).recalled("what is my daughter called? and Rita's cello?")
        system = turns(twin).system_message()
    finally:
        await twin.stop()
    assert system == twin.cluster.prompt.text  # the same every turn: the cached prefix
    assert "- Ana's daughter is called Rita" in recalled
    assert "cello" not in recalled  # did not fit the 64-token budget
    assert "Tomas" not in recalled  # not relevant to the turn
    # The conversation's context itself does not grow with recalled memory.
    assert twin.context.messages == []


async def test_memory_off_or_broken_leaves_the_prompt_alone(tmp_path):
    (tmp_path / "memory.sqlite3").write_bytes(b"not sqlite" * 100)
    twin = make_twin(tmp_path, [closed_expert("a")])
    await twin.start()
    try:
        assert turns(twin).recalled("anything about my daughter") == ""
        _down, _ = await run_test(
            twin.processors()[0],
            frames_to_send=[user_turn(twin, "hello")],
            expected_down_frames=[LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame],
        )
    finally:
        await twin.stop()


def test_history_is_cut_to_the_context_window_keeping_the_last_turn():
    messages = [{"role": "user", "content": "x" * 4000}, {"role": "assistant", "content": "ok"}]
    messages += [{"role": "user", "content": "latest question"}]
    fitted = fit_history(messages, "system prompt", context_length=512, reserve=256)
    assert fitted[0] == {"role": "system", "content": "system prompt"}
    assert fitted[-1]["content"] == "latest question"
    assert all(m["content"] != "x" * 4000 for m in fitted)
    tool_first = [{"role": "tool", "content": "{}"}, {"role": "user", "content": "q"}]
    assert [m["role"] for m in fit_history(tool_first, "s", 2048, 256)] == ["system", "user"]


async def test_context_carries_the_tools_of_the_latest_turn_and_no_system_message(tmp_path):
    twin = make_twin(tmp_path, [closed_expert("a")])
    assert isinstance(twin.context, LLMContext)
    assert twin.context.messages == []
    # Before start memory is closed; static mode has no Consul and no vision service.
    assert [f.name for f in twin.context.tools.standard_tools] == ["current_time"]
    await twin.start()
    try:
        await run_test(twin.processors()[0], frames_to_send=[user_turn(twin, "What time is it?")])
    finally:
        await twin.stop()
    names = [f.name for f in twin.context.tools.standard_tools]
    assert names == ["remember", "recall", "forget", "current_time"]
    assert [m["role"] for m in twin.context.messages] == ["user"]
    assert not is_given(
        make_twin(tmp_path, [closed_expert("a")], tools={"enabled": False}).context.tools
    )


async def echo(ctx: ToolContext, text: str) -> str:
    """Say the text back.

    Args:
        text: What to say.
    """
    return text


async def test_the_context_offers_the_tools_the_twin_was_built_with_from_the_start(tmp_path):
    config = TwinConfig.model_validate(
        {"memory": {"path": str(tmp_path / "memory.sqlite3")}, "experts": [closed_expert("a")]}
    )
    twin = TwinService(config, toolbox=ToolBox([Tool(echo)]))
    assert [f.name for f in twin.context.tools.standard_tools] == ["echo"]
    await twin.start()
    try:
        await run_test(twin.processors()[0], frames_to_send=[user_turn(twin, "Say hi")])
    finally:
        await twin.stop()
    assert [f.name for f in twin.context.tools.standard_tools] == ["echo"]


async def test_interruption_cancels_the_running_turn(tmp_path):
    # A real TCP listener that accepts and never answers: the turn would wait 20 s.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
    twin = make_twin(
        tmp_path,
        [{"name": "slow", "base_url": url}],
        routing={"expert_timeout_s": 20},
    )
    await twin.start()
    try:
        started = time.monotonic()
        down, _ = await run_test(
            twin.processors()[0],
            frames_to_send=[
                user_turn(twin, "Tell me a long story"),
                SleepFrame(sleep=0.5),
                InterruptionFrame(),
            ],
        )
        elapsed = time.monotonic() - started
    finally:
        await twin.stop()
        silent.close()
    assert elapsed < 10
    assert any(isinstance(f, InterruptionFrame) for f in down)
    assert not [f for f in down if isinstance(f, LLMTextFrame)]


async def test_turn_reads_experts_from_memory_not_from_consul(fixture_api, tmp_path):
    health = "/v1/health/service/llm-expert"
    response = load_fixture("consul_health_llm-expert_100.json")
    for entry in response["body"]:  # point both experts at closed local ports
        entry["Service"]["Address"] = "127.0.0.1"
        entry["Service"]["Port"] = free_port()
    fixture_api.serve(health, response)
    twin = make_twin(
        tmp_path,
        [closed_expert("unused")],
        discovery={"mode": "consul", "consul_addr": fixture_api.url, "wait": "10s"},
    )
    await twin.start()
    try:
        # Wait until the watch is parked in a blocking query on index 100.
        while not any(p.get("index") == "100" for p in fixture_api.requests_to(health)):
            await asyncio.sleep(0.02)
        asked_before = len(fixture_api.requests)
        down, _ = await run_test(
            twin.processors()[0],
            frames_to_send=[user_turn(twin, "Fix my Python bug")],
        )
        asked_during = len(fixture_api.requests) - asked_before
    finally:
        await twin.stop()
    assert asked_during == 0
    assert [f.text for f in down if isinstance(f, LLMTextFrame)] == [NO_EXPERT_REPLY]


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("Please remember that my bike is green.", True),
        ("What time is it?", True),
        ("Which experts are running in the cluster?", True),
        ("Name three fruits.", False),
        ("How are you today?", False),
    ],
)
def test_fallback_experts_are_offered_tools_only_on_turns_that_need_them(tmp_path, text, wanted):
    twin = make_twin(tmp_path, [closed_expert("a")])
    assert turns(twin).wants_tools(text) is wanted


def test_an_empty_tool_trigger_offers_tools_on_every_turn(tmp_path):
    twin = make_twin(tmp_path, [closed_expert("a")], tools={"trigger": ""})
    assert turns(twin).wants_tools("Name three fruits.")


def test_a_tool_trigger_that_is_not_a_regex_is_refused():
    with pytest.raises(ValueError, match=r"twin\.tools\.trigger"):
        TwinConfig.model_validate({"tools": {"trigger": "(unclosed"}})


def test_consul_mode_has_no_fallback_expert_unless_the_config_names_one():
    # No phantom local llama-server in the cluster: only configured experts fall back.
    assert TwinConfig.model_validate({"discovery": {"mode": "consul"}}).experts == []
    assert [e.base_url for e in TwinConfig().experts] == ["http://127.0.0.1:8080/v1"]
    named = TwinConfig.model_validate(
        {"discovery": {"mode": "consul"}, "experts": [closed_expert("local")]}
    )
    assert [e.name for e in named.experts] == ["local"]
