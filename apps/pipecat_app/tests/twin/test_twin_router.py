"""Routing: rules, similarity, threshold fallback, stickiness, failover order."""

from __future__ import annotations

from pipecat_app.metrics import ROUTING_DECISIONS
from pipecat_app.twin.config import RoutingConfig, RoutingRule
from pipecat_app.twin.discovery import Expert
from pipecat_app.twin.router import Router, RoutingState

GENERAL = Expert("general", "general", "Everyday conversation and general knowledge", "http://g/v1")
GENERAL_2 = Expert(
    "general-2", "general", "Everyday conversation and general knowledge", "http://g2/v1"
)
CODE = Expert("code", "code", "Programming, Python code, debugging software bugs", "http://c/v1")
COOKING = Expert("chef", "cooking", "Recipes, cooking, baking and food", "http://f/v1")
EXPERTS = [GENERAL, GENERAL_2, CODE, COOKING]


def router(**kwargs) -> Router:
    config = RoutingConfig(
        rules=[RoutingRule(domain="code", pattern=r"(?i)\b(stack ?trace|segfault)\b")], **kwargs
    )
    return Router(config)


def decisions(expert: str, reason: str) -> float:
    return ROUTING_DECISIONS.labels(expert=expert, reason=reason)._value.get()


def test_rule_match_routes_to_its_domain():
    before = decisions("code", "rule")
    decision = router().route("I got a segfault in my program", EXPERTS)
    assert (decision.expert.name, decision.reason) == ("code", "rule")
    assert decisions("code", "rule") == before + 1


def test_turn_similar_to_a_description_goes_to_that_expert():
    decision = router().route("How do I debug this Python function?", EXPERTS)
    assert (decision.expert.domain, decision.reason) == ("code", "similarity")
    decision = router().route("Give me a recipe for baking bread", EXPERTS)
    assert (decision.expert.domain, decision.reason) == ("cooking", "similarity")


def test_turn_below_threshold_falls_back_to_the_general_expert():
    decision = router().route("Hello there, how are you today?", EXPERTS)
    assert (decision.expert.domain, decision.reason) == ("general", "fallback")
    assert decision.score < 0.35


def test_threshold_decides_between_similarity_and_fallback():
    # "python" and "recipes" each explain half of the informative words.
    text = "python recipes"
    assert router(threshold=0.4).route(text, EXPERTS).reason == "similarity"
    assert router(threshold=0.9).route(text, EXPERTS).reason == "fallback"


def test_conversation_stays_with_its_expert_while_the_topic_holds():
    r = router(sticky_turns=2)
    state = RoutingState()
    first = r.route("Why does my Python code crash?", EXPERTS, state)
    assert first.expert.name == "code"
    state.commit(first)
    follow_up = r.route("And what if I change the second line?", EXPERTS, state)
    assert (follow_up.expert.name, follow_up.reason) == ("code", "sticky")
    state.commit(follow_up)
    # The topic changes: a clear match elsewhere wins over stickiness.
    moved = r.route("Now a recipe for pancakes please", EXPERTS, state)
    assert (moved.expert.name, moved.reason) == ("chef", "similarity")


def test_stickiness_ends_after_sticky_turns_without_confirmation():
    r = router(sticky_turns=1)
    state = RoutingState()
    state.commit(r.route("Python debugging question", EXPERTS, state))
    sticky = r.route("ok and then?", EXPERTS, state)
    assert sticky.reason == "sticky"
    state.commit(sticky)
    assert r.route("ok and then?", EXPERTS, state).reason == "fallback"


def test_routing_leaves_the_state_alone_and_the_commit_records_who_answered():
    r = router(sticky_turns=2)
    state = RoutingState()
    decision = r.route("Why does my Python code crash?", EXPERTS, state)
    assert state == RoutingState()
    state.commit(decision, answered_by=GENERAL)  # "code" failed over to general
    assert (state.expert, state.domain, state.sticky_count) == ("general", "general", 0)
    assert r.route("And the second line?", EXPERTS, state).order[0].name == "general"


def test_failover_order_is_domain_then_general_then_the_rest():
    decision = router().route("fix this Python bug", [COOKING, GENERAL, CODE, GENERAL_2])
    assert [e.name for e in decision.order] == ["code", "general", "general-2", "chef"]


def test_failed_expert_goes_to_the_back_until_its_cooldown_ends():
    r = router()
    r.mark_failed(CODE, now=100.0)
    order = r.route("fix this Python bug", EXPERTS, now=110.0).order
    assert order[-1].name == "code"
    assert order[0].name == "general"
    order = r.route("fix this Python bug", EXPERTS, now=100.0 + 31).order
    assert order[0].name == "code"


def test_rule_for_a_domain_without_experts_is_ignored():
    decision = router().route("segfault!", [GENERAL, COOKING])
    assert decision.expert.name == "general"
