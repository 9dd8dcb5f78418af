"""The routing label: which expert answered a turn and why, sent at the turn's end.

The label's content is checked for each reason from real routing decisions
(the app's router over experts of three domains); its emission from real
turns against SmolLM2 on llama-server, one of them after a failover.
"""

from __future__ import annotations

import pytest
from pipecat.frames.frames import LLMContextFrame, LLMFullResponseEndFrame
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame
from pipecat.tests.utils import run_test

from pipecat_app.twin.config import ExpertConfig, RoutingConfig, RoutingRule
from pipecat_app.twin.discovery import Expert, experts_from_health
from pipecat_app.twin.route_label import ROUTE_MESSAGE_TYPE, RouteLabel, route_label
from pipecat_app.twin.router import Router, RoutingState

from .conftest import LlamaServer, free_port, load_fixture
from .twin_turns import expert, make_twin

GENERAL = Expert("general", "general", "Everyday conversation", "http://g/v1", node="node-g")
CODE = Expert("coder", "code", "Writes code", "http://c/v1", node="node-c")
HOME = Expert("house", "home", "Lights and heating", "http://h/v1", node="node-h")
EXPERTS = [GENERAL, CODE, HOME]


def router() -> Router:
    return Router(RoutingConfig(rules=[RoutingRule(domain="home", pattern=r"(?i)\bgarage\b")]))


def label_of(text: str, state: RoutingState | None = None, **times: float) -> RouteLabel:
    decision = router().route(text, EXPERTS, state)
    return route_label(
        decision,
        decision.expert,
        [],
        started=times.get("started", 10.0),
        first_text=times.get("first_text", 10.25),
        ended=times.get("ended", 11.5),
    )


def test_a_rule_labels_the_turn_with_the_rule_and_no_score():
    assert label_of("Is the garage shut?").model_dump() == {
        "type": ROUTE_MESSAGE_TYPE,
        "domain": "home",
        "expert": "house",
        "node": "node-h",
        "reason": "rule",
        "routed": "rule",
        "score": None,
        "encoder": None,
        "failed": [],
        "latency_ms": 250,
        "answer_ms": 1500,
    }


def test_similarity_labels_the_turn_with_the_domains_score():
    decision = router().route("Write a Python function that reverses a list.", EXPERTS)
    label = label_of("Write a Python function that reverses a list.")
    assert (label.domain, label.expert, label.node) == ("code", "coder", "node-c")
    assert (label.reason, label.routed) == ("similarity", "similarity")
    assert label.score == round(decision.score, 3)
    assert label.score is not None
    assert label.score >= RoutingConfig().threshold


def test_a_follow_up_is_labelled_as_one_and_names_the_previous_turns_expert():
    state = RoutingState()
    state.commit(router().route("Write a Python function that reverses a list.", EXPERTS))
    label = label_of("why?", state)
    assert (label.domain, label.expert, label.node) == ("code", "coder", "node-c")
    assert (label.reason, label.routed) == ("follow_up", "follow_up")


def test_a_failover_names_the_expert_that_answered_and_those_that_failed():
    decision = router().route("Write a Python function that reverses a list.", EXPERTS)
    assert decision.expert is CODE
    label = route_label(decision, GENERAL, [CODE], started=1.0, first_text=None, ended=9.0)
    assert label.model_dump() == {
        "type": ROUTE_MESSAGE_TYPE,
        "domain": "general",
        "expert": "general",
        "node": "node-g",
        "reason": "failover",
        "routed": "similarity",
        "score": round(decision.score, 3),
        "encoder": "tfidf",
        "failed": ["coder"],
        "latency_ms": None,
        "answer_ms": 8000,
    }


def test_no_evidence_is_labelled_as_the_default_domains_fallback():
    label = label_of("Hmm.")
    assert (label.domain, label.reason, label.score) == ("general", "fallback", 0.0)


def test_an_expert_knows_its_node_from_consul_or_its_url():
    configured = Expert.from_config(
        ExpertConfig.model_validate(expert("e", "http://10.1.2.3:8/v1"))
    )
    assert configured.node == "10.1.2.3"
    entries = load_fixture("consul_health_llm-expert_100.json")["body"]
    nodes = {e["Service"]["ID"]: e["Node"]["Node"] for e in entries}
    assert {e.name: e.node for e in experts_from_health(entries)} == nodes
    assert len(set(nodes.values())) == 2


async def labels_and_ends(twin, text: str) -> list[object]:
    twin.context.add_message({"role": "user", "content": text})
    down, _ = await run_test(
        twin.processors()[0], frames_to_send=[LLMContextFrame(context=twin.context)]
    )
    return [f for f in down if isinstance(f, RTVIServerMessageFrame | LLMFullResponseEndFrame)]


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_turn_ends_with_its_label_after_a_failover_to_the_expert_that_answered(
    llama_one: LlamaServer, tmp_path
):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    twin = make_twin(tmp_path, [expert("a-dead", dead), expert("b-live", llama_one.base_url)])
    await twin.start()
    try:
        frames = await labels_and_ends(twin, "Say hello in one short sentence.")
    finally:
        await twin.stop()
    assert [type(f) for f in frames] == [RTVIServerMessageFrame, LLMFullResponseEndFrame]
    label = RouteLabel.model_validate(frames[0].data)  # type: ignore[attr-defined]
    assert (label.expert, label.node, label.domain) == ("b-live", "127.0.0.1", "general")
    assert (label.reason, label.failed) == ("failover", ["a-dead"])
    assert label.latency_ms is not None
    assert 0 < label.latency_ms <= label.answer_ms


@pytest.mark.anyio
async def test_a_turn_no_expert_answered_has_no_label(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    twin = make_twin(tmp_path, [expert("a-dead", dead)])
    await twin.start()
    try:
        frames = await labels_and_ends(twin, "Hello?")
    finally:
        await twin.stop()
    assert [type(f) for f in frames] == [LLMFullResponseEndFrame]
