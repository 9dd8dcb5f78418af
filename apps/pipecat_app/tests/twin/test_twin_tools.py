"""The built-in tools through a ToolBox: schemas, availability, results and errors.

The framework alone (schemas from code, validation, timeouts) is tested in
``test_twin_toolbox.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

from pipecat_app.metrics import TOOL_CALLS
from pipecat_app.twin.config import DiscoveryConfig
from pipecat_app.twin.discovery import VisionDirectory
from pipecat_app.twin.memory import MemoryStore
from pipecat_app.twin.observation import observation
from pipecat_app.twin.toolbox import Tool, ToolBox, ToolContext
from pipecat_app.twin.tools import (
    MEMORY_TOOLS,
    cluster_status,
    current_time,
    describe_scene,
    has_consul,
    has_memory,
    has_vision,
    remember,
)

from .conftest import load_fixture, until
from .twin_turns import builtin_toolbox

pytestmark = pytest.mark.anyio


def outcome(tool: str, kind: str) -> float:
    return TOOL_CALLS.labels(tool=tool, outcome=kind)._value.get()


@pytest.fixture
def memory(tmp_path):
    store = MemoryStore(tmp_path / "m.sqlite3")
    assert store.open()
    yield store
    store.close()


@pytest.fixture
def box(memory):
    return builtin_toolbox(memory)


def test_tools_are_advertised_as_pipecat_function_schemas(box):
    schema = box.tools_schema()
    assert isinstance(schema, ToolsSchema)
    names = [f.name for f in schema.standard_tools]
    assert names == [
        "remember",
        "recall",
        "forget",
        "current_time",
        "describe_scene",
        "cluster_status",
    ]
    remember = schema.standard_tools[0].to_default_dict()
    assert remember["parameters"]["required"] == ["fact"]


def test_a_tool_is_available_only_while_what_it_needs_is_there(memory):
    vision: list[str] = []
    consul: list[bool] = []
    box = builtin_toolbox(
        memory,
        vision_url=lambda: vision[-1] if vision else None,
        consul_up=lambda: bool(consul and consul[-1]),
    )

    def available() -> list[str]:
        return [t.name for t in box.available()]

    memory_and_time = ["remember", "recall", "forget", "current_time"]
    assert available() == memory_and_time
    vision.append("http://127.0.0.1:8090")
    assert available() == [*memory_and_time, "describe_scene"]
    consul.append(True)
    assert available() == [*memory_and_time, "describe_scene", "cluster_status"]
    vision.clear()
    consul.append(False)
    assert available() == memory_and_time
    memory.close()
    assert available() == ["current_time"]
    # What is offered is what the LLMContext gets.
    offered = box.tools_schema(box.available())
    assert [f.name for f in offered.standard_tools] == ["current_time"]


async def test_remember_refuses_a_fact_longer_than_the_memory_keeps(tmp_path):
    store = MemoryStore(tmp_path / "m.sqlite3", max_item_chars=40)
    assert store.open()
    box = builtin_toolbox(store)
    try:
        # What the model is shown is the memory's own limit.
        (remember_schema,) = [f for f in box.function_schemas() if f.name == "remember"]
        assert remember_schema.properties["fact"]["maxLength"] == 40
        stored = await box.call("remember", {"fact": "Ana's bike is green and has a basket!"})
        assert stored["ok"] is True  # 37 characters fit
        too_long = await box.call("remember", {"fact": "x" * 41})
        assert too_long["error"]["type"] == "invalid_arguments"
        assert store.count("ana") == 1
    finally:
        store.close()


async def test_remember_then_recall_through_the_tools(box):
    stored = await box.call("remember", {"fact": "Ana's bike is green"})
    assert stored["ok"] is True
    recalled = await box.call("recall", '{"query": "what colour is the bike"}')
    assert recalled == {"ok": True, "result": {"memories": ["Ana's bike is green"]}}
    forgotten = await box.call(
        "forget", {"query": "bike green"}, user_words="Forget that my bike is green."
    )
    assert forgotten == {"ok": True, "result": {"forgotten": 1}}


async def test_invalid_arguments_return_a_structured_error(box):
    before = outcome("recall", "invalid_arguments")
    result = await box.call("recall", {"query": "x", "limit": 500, "colour": "red"})
    assert result["ok"] is False
    assert result["error"]["type"] == "invalid_arguments"
    assert "limit" in result["error"]["message"]
    assert "colour" in result["error"]["message"]
    assert outcome("recall", "invalid_arguments") == before + 1
    missing = await box.call("remember", {})
    assert missing["error"]["type"] == "invalid_arguments"
    assert "'fact' is a required property" in missing["error"]["message"]
    not_json = await box.call("recall", "{query: oops")
    assert not_json["error"]["type"] == "invalid_arguments"


async def test_unknown_tool_returns_a_structured_error(box):
    result = await box.call("launch_rockets", {})
    assert result["error"]["type"] == "unknown_tool"
    assert "remember" in result["error"]["message"]


def test_docstring_descriptions_reach_the_schema_the_model_sees(box):
    recall = next(f for f in box.tools_schema().standard_tools if f.name == "recall")
    advertised = recall.to_default_dict()
    assert advertised["description"] == "Search what you remember about the user."
    assert advertised["parameters"]["properties"] == {
        "query": {"type": "string", "minLength": 1, "description": "What to look for."},
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": 20,
            "default": 5,
            "description": "Most memories to return.",
        },
    }
    assert "Returns" not in json.dumps(advertised)
    assert [t.function.required for t in map(box.get, box.names)] == [
        ["fact"],
        ["query"],
        ["query"],
        [],
        [],
        [],
    ]


async def test_a_context_without_memory_makes_memory_tools_unavailable():
    box = ToolBox([Tool(remember)])
    result = await box.call("remember", {"fact": "Ana likes tea"})
    assert result["error"] == {"type": "unavailable", "message": "memory is unavailable: not open"}


async def test_recall_limit_is_passed_as_an_integer_and_defaults_to_five(box):
    for n in range(7):
        assert (await box.call("remember", {"fact": f"Ana owns bike number {n}"}))["ok"]
    five = await box.call("recall", {"query": "bike"})
    assert len(five["result"]["memories"]) == 5
    two = await box.call("recall", {"query": "bike", "limit": 2.0})
    assert len(two["result"]["memories"]) == 2


async def test_current_time_in_a_time_zone_and_a_bad_zone():
    fixed = dt.datetime(2026, 11, 25, 13, 0, tzinfo=dt.UTC)
    box = ToolBox([Tool(current_time, ToolContext(clock=lambda: fixed))])
    result = await box.call("current_time", {"timezone": "Europe/Lisbon"})
    assert result["result"]["iso"] == "2026-11-25T13:00:00+00:00"
    result = await box.call("current_time", {"timezone": "Asia/Tokyo"})
    assert result["result"]["iso"] == "2026-11-25T22:00:00+09:00"
    bad = await box.call("current_time", {"timezone": "Mars/Olympus"})
    assert bad["error"] == {
        "type": "invalid_arguments",
        "message": "unknown time zone 'Mars/Olympus'",
    }


async def test_memory_tools_report_unavailable_memory(tmp_path):
    path = tmp_path / "broken.sqlite3"
    path.write_bytes(b"garbage" * 500)
    store = MemoryStore(path)
    store.open()
    context = ToolContext(memory=store, user_id=lambda: "ana")
    box = ToolBox([Tool(f, context, needs=has_memory) for f in MEMORY_TOOLS])
    result = await box.call("remember", {"fact": "x"})
    assert result["error"]["type"] == "unavailable"
    assert "memory is unavailable" in result["error"]["message"]


async def test_describe_scene_without_a_vision_service_is_not_offered_and_says_so():
    context = ToolContext(discovery=DiscoveryConfig(mode="static"), vision_url=lambda: None)
    box = ToolBox([Tool(describe_scene, context, needs=has_vision)])
    assert box.available() == []
    # A model that calls it anyway (an earlier turn offered it) is told the fix.
    result = await box.call("describe_scene", {})
    assert result["error"]["type"] == "unavailable"
    assert "twin.tools.vision_url" in result["error"]["message"]
    assert "'vision' service with twin.discovery.mode = 'consul'" in result["error"]["message"]


async def test_describe_scene_calls_the_vision_service_found_in_consul(fixture_api):
    asked = []
    answer = {"description": "A cat on a red sofa.", "findings": {"person_count": 0}}

    class Vision(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            asked.append((self.path, body))
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    vision = ThreadingHTTPServer(("127.0.0.1", 0), Vision)
    threading.Thread(target=vision.serve_forever, daemon=True).start()
    response = load_fixture("consul_health_vision_140.json")
    response["body"][0]["Service"]["Port"] = vision.server_address[1]
    fixture_api.serve("/v1/health/service/vision", response)
    discovery = DiscoveryConfig(mode="consul", consul_addr=fixture_api.url, wait="2s")
    found = VisionDirectory(discovery)
    await found.start()
    try:
        await until(lambda: found.url is not None)
        context = ToolContext(discovery=discovery, vision_url=lambda: found.url)
        box = ToolBox([Tool(describe_scene, context, needs=has_vision)])
        assert [t.name for t in box.available()] == ["describe_scene"]
        result = await box.call("describe_scene", {"question": "Any pets?"})
    finally:
        await found.stop()
        vision.shutdown()
        vision.server_close()
    assert result == {"ok": True, "result": {"observation": observation(answer, "node camera")}}
    assert "A cat on a red sofa." in result["result"]["observation"]
    assert asked == [("/describe", {"question": "Any pets?"})]


async def test_cluster_status_reads_experts_from_consul_and_jobs_from_nomad(fixture_api):
    fixture_api.serve("/v1/health/service/llm-expert", "consul_health_llm-expert_100.json")
    fixture_api.serve("/v1/jobs", "nomad_jobs.json")
    discovery = DiscoveryConfig(
        mode="consul", consul_addr=fixture_api.url, nomad_addr=fixture_api.url
    )
    box = ToolBox([Tool(cluster_status, ToolContext(discovery=discovery), needs=has_consul)])
    result = await box.call("cluster_status", {})
    assert result["ok"] is True
    experts = result["result"]["experts"]
    assert {e["domain"] for e in experts} == {"general", "code"}
    assert {(j["id"], j["namespace"]): j["status"] for j in result["result"]["jobs"]} == {
        ("expert-general", "llm"): "running",
        ("expert-code", "llm"): "running",
        ("pipecat-app", "apps"): "running",
    }
    assert fixture_api.requests_to("/v1/jobs")[0]["namespace"] == "*"


async def test_cluster_status_with_nothing_reachable_is_a_structured_error():
    discovery = DiscoveryConfig(
        mode="consul", consul_addr="http://127.0.0.1:9", nomad_addr="http://127.0.0.1:9"
    )
    box = ToolBox([Tool(cluster_status, ToolContext(discovery=discovery), needs=has_consul)])
    result = await box.call("cluster_status", {})
    assert result["error"]["type"] == "unavailable"
    assert "Consul" in result["error"]["message"]
    assert "Nomad" in result["error"]["message"]
