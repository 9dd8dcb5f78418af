"""Discovery: static experts, the vision service, and Consul health followed by blocking queries."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from pipecat_app.metrics import DISCOVERY_ERRORS, EXPERTS_AVAILABLE
from pipecat_app.twin.config import DiscoveryConfig, ExpertConfig
from pipecat_app.twin.consul_watch import next_index
from pipecat_app.twin.discovery import ExpertDirectory, VisionDirectory, experts_from_health

from .conftest import load_fixture, until

pytestmark = pytest.mark.anyio

HEALTH = "/v1/health/service/llm-expert"
VISION = "/v1/health/service/vision"


def consul_config(url: str) -> DiscoveryConfig:
    return DiscoveryConfig(mode="consul", consul_addr=url, wait="2s", retry_s=0.1)


async def test_static_mode_publishes_the_configured_experts_without_consul():
    directory = ExpertDirectory(
        DiscoveryConfig(mode="static", consul_addr="http://127.0.0.1:9"),
        [ExpertConfig(name="general", base_url="http://127.0.0.1:8080/v1/", tool_calls=True)],
    )
    await directory.start()
    assert [(e.name, e.base_url, e.tool_calls) for e in directory.experts] == [
        ("general", "http://127.0.0.1:8080/v1", True)
    ]
    assert EXPERTS_AVAILABLE._value.get() == 1
    assert not directory.consul_answering  # no Consul in static mode
    await directory.stop()


def test_experts_are_read_from_health_entries_with_their_meta():
    experts = experts_from_health(load_fixture("consul_health_llm-expert_100.json")["body"])
    by_domain = {e.domain: e for e in experts}
    code = by_domain["code"]
    assert code.base_url == "http://192.168.1.22:21934/v1"
    assert (code.model, code.context_length, code.tool_calls) == ("qwen2.5-coder-1.5b", 4096, False)
    assert code.description.startswith("Programming")


def test_meta_tool_calls_true_marks_the_expert_for_native_tools():
    # No expert the roles render registers "true" (prima.cpp rejects tools);
    # an expert on upstream llama.cpp with --jinja would.
    body = load_fixture("consul_health_llm-expert_100.json")["body"]
    body[1]["Service"]["Meta"]["tool_calls"] = "true"
    assert [(e.domain, e.tool_calls) for e in experts_from_health(body)] == [
        ("general", False),
        ("code", True),
    ]


def test_instances_with_a_failing_check_are_left_out():
    body = load_fixture("consul_health_llm-expert_100.json")["body"]
    body[1]["Checks"][1]["Status"] = "critical"
    assert [e.domain for e in experts_from_health(body)] == ["general"]


def test_index_goes_back_to_zero_when_it_moves_backwards_or_is_invalid():
    assert next_index(100, "131") == 131
    assert next_index(131, "42") == 0
    assert next_index(5, "0") == 0
    assert next_index(5, "not-a-number") == 0
    assert next_index(5, None) == 0


async def test_changes_arrive_through_blocking_queries_in_the_background(fixture_api):
    fixture_api.serve(HEALTH, "consul_health_llm-expert_100.json")
    seen = []
    directory = ExpertDirectory(consul_config(fixture_api.url), on_change=seen.append)
    await directory.start()
    try:
        await until(lambda: len(directory.experts) == 2)
        assert {e.domain for e in directory.experts} == {"general", "code"}
        # The watch now waits on index 100 ...
        await until(lambda: any(p.get("index") == "100" for p in fixture_api.requests_to(HEALTH)))
        params = fixture_api.requests_to(HEALTH)[-1]
        assert (params["passing"], params["wait"]) == ("true", "2s")
        # ... and a change is picked up without anyone asking.
        fixture_api.serve(HEALTH, "consul_health_llm-expert_131.json")
        await until(lambda: {e.domain for e in directory.experts} == {"general"})
        assert len(directory.experts) == 2
        assert directory.watch.index == 131
        assert len(seen) == 2
    finally:
        await directory.stop()


async def test_index_reset_makes_the_next_query_start_from_zero(fixture_api):
    fixture_api.serve(HEALTH, "consul_health_llm-expert_131.json")
    directory = ExpertDirectory(consul_config(fixture_api.url))
    await directory.start()
    try:
        await until(lambda: directory.watch is not None and directory.watch.index == 131)
        fixture_api.serve(HEALTH, "consul_health_llm-expert_reset_42.json")
        await until(lambda: {e.domain for e in directory.experts} == {"general", "code"})
        await until(lambda: directory.watch.index == 42)
        indexes = [p.get("index") for p in fixture_api.requests_to(HEALTH)]
        assert indexes[indexes.index("131") :].count("0") >= 1
    finally:
        await directory.stop()


async def test_unreachable_consul_keeps_the_last_known_experts_and_counts_errors(fixture_api):
    fixture_api.serve(HEALTH, "consul_health_llm-expert_100.json")
    directory = ExpertDirectory(consul_config(fixture_api.url))
    await directory.start()
    try:
        await until(lambda: len(directory.experts) == 2)
        assert directory.consul_answering
        before = DISCOVERY_ERRORS._value.get()
        fixture_api.stop()
        with fixture_api.changed:
            fixture_api.changed.notify_all()
        await until(lambda: DISCOVERY_ERRORS._value.get() >= before + 2)
        assert len(directory.experts) == 2
        assert directory.last_error is not None
        assert not directory.consul_answering
    finally:
        await directory.stop()


async def test_consul_down_at_start_gives_no_experts_and_an_error():
    directory = ExpertDirectory(consul_config("http://127.0.0.1:9"))
    before = DISCOVERY_ERRORS._value.get()
    await directory.start()
    try:
        await until(lambda: DISCOVERY_ERRORS._value.get() > before)
        assert directory.experts == []
    finally:
        await directory.stop()


FALLBACK = [ExpertConfig(name="local", base_url="http://127.0.0.1:8080/v1")]


def no_experts(index: int) -> dict:
    """The health fixture at ``index`` with no healthy instance left."""
    response = load_fixture("consul_health_llm-expert_131.json")
    response["headers"]["X-Consul-Index"] = str(index)
    response["body"] = []
    return response


async def test_consul_unreachable_at_start_the_configured_experts_serve():
    directory = ExpertDirectory(consul_config("http://127.0.0.1:9"), FALLBACK)
    before = DISCOVERY_ERRORS._value.get()
    await directory.start()
    try:
        assert [e.name for e in directory.experts] == ["local"]
        assert EXPERTS_AVAILABLE._value.get() == 1
        await until(lambda: DISCOVERY_ERRORS._value.get() >= before + 2)
        assert [e.name for e in directory.experts] == ["local"]
        assert directory.failing
        assert directory.last_error is not None
    finally:
        await directory.stop()


async def test_consul_experts_replace_the_fallback_and_stay_while_consul_is_down(fixture_api):
    fixture_api.serve(HEALTH, "consul_health_llm-expert_100.json")
    directory = ExpertDirectory(consul_config(fixture_api.url), FALLBACK)
    await directory.start()
    try:
        await until(lambda: len(directory.experts) == 2)
        # Consul's set alone: the fallback is not merged into it.
        assert "local" not in [e.name for e in directory.experts]
        assert EXPERTS_AVAILABLE._value.get() == 2
        fixture_api.stop()
        with fixture_api.changed:
            fixture_api.changed.notify_all()
        await until(lambda: directory.failing)
        assert {e.domain for e in directory.experts} == {"general", "code"}
        assert EXPERTS_AVAILABLE._value.get() == 2
    finally:
        await directory.stop()


async def test_consul_reporting_no_healthy_expert_brings_the_fallback_back(fixture_api):
    fixture_api.serve(HEALTH, "consul_health_llm-expert_100.json")
    seen: list[list[str]] = []
    directory = ExpertDirectory(
        consul_config(fixture_api.url),
        FALLBACK,
        on_change=lambda experts: seen.append([e.name for e in experts]),
    )
    await directory.start()
    try:
        await until(lambda: len(directory.experts) == 2)
        fixture_api.serve(HEALTH, no_experts(150))
        await until(lambda: [e.name for e in directory.experts] == ["local"])
        assert EXPERTS_AVAILABLE._value.get() == 1
        assert not directory.failing  # Consul answers; it has no expert
        assert [len(names) for names in seen] == [1, 2, 1]
        assert seen[0] == seen[2] == ["local"]
    finally:
        await directory.stop()


def vision_health(index: int, port: int | None) -> dict:
    """The vision fixture at ``index``: its one instance on 127.0.0.1:``port``, or none."""
    response = load_fixture("consul_health_vision_140.json")
    response["headers"]["X-Consul-Index"] = str(index)
    if port is None:
        response["body"] = []
    else:
        response["body"][0]["Service"].update(Address="127.0.0.1", Port=port)
    return response


async def test_a_configured_vision_url_is_used_without_asking_consul():
    vision = VisionDirectory(consul_config("http://127.0.0.1:9"), "http://192.168.1.30:8090/")
    await vision.start()
    try:
        assert (vision.url, vision.watch) == ("http://192.168.1.30:8090", None)
    finally:
        await vision.stop()


async def test_static_mode_without_a_vision_url_has_no_vision_service():
    vision = VisionDirectory(DiscoveryConfig(mode="static"))
    await vision.start()
    try:
        assert (vision.url, vision.watch) == (None, None)
    finally:
        await vision.stop()


async def test_vision_service_comes_and_goes_with_consul_and_stays_while_consul_is_down(
    fixture_api,
):
    fixture_api.serve(VISION, vision_health(120, None))
    vision = VisionDirectory(consul_config(fixture_api.url))
    await vision.start()
    try:
        await until(lambda: vision.watch is not None and vision.watch.index == 120)
        assert vision.url is None
        fixture_api.serve(VISION, vision_health(140, 8090))
        await until(lambda: vision.watch.index == 140)
        assert vision.url == "http://127.0.0.1:8090"
        fixture_api.serve(VISION, vision_health(141, None))
        await until(lambda: vision.watch.index == 141)
        assert vision.url is None
        fixture_api.serve(VISION, vision_health(142, 8091))
        await until(lambda: vision.watch.index == 142)
        fixture_api.stop()
        with fixture_api.changed:
            fixture_api.changed.notify_all()
        await until(lambda: vision.watch.consecutive_failures >= 2, timeout=10)
        assert vision.url == "http://127.0.0.1:8091"
    finally:
        await vision.stop()


@pytest.mark.live
async def test_live_consul_registered_expert_is_discovered():
    addr = os.environ.get("CONSUL_HTTP_ADDR")
    if not addr:
        pytest.skip("CONSUL_HTTP_ADDR is not set: no real Consul to test against")
    addr = addr if "://" in addr else f"http://{addr}"
    token = os.environ.get("CONSUL_HTTP_TOKEN", "")
    headers = {"X-Consul-Token": token} if token else {}
    service = f"twin-test-expert-{uuid.uuid4().hex[:8]}"
    registration = {
        "ID": service,
        "Name": service,
        "Address": "127.0.0.1",
        "Port": 18080,
        "Meta": {"domain": "code", "description": "test", "model": "m", "tool_calls": "true"},
    }
    async with httpx.AsyncClient(base_url=addr, headers=headers) as consul:
        (await consul.put("/v1/agent/service/register", json=registration)).raise_for_status()
        directory = ExpertDirectory(
            DiscoveryConfig(
                mode="consul",
                consul_addr=addr,
                consul_token=token,
                service=service,
                wait="5s",
                retry_s=0.5,
            )
        )
        await directory.start()
        try:
            await until(lambda: len(directory.experts) == 1, timeout=15)
            expert = directory.experts[0]
            assert (expert.base_url, expert.domain, expert.tool_calls) == (
                "http://127.0.0.1:18080/v1",
                "code",
                True,
            )
            (await consul.put(f"/v1/agent/service/deregister/{service}")).raise_for_status()
            await until(lambda: directory.experts == [], timeout=15)
        finally:
            await directory.stop()
            await consul.put(f"/v1/agent/service/deregister/{service}")
