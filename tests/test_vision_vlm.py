"""apps/vision's vision-language model describer.

No small VLM can be had on this machine, so the request is checked against a
loopback OpenAI-compatible server this test runs: it validates the shape
llama-server's multimodal chat takes (a user message whose content holds a
text part and an ``image_url`` part with a ``data:image/jpeg;base64,`` URI
that decodes to the uploaded photo) and answers like llama-server. The
fallback is shown with a server that fails and one that hangs. Found through
Consul, the same server is named by Consul's health answer for the experts
tagged ``vision`` (tests/api_fixtures/consul/, served by the fixture server
in place of Consul, with the loopback server's port). With
TWIN_VLM_URL set (an OpenAI-compatible base URL ending in /v1, e.g.
llama-server --mmproj), the live test asks a real model.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from helpers.fixture_api import FIXTURES_ROOT, FixtureAPI
from helpers.tls import make_ca, tls_front
from helpers.vision import photo, running_vision
from PIL import Image

ANSWER = "An astronaut in a white suit smiles in front of a flag."


@contextmanager
def loopback_vlm(mode: str) -> Iterator[tuple[str, list[dict]]]:
    """An OpenAI-compatible chat endpoint; ``mode``: answer, fail or hang."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(
                {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
            )
            if mode == "hang":
                time.sleep(5)
            status, reply = (
                (500, {"error": {"message": "model crashed"}})
                if mode == "fail"
                else (
                    200,
                    {
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": ANSWER}}
                        ]
                    },
                )
            )
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def _upload(url: str, question: str | None = None) -> httpx.Response:
    params = {"ocr": "false", **({"question": question} if question else {})}
    return httpx.post(
        f"{url}/describe",
        content=photo("astronaut"),
        headers={"Content-Type": "image/jpeg"},
        params=params,
        timeout=60,
    )


def _check_chat_request(response: httpx.Response, seen: list[dict]) -> None:
    """The answer is the VLM's and its one request had llama-server's multimodal shape."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["describer"] == "vlm"
    assert body["description"] == ANSWER
    assert body["fallback"] is None
    assert body["findings"]["person_count"] == 1  # the default findings come along

    assert len(seen) == 1
    request = seen[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer k-123"
    chat = request["body"]
    assert chat["model"] == "smolvlm"
    assert chat["messages"][0]["role"] == "system"
    user = chat["messages"][-1]
    assert user["role"] == "user"
    parts = {part["type"]: part for part in user["content"]}
    assert set(parts) == {"text", "image_url"}
    assert parts["text"]["text"] == "What is she wearing?"
    uri = parts["image_url"]["image_url"]["url"]
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :]))) as sent:
        assert sent.format == "JPEG"
        assert sent.size == (512, 512)


def test_vlm_request_carries_the_image_as_a_data_uri(tmp_path):
    with (
        loopback_vlm("answer") as (vlm_url, seen),
        running_vision(
            tmp_path,
            {"VLM__URL": vlm_url, "VLM__MODEL": "smolvlm", "VLM__API_KEY": '"k-123"'},
        ) as vision,
    ):
        response = _upload(vision.url, "What is she wearing?")
    _check_chat_request(response, seen)


def _consul_naming(root: Path, vlm_url: str | None) -> str:
    """The Consul fixture of the experts tagged vision, its instance moved onto ``vlm_url``.

    ``vlm_url`` None: Consul answers that no expert carries the tag (an empty list).
    """
    name = "health_service_llm-expert_vision"
    raw = yaml.safe_load((FIXTURES_ROOT / "consul" / f"{name}.yaml").read_text())
    port = int(vlm_url.rsplit(":", 1)[1].split("/")[0]) if vlm_url else 0
    for response in raw["responses"]:
        if vlm_url is None:
            response["json"] = []
        for entry in response["json"]:
            entry["Service"]["Port"] = port
            for tagged in entry["Service"]["TaggedAddresses"].values():
                tagged["Port"] = port
    (root / "consul").mkdir(parents=True)
    (root / "consul" / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    return name


def test_vlm_found_through_consul_as_the_expert_tagged_vision(tmp_path):
    with loopback_vlm("answer") as (vlm_url, seen):
        fixture = _consul_naming(tmp_path / "fixtures", vlm_url)
        with (
            FixtureAPI("consul", [fixture], root=tmp_path / "fixtures") as consul,
            running_vision(
                tmp_path,
                {
                    "VLM__CONSUL_ADDR": consul.url,
                    "VLM__CONSUL_TOKEN": '"c-456"',
                    "VLM__MODEL": "smolvlm",
                    "VLM__API_KEY": '"k-123"',
                },
            ) as vision,
        ):
            deadline = time.monotonic() + 30
            while httpx.get(f"{vision.url}/health", timeout=5).json()["vlm"]["url"] != vlm_url:
                assert time.monotonic() < deadline, vision.log()
                time.sleep(0.2)
            response = _upload(vision.url, "What is she wearing?")
    _check_chat_request(response, seen)
    asked = consul.requests_to("GET", "/v1/health/service/llm-expert")
    assert asked, consul.unmatched
    assert not consul.unmatched
    for request in asked:
        assert request.query["tag"] == ["vision"]
        assert request.query["passing"] in (["1"], ["true"])
        assert request.header("X-Consul-Token") == "c-456"


def _vlm_url_in_health(vision_url: str, want: str | None, timeout: float = 30) -> dict:
    """``/health`` once its ``vlm.url`` is ``want`` (or its error is set, for None)."""
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{vision_url}/health", timeout=5).json()
        if (health["vlm"]["url"] == want) if want else health["vlm"]["error"]:
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.2)


def test_consul_over_https_is_trusted_through_the_configured_ca(tmp_path):
    (tmp_path / "ca").mkdir()
    certs = make_ca(tmp_path / "ca")
    with loopback_vlm("answer") as (vlm_url, _):
        fixture = _consul_naming(tmp_path / "fixtures", vlm_url)
        with (
            FixtureAPI("consul", [fixture], root=tmp_path / "fixtures") as consul,
            tls_front(consul.url, certs) as https_url,
        ):
            with running_vision(
                tmp_path,
                {"VLM__CONSUL_ADDR": https_url, "VLM__CONSUL_CA_FILE": f'"{certs.ca}"'},
            ) as vision:
                _vlm_url_in_health(vision.url, vlm_url)
            # Without the CA, the system's CAs refuse Consul's certificate.
            with running_vision(tmp_path, {"VLM__CONSUL_ADDR": https_url}) as vision:
                health = _vlm_url_in_health(vision.url, None)
    assert health["vlm"]["url"] is None
    assert "CERTIFICATE_VERIFY_FAILED" in health["vlm"]["error"]


def test_no_vlm_while_consul_names_no_expert_that_can_see(tmp_path):
    fixture = _consul_naming(tmp_path / "fixtures", None)
    with (
        loopback_vlm("answer") as (_, seen),
        FixtureAPI("consul", [fixture], root=tmp_path / "fixtures") as consul,
        running_vision(tmp_path, {"VLM__CONSUL_ADDR": consul.url}) as vision,
    ):
        deadline = time.monotonic() + 30
        while not consul.requests:
            assert time.monotonic() < deadline, vision.log()
            time.sleep(0.2)
        response = _upload(vision.url)
        health = httpx.get(f"{vision.url}/health", timeout=5).json()
    assert health["vlm"] == {"url": None, "error": None}
    assert health["status"] == "ok"
    assert response.json()["describer"] == "default"
    assert response.json()["fallback"] is None
    assert seen == []


def test_consul_failing_is_reported_in_health_and_the_default_describer_answers(tmp_path):
    with (
        FixtureAPI("consul", []) as consul,
        running_vision(tmp_path, {"VLM__CONSUL_ADDR": consul.url}) as vision,
    ):
        deadline = time.monotonic() + 30
        while not consul.unmatched:
            assert time.monotonic() < deadline, vision.log()
            time.sleep(0.2)
        health = httpx.get(f"{vision.url}/health", timeout=5).json()
        response = _upload(vision.url)
        address = consul.url
    assert health["status"] == "degraded"
    assert health["vlm"]["url"] is None
    assert f"Consul at {address}" in health["vlm"]["error"]
    assert response.json()["describer"] == "default"


@pytest.mark.live
def test_live_vlm_describes_the_astronaut(tmp_path):
    url = os.environ.get("TWIN_VLM_URL")
    if not url:
        pytest.skip("TWIN_VLM_URL is not set (an OpenAI-compatible /v1 URL of a vision model)")
    with running_vision(tmp_path, {"VLM__URL": url, "VLM__TIMEOUT_S": "120"}) as vision:
        response = _upload(vision.url, "Who or what is in this picture?")
    body = response.json()
    assert body["describer"] == "vlm", body.get("fallback")
    assert body["description"]
