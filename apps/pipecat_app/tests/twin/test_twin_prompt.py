"""System prompt: local default file, Consul KV watch, reload into the LLMContext."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from pipecat_app.twin.config import DiscoveryConfig, PromptConfig, TwinConfig
from pipecat_app.twin.prompt import PromptSource, load_default
from pipecat_app.twin.service import TwinService

from .conftest import until

pytestmark = pytest.mark.anyio

KV = "/v1/kv/twin/prompts/system"


def test_default_comes_from_the_file_else_the_inline_text(tmp_path):
    prompt_file = tmp_path / "system.md"
    prompt_file.write_text("You are the house assistant.\n")
    assert load_default(PromptConfig(file=str(prompt_file))) == "You are the house assistant."
    assert (
        load_default(PromptConfig(file=str(tmp_path / "missing.md"), text="Inline.")) == "Inline."
    )
    prompt_file.write_text("   \n")
    assert load_default(PromptConfig(file=str(prompt_file), text="Inline.")) == "Inline."


async def test_prompt_from_consul_kv_reloads_when_the_key_changes(fixture_api, tmp_path):
    prompt_file = tmp_path / "system.md"
    prompt_file.write_text("Local default prompt.")
    fixture_api.serve(KV, "consul_kv_twin_prompts_system_210.json")
    seen = []
    source = PromptSource(
        PromptConfig(file=str(prompt_file), consul_key="twin/prompts/system"),
        DiscoveryConfig(consul_addr=fixture_api.url, wait="2s", retry_s=0.1),
        on_change=seen.append,
    )
    await source.start()
    try:
        await until(lambda: source.text == "You are Twin. Answer in one short sentence.")
        assert source.source == "consul:twin/prompts/system"
        fixture_api.serve(KV, "consul_kv_twin_prompts_system_233.json")
        await until(lambda: "evolved" in source.text)
        # Deleting the key brings the local default back.
        fixture_api.serve(KV, "consul_kv_twin_prompts_system_deleted_250.json")
        await until(lambda: source.text == "Local default prompt.")
        assert seen == [
            "Local default prompt.",
            "You are Twin. Answer in one short sentence.",
            "You are Twin, evolved: answer warmly and in one sentence.",
            "Local default prompt.",
        ]
        assert all(p["wait"] == "2s" for p in fixture_api.requests_to(KV))
    finally:
        await source.stop()


async def test_unreachable_consul_keeps_the_current_prompt(fixture_api):
    fixture_api.serve(KV, "consul_kv_twin_prompts_system_210.json")
    source = PromptSource(
        PromptConfig(text="Inline default.", consul_key="twin/prompts/system"),
        DiscoveryConfig(consul_addr=fixture_api.url, wait="2s", retry_s=0.1),
    )
    await source.start()
    try:
        await until(lambda: source.source.startswith("consul:"))
        fixture_api.stop()
        with fixture_api.changed:
            fixture_api.changed.notify_all()
        # The watch is parked in a blocking query that the stopped server still
        # answers (up to wait=2s later); only the requests after it fail. Wait
        # for two failures in a row: the error was seen, and seen again on retry.
        await until(lambda: source.watch.consecutive_failures >= 2, timeout=10)
        assert source.text == "You are Twin. Answer in one short sentence."
        assert source.source == "consul:twin/prompts/system"
    finally:
        await source.stop()


async def test_prompt_change_reaches_the_next_turn_without_restart(fixture_api, tmp_path):
    fixture_api.serve(KV, "consul_kv_twin_prompts_system_210.json")
    config = TwinConfig.model_validate(
        {
            "memory": {"path": str(tmp_path / "m.sqlite3")},
            "prompt": {"text": "Inline default.", "consul_key": "twin/prompts/system"},
            "discovery": {
                "mode": "static",
                "consul_addr": fixture_api.url,
                "wait": "2s",
                "retry_s": 0.1,
            },
        }
    )
    twin = TwinService(config)
    assert twin.system_prompt == "Inline default."
    turns = twin.processors()[0]
    await twin.start()
    try:
        await until(lambda: "one short sentence" in turns.system_message())
        twin.context.add_message({"role": "user", "content": "hi"})
        fixture_api.serve(KV, "consul_kv_twin_prompts_system_233.json")
        await until(lambda: turns.system_message().startswith("You are Twin, evolved"))
        # pipecat 1.x: the prompt is applied per request, the context holds the turns.
        assert twin.context.messages == [{"role": "user", "content": "hi"}]
    finally:
        await twin.stop()


@pytest.mark.live
async def test_live_consul_kv_prompt_is_applied_and_reloaded():
    addr = os.environ.get("CONSUL_HTTP_ADDR")
    if not addr:
        pytest.skip("CONSUL_HTTP_ADDR is not set: no real Consul to test against")
    addr = addr if "://" in addr else f"http://{addr}"
    token = os.environ.get("CONSUL_HTTP_TOKEN", "")
    key = f"twin-test/{uuid.uuid4().hex[:8]}/system"
    headers = {"X-Consul-Token": token} if token else {}
    async with httpx.AsyncClient(base_url=addr, headers=headers) as consul:
        (await consul.put(f"/v1/kv/{key}", content=b"First live prompt.")).raise_for_status()
        source = PromptSource(
            PromptConfig(text="Inline default.", consul_key=key),
            DiscoveryConfig(consul_addr=addr, consul_token=token, wait="5s", retry_s=0.5),
        )
        await source.start()
        try:
            await until(lambda: source.text == "First live prompt.", timeout=15)
            (await consul.put(f"/v1/kv/{key}", content=b"Second live prompt.")).raise_for_status()
            await until(lambda: source.text == "Second live prompt.", timeout=15)
            (await consul.delete(f"/v1/kv/{key}")).raise_for_status()
            await until(lambda: source.text == "Inline default.", timeout=15)
        finally:
            await source.stop()
            await consul.delete(f"/v1/kv/{key}")
