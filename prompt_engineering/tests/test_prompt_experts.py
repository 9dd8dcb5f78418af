"""The assistant's endpoints found through Consul, with the app's own discovery code.

Consul is the repository's fixture server answering the expert service's
health query (``helpers.consul_experts``: the app's hand-written answer with
the general expert moved onto a loopback OpenAI-compatible server).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.consul_experts import serving_experts
from helpers.ports import free_port
from pipecat_app.twin.config import DiscoveryConfig

from prompt_engineering.experts import discover
from prompt_engineering.runner import Endpoint, EndpointDown
from prompt_engineering.scoring import score_prompt
from prompt_engineering.suite import load_cases
from test_prompt_publish import recording_expert

PROMPT = "You are Twin, a friendly voice assistant. Answer in one short sentence."


def consul(url: str, token: str = "") -> DiscoveryConfig:
    return DiscoveryConfig(mode="consul", consul_addr=url, consul_token=token)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "prompt_engineering.cli", "--iterations", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.anyio
async def test_cases_run_on_the_expert_consul_lists_with_the_model_its_meta_names(tmp_path):
    other = f"http://127.0.0.1:{free_port()}/v1"  # the code expert: never asked
    with (
        recording_expert() as (general, requests),
        serving_experts({"general": general, "code": other}, tmp_path) as api,
    ):
        experts = await discover(consul(api.url, token="evolve-token"), "general")
        assert [(e.base_url, e.model, e.tool_calls) for e in experts] == [
            (general, "smollm2-135m", False)
        ]
        (query,) = api.requests_to("GET", "/v1/health/service/llm-expert")
        assert query.query["passing"] == ["true"]
        assert query.header("X-Consul-Token") == "evolve-token"

        cases = [c for c in load_cases() if not c.tools][:2]
        endpoints = [Endpoint(e.base_url, model=e.model) for e in experts]
        result = await score_prompt(PROMPT, cases, endpoints, concurrency=1)
    assert len(result.cases) == 2
    assert requests, "the cases never reached the expert Consul listed"
    assert {r["model"] for r in requests} == {"smollm2-135m"}


@pytest.mark.anyio
async def test_no_healthy_expert_of_the_domain_stops_the_run_naming_those_there_are(tmp_path):
    home = r"no healthy 'llm-expert' expert of domain 'home' \(healthy: _nomad-task-"
    with serving_experts({}, tmp_path) as api, pytest.raises(EndpointDown, match=home):
        await discover(consul(api.url), "home")


def test_prompt_evolve_stops_when_consul_does_not_answer(tmp_path):
    addr = f"http://127.0.0.1:{free_port()}"
    run = cli("--run-dir", str(tmp_path), "--consul-service", "llm-expert", "--consul-addr", addr)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"Consul at {addr} did not list the experts" in run.stdout
    assert not (tmp_path / "report.json").exists()


def test_prompt_evolve_checks_the_expert_consul_lists_and_stops_when_it_is_dead(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with serving_experts({"general": dead}, tmp_path) as api:
        run = cli(
            "--run-dir",
            str(tmp_path / "run"),
            "--consul-service",
            "llm-expert",
            "--consul-addr",
            api.url,
        )
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"experts from Consul (llm-expert, general, smollm2-135m): ['{dead}']" in run.stdout
    assert f"the model endpoint {dead} does not answer" in run.stdout
