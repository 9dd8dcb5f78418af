"""Each turn offers the tools whose needs exist then, in the request the expert gets.

TwinService runs against a REAL llama-server (SmolLM2-135M) through a small
proxy that keeps every request body, with Consul served by ``fixture_api``
(hand-written from HashiCorp's docs). While the conversation goes on, a vision
service appears in Consul and goes away again, then Consul stops answering:
the request of each turn must offer ``describe_scene`` only while a vision
service is known, and ``cluster_status`` only while Consul answers, in the
native ``tools`` and in the JSON-schema fallback (its reply schema and its
instructions) alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.llm import ExpertClient
from pipecat_app.twin.service import TwinService

from .conftest import LlamaServer, free_port, load_fixture, until
from .twin_turns import RecordingProxy, ask, recording_proxy

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EXPERTS = "/v1/health/service/llm-expert"
VISION = "/v1/health/service/vision"
QUESTION = "What do you see on the camera right now?"  # matches twin.tools.trigger
MEMORY_AND_TIME = ["remember", "recall", "forget", "current_time"]


@pytest.fixture
def proxy(llama_one: LlamaServer) -> Iterator[RecordingProxy]:
    with recording_proxy(llama_one.url) as state:
        yield state


def expert_health(port: int, native: bool) -> dict[str, Any]:
    """The experts fixture with one general expert, on the proxy."""
    response = load_fixture("consul_health_llm-expert_100.json")
    entry = next(e for e in response["body"] if e["Service"]["Meta"]["domain"] == "general")
    entry["Service"].update(Address="127.0.0.1", Port=port)
    entry["Service"]["Meta"]["tool_calls"] = "true" if native else "false"
    response["body"] = [entry]
    return response


def vision_health(index: int, present: bool) -> dict[str, Any]:
    """The vision fixture at ``index``: its instance (on a closed local port), or none."""
    response = load_fixture("consul_health_vision_140.json")
    response["headers"]["X-Consul-Index"] = str(index)
    if present:
        response["body"][0]["Service"].update(Address="127.0.0.1", Port=free_port())
    else:
        response["body"] = []
    return response


def offered(request: dict[str, Any]) -> list[str]:
    """The tools a request offers: native ``tools``, or the fallback's schema and prompt."""
    if "tools" in request:
        return [t["function"]["name"] for t in request["tools"]]
    schema = request["response_format"]["json_schema"]["schema"]
    branches = [b["properties"] for b in schema["anyOf"]]  # the answer, then one per tool
    in_schema = [b["tool"]["const"] for b in branches if "tool" in b]
    instructions = request["messages"][0]["content"].split("Tools:\n", 1)[1]
    assert re.findall(r"^- (\w+): ", instructions, re.M) == in_schema
    return in_schema


@pytest.mark.parametrize("native", [True, False], ids=["native", "fallback"])
async def test_each_turn_offers_describe_scene_and_cluster_status_only_while_they_can_work(
    native: bool, proxy: RecordingProxy, fixture_api, tmp_path: Path
):
    fixture_api.serve(EXPERTS, expert_health(proxy.port, native))
    fixture_api.serve(VISION, vision_health(120, present=False))
    twin = TwinService(
        TwinConfig.model_validate(
            {
                "user_id": "ana",
                "memory": {"path": str(tmp_path / "memory.sqlite3")},
                "tools": {"max_rounds": 1},  # the first request is the one that matters
                "discovery": {
                    "mode": "consul",
                    "consul_addr": fixture_api.url,
                    "wait": "1s",
                    "retry_s": 0.1,
                },
            }
        ),
        client=ExpertClient(timeout_s=120, max_tokens=48, temperature=0.0),
    )

    async def turn(expected: list[str]) -> None:
        """One user turn: its first request, and the context, offer ``expected``."""
        first = len(proxy.requests)
        await ask(twin, QUESTION)
        assert len(proxy.requests) > first, "the turn sent no request to the expert"
        assert offered(proxy.requests[first]) == expected
        assert proxy.statuses[first] == 200  # llama-server took the tools as offered
        assert [f.name for f in twin.context.tools.standard_tools] == expected

    await twin.start()
    try:
        await until(
            lambda: twin.cluster.experts.experts and twin.cluster.vision.watch.index == 120,
            timeout=10.0,
        )
        await turn([*MEMORY_AND_TIME, "cluster_status"])

        fixture_api.serve(VISION, vision_health(140, present=True))
        await until(lambda: twin.cluster.vision.watch.index == 140, timeout=10.0)
        await turn([*MEMORY_AND_TIME, "describe_scene", "cluster_status"])

        fixture_api.serve(VISION, vision_health(141, present=False))
        await until(lambda: twin.cluster.vision.watch.index == 141, timeout=10.0)
        await turn([*MEMORY_AND_TIME, "cluster_status"])

        fixture_api.stop()  # Consul goes away; the experts stay known
        with fixture_api.changed:
            fixture_api.changed.notify_all()
        await until(lambda: twin.cluster.experts.watch.consecutive_failures >= 1, timeout=10.0)
        await turn(MEMORY_AND_TIME)
    finally:
        await twin.stop()
