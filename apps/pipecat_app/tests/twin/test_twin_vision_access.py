"""describe_scene against a vision service protected like the cluster's: HTTPS and a token.

The service is the real ``twin-vision serve`` (apps/vision) with a
certificate from a CA of the test's own (``helpers.tls.make_ca``) and
``server.access_token`` set, as the vision role deploys it. The app trusts
that CA through ``twin.discovery.ca_file`` and sends ``twin.tools.vision_token``.
Found in Consul, the service is called over the scheme its meta names (the
vision job registers ``scheme = "https"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.tls import CertFiles, make_ca, tls_front
from helpers.vision import VisionProcess, photo, running_vision

from pipecat_app.twin.config import DiscoveryConfig, ToolsConfig
from pipecat_app.twin.discovery import Expert, VisionDirectory, experts_from_health
from pipecat_app.twin.llm import ExpertClient, ExpertError, TextDelta
from pipecat_app.twin.toolbox import Tool, ToolBox, ToolContext
from pipecat_app.twin.tools import describe_scene, has_vision

from .conftest import load_fixture, until
from .twin_turns import replay_server, sse

pytestmark = pytest.mark.anyio

TOKEN = "vision-test-token-4b1f0c"


@dataclass(frozen=True)
class ProtectedVision:
    service: VisionProcess
    certs: CertFiles


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProtectedVision]:
    """A real vision service over HTTPS that requires ``TOKEN`` (once: it loads models)."""
    directory = tmp_path_factory.mktemp("vision-tls")
    certs = make_ca(directory)
    settings = {
        "SERVER__TLS_CERT_FILE": str(certs.cert),
        "SERVER__TLS_KEY_FILE": str(certs.key),
        "SERVER__ACCESS_TOKEN": TOKEN,
    }
    with running_vision(directory, settings, ca=certs.ca) as service:
        yield ProtectedVision(service, certs)


def box(url: str, *, token: str = TOKEN, ca: Path | None = None) -> ToolBox:
    """describe_scene with the user's camera showing the astronaut photo."""
    context = ToolContext(
        tools=ToolsConfig(vision_url=url, vision_token=token),
        discovery=DiscoveryConfig(ca_file=str(ca) if ca else ""),
        vision_url=lambda: url,
        camera_frame=lambda: photo("astronaut"),
    )
    return ToolBox([Tool(describe_scene, context, needs=has_vision)])


async def test_describe_scene_over_https_with_the_token_and_the_cluster_ca(vision):
    assert vision.service.url.startswith("https://")
    result = await box(vision.service.url, ca=vision.certs.ca).call("describe_scene", {})
    assert result["ok"] is True, result
    assert "one person" in result["result"]["observation"].lower()


async def test_describe_scene_without_the_token_says_the_service_wants_one(vision):
    result = await box(vision.service.url, token="", ca=vision.certs.ca).call("describe_scene", {})
    assert result["ok"] is False
    message = result["error"]["message"]
    assert "refused the request, 401" in message
    assert "access token missing" in message  # the service's own reason
    assert "set twin.tools.vision_token" in message


async def test_describe_scene_with_a_wrong_token_says_it_is_not_the_services(vision):
    result = await box(vision.service.url, token="not-the-token", ca=vision.certs.ca).call(
        "describe_scene", {}
    )
    assert result["ok"] is False
    assert "access token wrong" in result["error"]["message"]
    assert "vision_token is not the service's" in result["error"]["message"]


async def test_describe_scene_refuses_a_certificate_the_configured_ca_did_not_sign(
    vision, tmp_path
):
    other_ca = make_ca(tmp_path).ca
    result = await box(vision.service.url, ca=other_ca).call("describe_scene", {})
    assert result["ok"] is False
    message = result["error"]["message"]
    assert "not trusted" in message
    assert f"the CA in twin.discovery.ca_file ({other_ca})" in message


async def test_describe_scene_without_a_ca_refuses_the_cluster_certificate(vision):
    # The system's CAs did not sign the test CA's certificate either.
    result = await box(vision.service.url).call("describe_scene", {})
    assert result["ok"] is False
    assert "not trusted (" in result["error"]["message"]
    assert "by the system's CAs" in result["error"]["message"]


def https_vision_health(port: int) -> dict:
    """Consul's answer for the vision service on 127.0.0.1:``port``, registered with
    ``scheme = "https"`` as jobs/vision.nomad.hcl.j2 writes it."""
    response = load_fixture("consul_health_vision_140.json")
    response["body"][0]["Service"].update(Address="127.0.0.1", Port=port)
    response["body"][0]["Service"]["Meta"]["scheme"] = "https"
    return response


async def test_a_vision_service_found_in_consul_with_scheme_https_is_called_over_https(
    vision, fixture_api
):
    port = int(vision.service.url.rsplit(":", 1)[1])
    fixture_api.serve("/v1/health/service/vision", https_vision_health(port))
    discovery = DiscoveryConfig(
        mode="consul", consul_addr=fixture_api.url, wait="2s", ca_file=str(vision.certs.ca)
    )
    found = VisionDirectory(discovery)
    await found.start()
    try:
        await until(lambda: found.url is not None)
        assert found.url == f"https://127.0.0.1:{port}"
        context = ToolContext(
            tools=ToolsConfig(vision_token=TOKEN),
            discovery=discovery,
            vision_url=lambda: found.url,
            camera_frame=lambda: photo("astronaut"),
        )
        result = await ToolBox([Tool(describe_scene, context)]).call("describe_scene", {})
    finally:
        await found.stop()
    assert result["ok"] is True, result
    assert "one person" in result["result"]["observation"].lower()


def test_expert_meta_scheme_names_the_url_scheme_and_an_unknown_one_is_skipped():
    body = load_fixture("consul_health_llm-expert_100.json")["body"]
    body[0]["Service"]["Meta"]["scheme"] = "https"
    body[1]["Service"]["Meta"]["scheme"] = "gopher"
    experts = experts_from_health(body)
    assert [e.base_url.split("://")[0] for e in experts] == ["https"]
    assert experts[0].name == body[0]["Service"]["ID"]


def test_expert_without_meta_scheme_is_plain_http():
    experts = experts_from_health(load_fixture("consul_health_llm-expert_100.json")["body"])
    assert {e.base_url.split("://")[0] for e in experts} == {"http"}


async def _answer(client: ExpertClient, expert: Expert) -> str:
    messages = [{"role": "user", "content": "hi"}]
    try:
        return "".join(
            [e.text async for e in client.stream(expert, messages) if isinstance(e, TextDelta)]
        )
    finally:
        await client.close()


async def test_an_https_expert_is_verified_against_the_cluster_ca(tmp_path):
    certs = make_ca(tmp_path)
    tls = DiscoveryConfig(ca_file=str(certs.ca)).service_tls("an expert")
    with (
        replay_server([sse("Hello", " there.")]) as replay,
        tls_front(replay.url, certs) as https_url,
    ):
        expert = Expert("general", "general", "", f"{https_url}/v1")
        assert await _answer(ExpertClient(tls=tls), expert) == "Hello there."
        with pytest.raises(ExpertError) as refused:
            await _answer(ExpertClient(), expert)  # the system's CAs only
    assert refused.value.kind == "connect"
    assert "TLS certificate of an expert" in str(refused.value)
    assert "not trusted" in str(refused.value)
    assert len(replay.requests) == 1  # the refused handshake sent nothing
