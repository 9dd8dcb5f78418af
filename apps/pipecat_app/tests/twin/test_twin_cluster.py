"""One view of the cluster per process: N conversations, one set of Consul watches.

The experts, the vision service and the system prompt are each followed by
one blocking query per process (:class:`ClusterView`), which every
conversation's TwinService reads. Consul here is the hand-written fixture
server of ``conftest.py`` (blocking-query semantics included).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipecat_app.config import AppConfig
from pipecat_app.server import create_app
from pipecat_app.twin import ClusterView, TwinConfig, TwinService

from .conftest import BlockingFixtureAPI, free_port, load_fixture, until

HEALTH = "/v1/health/service/llm-expert"
VISION = "/v1/health/service/vision"
KV = "/v1/kv/twin/prompts/system"
WATCHED = (HEALTH, VISION, KV)


def serve_cluster(api: BlockingFixtureAPI) -> None:
    """Experts (at closed local ports), a vision service and a prompt in Consul."""
    health = load_fixture("consul_health_llm-expert_100.json")
    for entry in health["body"]:
        entry["Service"]["Address"] = "127.0.0.1"
        entry["Service"]["Port"] = free_port()
    api.serve(HEALTH, health)
    api.serve(VISION, "consul_health_vision_140.json")
    api.serve(KV, "consul_kv_twin_prompts_system_210.json")


def twin_config(api: BlockingFixtureAPI, tmp_path: Path) -> dict[str, Any]:
    return {
        "user_id": "ana",
        "memory": {"path": str(tmp_path / "memory.sqlite3")},
        "discovery": {"mode": "consul", "consul_addr": api.url, "wait": "10s", "retry_s": 0.1},
        "prompt": {"consul_key": "twin/prompts/system"},
        "routing": {"expert_timeout_s": 2},
    }


def watches_started(api: BlockingFixtureAPI) -> dict[str, int]:
    """Per watched path, how many watches began (a watch's first query sends index 0)."""
    return {path: sum(p.get("index") == "0" for p in api.requests_to(path)) for path in WATCHED}


def parked(api: BlockingFixtureAPI) -> bool:
    """Every watched path has a blocking query waiting (on the index it was answered)."""
    return all(any(p.get("index", "0") != "0" for p in api.requests_to(path)) for path in WATCHED)


def test_every_conversation_of_the_server_reads_one_set_of_consul_watches(
    fixture_api: BlockingFixtureAPI, tmp_path: Path
):
    serve_cluster(fixture_api)
    config = AppConfig.model_validate({"twin": twin_config(fixture_api, tmp_path)})
    with TestClient(create_app(config)) as client:
        sessions = set()
        for n in range(3):  # three conversations, each a TwinService of its own
            reply = client.post("/api/chat", json={"text": f"Hello number {n}"})
            assert reply.status_code == 200, reply.text
            sessions.add(reply.json()["session_id"])
        assert len(sessions) == 3
        assert client.get("/health").json()["sessions"]["text"] == 3
        deadline = time.monotonic() + 5
        while not parked(fixture_api) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert parked(fixture_api)
        assert watches_started(fixture_api) == {path: 1 for path in WATCHED}
    # The app stopped: no watch asks again.
    asked = len(fixture_api.requests)
    time.sleep(0.3)
    assert len(fixture_api.requests) == asked


@pytest.mark.anyio
async def test_a_conversation_ending_leaves_the_shared_view_running(
    fixture_api: BlockingFixtureAPI, tmp_path: Path
):
    serve_cluster(fixture_api)
    config = TwinConfig.model_validate(twin_config(fixture_api, tmp_path))
    cluster = ClusterView(config)
    await cluster.start()
    try:
        await until(lambda: parked(fixture_api), timeout=5)
        first, second = TwinService(config, cluster=cluster), TwinService(config, cluster=cluster)
        for twin in (first, second):
            await twin.start()
        assert first.system_prompt == second.system_prompt == cluster.prompt.text
        assert cluster.prompt.source == "consul:twin/prompts/system"
        await first.stop()
        assert cluster.experts.watch is not None
        assert cluster.experts.consul_answering
        assert [e.name for e in second.processors()[0]._experts.experts] == [
            e.name for e in cluster.experts.experts
        ]
        await second.stop()
        assert watches_started(fixture_api) == {path: 1 for path in WATCHED}
    finally:
        await cluster.stop()
    assert cluster.experts.watch is None


@pytest.mark.anyio
async def test_a_twin_without_a_shared_view_follows_the_cluster_itself(
    fixture_api: BlockingFixtureAPI, tmp_path: Path
):
    serve_cluster(fixture_api)
    twin = TwinService(TwinConfig.model_validate(twin_config(fixture_api, tmp_path)))
    await twin.start()
    try:
        await until(lambda: parked(fixture_api), timeout=5)
        assert twin.cluster.prompt.source == "consul:twin/prompts/system"
    finally:
        await twin.stop()
    assert twin.cluster.experts.watch is None
    assert twin.cluster.prompt.watch is None


# -- health -------------------------------------------------------------------------


def unreachable_consul(tmp_path: Path, **twin: Any) -> TwinConfig:
    """Consul mode (experts and prompt) with nothing listening at Consul's address."""
    api = BlockingFixtureAPI(url=f"http://127.0.0.1:{free_port()}")
    return TwinConfig.model_validate({**twin_config(api, tmp_path), **twin})


@pytest.mark.anyio
async def test_health_is_ok_with_configured_experts_and_no_consul(tmp_path: Path):
    config = TwinConfig.model_validate({"memory": {"path": str(tmp_path / "memory.sqlite3")}})
    cluster = ClusterView(config)
    await cluster.start()
    try:
        assert cluster.health() == ("ok", [])
    finally:
        await cluster.stop()


@pytest.mark.anyio
async def test_health_is_degraded_with_each_reason_while_consul_is_unreachable(tmp_path: Path):
    cluster = ClusterView(unreachable_consul(tmp_path))
    await cluster.start()
    try:
        await until(lambda: cluster.experts.failing and cluster.prompt.failing)
        state, reasons = cluster.health()
    finally:
        await cluster.stop()
    assert state == "degraded"
    assert [reason.split(":")[0] for reason in reasons] == [
        "no expert known",
        "expert discovery failing",
        "prompt watch failing",
    ]
    assert "ConnectError" in reasons[1]


@pytest.mark.anyio
async def test_health_while_the_configured_fallback_serves_names_only_the_failing_discovery(
    tmp_path: Path,
):
    fallback = [{"name": "local", "base_url": "http://127.0.0.1:8080/v1"}]
    cluster = ClusterView(unreachable_consul(tmp_path, experts=fallback, prompt={}))
    await cluster.start()
    try:
        await until(lambda: cluster.experts.failing)
        state, reasons = cluster.health()
    finally:
        await cluster.stop()
    assert state == "degraded"
    assert [reason.split(":")[0] for reason in reasons] == ["expert discovery failing"]


@pytest.mark.anyio
async def test_health_turns_degraded_when_consul_goes_away_and_the_experts_stay(
    fixture_api: BlockingFixtureAPI, tmp_path: Path
):
    serve_cluster(fixture_api)
    config = twin_config(fixture_api, tmp_path)
    config["discovery"]["wait"] = "1s"  # parked queries end soon after Consul goes
    cluster = ClusterView(TwinConfig.model_validate(config))
    await cluster.start()
    try:
        await until(lambda: parked(fixture_api), timeout=5)
        assert cluster.health() == ("ok", [])
        fixture_api.stop()
        with fixture_api.changed:
            fixture_api.changed.notify_all()
        await until(lambda: cluster.experts.failing and cluster.prompt.failing)
        state, reasons = cluster.health()
        assert len(cluster.experts.experts) == 2
    finally:
        await cluster.stop()
    assert state == "degraded"
    assert [reason.split(":")[0] for reason in reasons] == [
        "expert discovery failing",
        "prompt watch failing",
    ]


def test_health_is_degraded_with_its_reasons_while_consul_is_unreachable(tmp_path: Path):
    config = AppConfig.model_validate(
        {
            "twin": {
                "memory": {"path": str(tmp_path / "memory.sqlite3")},
                "discovery": {
                    "mode": "consul",
                    "consul_addr": f"http://127.0.0.1:{free_port()}",
                    "retry_s": 0.1,
                },
                "prompt": {"consul_key": "twin/prompts/system"},
            }
        }
    )
    with TestClient(create_app(config)) as client:
        deadline = time.monotonic() + 5
        body = client.get("/health").json()
        while len(body["reasons"]) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            body = client.get("/health").json()
    assert body["status"] == "degraded"
    no_expert, discovery, prompt = body["reasons"]
    assert no_expert == "no expert known"
    assert discovery.startswith("expert discovery failing: ")
    assert prompt.startswith("prompt watch failing: ")


def test_health_is_ok_while_consul_answers_with_experts(
    fixture_api: BlockingFixtureAPI, tmp_path: Path
):
    serve_cluster(fixture_api)
    config = AppConfig.model_validate({"twin": twin_config(fixture_api, tmp_path)})
    with TestClient(create_app(config)) as client:
        deadline = time.monotonic() + 5
        while not parked(fixture_api) and time.monotonic() < deadline:
            time.sleep(0.02)
        body = client.get("/health").json()
    assert (body["status"], body["reasons"]) == ("ok", [])
