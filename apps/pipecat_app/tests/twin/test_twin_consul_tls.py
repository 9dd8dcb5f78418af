"""Consul and Nomad over HTTPS: the app trusts the cluster's CA, and only it.

Consul and Nomad here are the hand-written fixture server of ``conftest.py``
(blocking queries included) behind :func:`helpers.tls.tls_front`, an HTTPS
server on 127.0.0.1 with a certificate signed by a CA each test makes
(:func:`helpers.tls.make_ca`, python ``cryptography``). A client gets to the
fixtures only when it trusts that CA; one that does not is refused in the
handshake, before any request reaches them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers.tls import CertFiles, make_ca, tls_front
from loguru import logger

from pipecat_app.config import AppConfig
from pipecat_app.server import create_app
from pipecat_app.twin.cluster import ClusterView
from pipecat_app.twin.config import DiscoveryConfig, PromptConfig, TwinConfig
from pipecat_app.twin.discovery import ExpertDirectory
from pipecat_app.twin.prompt import PromptSource
from pipecat_app.twin.toolbox import Tool, ToolBox, ToolContext
from pipecat_app.twin.tools import cluster_status

from .conftest import BlockingFixtureAPI, until

HEALTH = "/v1/health/service/llm-expert"
KV = "/v1/kv/twin/prompts/system"


@dataclass(frozen=True)
class HttpsConsul:
    """The fixture API served over HTTPS: its URL, the CA that signed it, and another CA."""

    url: str
    api: BlockingFixtureAPI
    ca: CertFiles
    other_ca: CertFiles


@pytest.fixture
def https_consul(fixture_api: BlockingFixtureAPI, tmp_path: Path) -> Iterator[HttpsConsul]:
    (tmp_path / "ca").mkdir()
    (tmp_path / "other").mkdir()
    certs, other = make_ca(tmp_path / "ca"), make_ca(tmp_path / "other")
    fixture_api.serve(HEALTH, "consul_health_llm-expert_100.json")
    fixture_api.serve(KV, "consul_kv_twin_prompts_system_210.json")
    fixture_api.serve("/v1/jobs", "nomad_jobs.json")
    with tls_front(fixture_api.url, certs) as url:
        yield HttpsConsul(url, fixture_api, certs, other)
    with fixture_api.changed:
        fixture_api.changed.notify_all()


@pytest.fixture
def errors() -> Iterator[list[str]]:
    """The app's ERROR log lines while the test runs."""
    lines: list[str] = []
    handle = logger.add(lines.append, level="ERROR", format="{message}")
    yield lines
    logger.remove(handle)


def consul(url: str, **settings: Any) -> DiscoveryConfig:
    return DiscoveryConfig(mode="consul", consul_addr=url, wait="2s", retry_s=0.1, **settings)


async def discovered(config: DiscoveryConfig) -> ExpertDirectory:
    """A started directory once it has seen the fixture's two experts (the caller stops it)."""
    directory = ExpertDirectory(config)
    await directory.start()
    try:
        await until(lambda: len(directory.experts) == 2)
    except AssertionError:
        await directory.stop()
        raise
    return directory


async def refused(config: DiscoveryConfig) -> tuple[ExpertDirectory, str]:
    """A started directory once its first request has failed, and why (the caller stops it)."""
    directory = ExpertDirectory(config)
    await directory.start()
    try:
        await until(lambda: directory.failing)
    except AssertionError:
        await directory.stop()
        raise
    return directory, directory.last_error or ""


# -- the experts, over HTTPS ---------------------------------------------------------


@pytest.mark.anyio
async def test_experts_are_found_over_https_trusting_the_ca_in_ca_file(https_consul):
    directory = await discovered(consul(https_consul.url, ca_file=str(https_consul.ca.ca)))
    try:
        assert {e.domain for e in directory.experts} == {"general", "code"}
        assert directory.consul_answering
        # The blocking query goes on over HTTPS: the watch parks on index 100.
        api = https_consul.api
        await until(lambda: any(p.get("index") == "100" for p in api.requests_to(HEALTH)))
    finally:
        await directory.stop()


@pytest.mark.anyio
async def test_experts_are_found_over_https_trusting_the_ca_in_env_consul_cacert(
    https_consul, monkeypatch
):
    monkeypatch.setenv("CONSUL_CACERT", str(https_consul.ca.ca))
    monkeypatch.setenv("NOMAD_CACERT", str(https_consul.other_ca.ca))  # Nomad's, not Consul's
    directory = await discovered(consul(https_consul.url))
    try:
        assert directory.consul_answering
    finally:
        await directory.stop()


@pytest.mark.anyio
async def test_ca_file_wins_over_env_consul_cacert(https_consul, monkeypatch):
    monkeypatch.setenv("CONSUL_CACERT", str(https_consul.other_ca.ca))
    directory = await discovered(consul(https_consul.url, ca_file=str(https_consul.ca.ca)))
    await directory.stop()


@pytest.mark.anyio
async def test_without_the_ca_consul_is_refused_and_the_log_says_what_to_set(https_consul, errors):
    directory, reason = await refused(consul(https_consul.url))
    try:
        assert directory.experts == []
        assert not directory.consul_answering
    finally:
        await directory.stop()
    assert f"TLS certificate of Consul at {https_consul.url} not trusted" in reason
    assert "by the system's CAs" in reason
    assert "set twin.discovery.ca_file (or env CONSUL_CACERT)" in reason
    assert any(reason in line and line.startswith("discovery: Consul at") for line in errors)
    # Refused in the handshake: no request reached Consul.
    assert https_consul.api.requests_to(HEALTH) == []


@pytest.mark.anyio
async def test_with_another_ca_consul_is_refused_naming_the_ca_trusted(https_consul, errors):
    other = str(https_consul.other_ca.ca)
    directory, reason = await refused(consul(https_consul.url, ca_file=other))
    await directory.stop()
    assert f"TLS certificate of Consul at {https_consul.url} not trusted" in reason
    assert f"by the CA in twin.discovery.ca_file ({other})" in reason
    assert any(reason in line for line in errors)
    assert https_consul.api.requests_to(HEALTH) == []


@pytest.mark.anyio
async def test_with_another_ca_in_env_consul_cacert_the_reason_names_the_variable(
    https_consul, monkeypatch
):
    monkeypatch.setenv("CONSUL_CACERT", str(https_consul.other_ca.ca))
    directory, reason = await refused(consul(https_consul.url))
    await directory.stop()
    assert f"by the CA in env CONSUL_CACERT ({https_consul.other_ca.ca})" in reason
    assert "set env CONSUL_CACERT to the CA that signed it" in reason


@pytest.mark.anyio
async def test_https_to_a_plain_http_consul_says_to_check_the_address(fixture_api):
    plain = fixture_api.url.replace("http://", "https://")
    directory, reason = await refused(consul(plain))
    await directory.stop()
    assert f"TLS handshake with Consul at {plain} failed" in reason
    assert "HTTPS address" in reason


# -- the prompt watch and cluster_status, over HTTPS --------------------------------


@pytest.mark.anyio
async def test_the_prompt_watch_reads_consul_kv_over_https_with_the_ca(https_consul):
    source = PromptSource(
        PromptConfig(consul_key="twin/prompts/system"),
        consul(https_consul.url, ca_file=str(https_consul.ca.ca)),
    )
    await source.start()
    try:
        await until(lambda: source.source == "consul:twin/prompts/system")
        assert source.text == "You are Twin. Answer in one short sentence."
    finally:
        await source.stop()


@pytest.mark.anyio
async def test_the_prompt_watch_without_the_ca_keeps_the_default_and_says_why(https_consul):
    source = PromptSource(PromptConfig(consul_key="twin/prompts/system"), consul(https_consul.url))
    await source.start()
    try:
        await until(lambda: source.failing)
        assert source.source == "default"
        assert "TLS certificate of Consul at" in (source.last_error or "")
    finally:
        await source.stop()


async def cluster_report(discovery: DiscoveryConfig) -> dict[str, Any]:
    box = ToolBox([Tool(cluster_status, ToolContext(discovery=discovery))])
    return await box.call("cluster_status", {})


@pytest.mark.anyio
async def test_cluster_status_reads_consul_and_nomad_over_https_with_the_ca(https_consul):
    discovery = consul(
        https_consul.url, nomad_addr=https_consul.url, ca_file=str(https_consul.ca.ca)
    )
    result = await cluster_report(discovery)
    assert result["ok"] is True, result
    assert {e["domain"] for e in result["result"]["experts"]} == {"general", "code"}
    assert {j["id"] for j in result["result"]["jobs"]} == {
        "expert-general",
        "expert-code",
        "pipecat-app",
    }


@pytest.mark.anyio
async def test_cluster_status_trusts_consul_cacert_for_consul_and_nomad_cacert_for_nomad(
    https_consul, monkeypatch
):
    monkeypatch.setenv("CONSUL_CACERT", str(https_consul.ca.ca))
    monkeypatch.setenv("NOMAD_CACERT", str(https_consul.other_ca.ca))
    result = await cluster_report(consul(https_consul.url, nomad_addr=https_consul.url))
    report = result["result"]
    assert {e["domain"] for e in report["experts"]} == {"general", "code"}
    assert "jobs" not in report
    assert report["jobs_error"].startswith(f"Nomad: TLS certificate of Nomad at {https_consul.url}")
    assert "set env NOMAD_CACERT" in report["jobs_error"]


@pytest.mark.anyio
async def test_cluster_status_without_the_ca_refuses_both_and_says_why(https_consul):
    result = await cluster_report(consul(https_consul.url, nomad_addr=https_consul.url))
    assert result["error"]["type"] == "unavailable"
    message = result["error"]["message"]
    assert f"TLS certificate of Consul at {https_consul.url} not trusted" in message
    assert f"TLS certificate of Nomad at {https_consul.url} not trusted" in message
    assert https_consul.api.requests_to(HEALTH) == []
    assert https_consul.api.requests_to("/v1/jobs") == []


# -- /health --------------------------------------------------------------------------


def app_config(https_consul: HttpsConsul, tmp_path: Path, **discovery: Any) -> AppConfig:
    return AppConfig.model_validate(
        {
            "twin": {
                "memory": {"path": str(tmp_path / "memory.sqlite3")},
                "discovery": {
                    "mode": "consul",
                    "consul_addr": https_consul.url,
                    "wait": "2s",
                    "retry_s": 0.1,
                    **discovery,
                },
            }
        }
    )


def health(client: TestClient, done: Any) -> dict[str, Any]:
    """``/health`` once ``done(body)`` holds, or after 5 s."""
    deadline = time.monotonic() + 5
    body = client.get("/health").json()
    while not done(body) and time.monotonic() < deadline:
        time.sleep(0.05)
        body = client.get("/health").json()
    return body


def test_health_is_degraded_with_the_reason_when_consul_is_signed_by_another_ca(
    https_consul, tmp_path
):
    config = app_config(https_consul, tmp_path, ca_file=str(https_consul.other_ca.ca))
    with TestClient(create_app(config)) as client:
        body = health(client, lambda b: len(b["reasons"]) == 2)
    assert body["status"] == "degraded"
    assert body["reasons"][0] == "no expert known"
    assert body["reasons"][1].startswith(
        f"expert discovery failing: TLS certificate of Consul at {https_consul.url} not trusted"
    )
    assert "set twin.discovery.ca_file to the CA that signed it" in body["reasons"][1]


def test_health_is_ok_when_consul_is_trusted_over_https(https_consul, tmp_path):
    config = app_config(https_consul, tmp_path, ca_file=str(https_consul.ca.ca))
    with TestClient(create_app(config)) as client:
        body = health(client, lambda b: b["status"] == "ok")
    assert (body["status"], body["reasons"]) == ("ok", [])


@pytest.mark.anyio
async def test_cluster_view_health_names_the_refused_certificate_for_the_prompt_too(
    https_consul, tmp_path
):
    config = TwinConfig.model_validate(
        {
            "memory": {"enabled": False},
            "discovery": {"mode": "consul", "consul_addr": https_consul.url, "retry_s": 0.1},
            "prompt": {"consul_key": "twin/prompts/system"},
        }
    )
    cluster = ClusterView(config)
    await cluster.start()
    try:
        await until(lambda: cluster.experts.failing and cluster.prompt.failing)
        state, reasons = cluster.health()
    finally:
        await cluster.stop()
    assert state == "degraded"
    assert [r.split(":")[0] for r in reasons] == [
        "no expert known",
        "expert discovery failing",
        "prompt watch failing",
    ]
    assert all(f"TLS certificate of Consul at {https_consul.url}" in r for r in reasons[1:])


# -- mTLS: Consul and Nomad that demand a client certificate ---------------------------


@dataclass(frozen=True)
class MutualTLS:
    """The fixture API over HTTPS demanding a client certificate; the client's files."""

    url: str
    api: BlockingFixtureAPI
    ca: CertFiles
    client: CertFiles


@pytest.fixture
def mtls_consul(fixture_api: BlockingFixtureAPI, tmp_path: Path) -> Iterator[MutualTLS]:
    (tmp_path / "ca").mkdir()
    (tmp_path / "clients").mkdir()
    # The clients' CA signs a certificate (for 127.0.0.1) the app shows as its own.
    certs, client = make_ca(tmp_path / "ca"), make_ca(tmp_path / "clients")
    fixture_api.serve(HEALTH, "consul_health_llm-expert_100.json")
    fixture_api.serve("/v1/jobs", "nomad_jobs.json")
    with tls_front(fixture_api.url, certs, client_ca=client.ca) as url:
        yield MutualTLS(url, fixture_api, certs, client)
    with fixture_api.changed:
        fixture_api.changed.notify_all()


@pytest.mark.anyio
async def test_experts_are_found_when_consul_demands_the_client_certificate(mtls_consul):
    directory = await discovered(
        consul(
            mtls_consul.url,
            ca_file=str(mtls_consul.ca.ca),
            client_cert_file=str(mtls_consul.client.cert),
            client_key_file=str(mtls_consul.client.key),
        )
    )
    try:
        assert directory.consul_answering
    finally:
        await directory.stop()


@pytest.mark.anyio
async def test_without_a_client_certificate_the_reason_says_what_to_set(mtls_consul):
    directory, reason = await refused(consul(mtls_consul.url, ca_file=str(mtls_consul.ca.ca)))
    await directory.stop()
    assert f"TLS handshake with Consul at {mtls_consul.url} failed" in reason
    assert "demands a client certificate (none was shown: env CONSUL_CLIENT_CERT and" in reason
    assert mtls_consul.api.requests_to(HEALTH) == []


@pytest.mark.anyio
async def test_cluster_status_shows_consul_and_nomad_the_client_certificate(mtls_consul):
    discovery = consul(
        mtls_consul.url,
        nomad_addr=mtls_consul.url,
        ca_file=str(mtls_consul.ca.ca),
        client_cert_file=str(mtls_consul.client.cert),
        client_key_file=str(mtls_consul.client.key),
    )
    result = await cluster_report(discovery)
    assert result["ok"] is True, result
    report = result["result"]
    assert {e["domain"] for e in report["experts"]} == {"general", "code"}
    assert {j["id"] for j in report["jobs"]} == {"expert-general", "expert-code", "pipecat-app"}
