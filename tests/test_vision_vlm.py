"""apps/vision's vision-language model describer.

No small VLM can be had on this machine, so the request is checked against a
loopback OpenAI-compatible server this test runs: it validates the shape
llama-server's multimodal chat takes (a user message whose content holds a
text part and an ``image_url`` part with a ``data:image/jpeg;base64,`` URI
that decodes to the uploaded photo) and answers like llama-server. The
fallback is shown with a server that fails and one that hangs. With
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

import httpx
import pytest
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


def test_vlm_request_carries_the_image_as_a_data_uri(tmp_path):
    with (
        loopback_vlm("answer") as (vlm_url, seen),
        running_vision(
            tmp_path,
            {"VLM__URL": vlm_url, "VLM__MODEL": "smolvlm", "VLM__API_KEY": '"k-123"'},
        ) as vision,
    ):
        response = _upload(vision.url, "What is she wearing?")
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


@pytest.mark.parametrize(("mode", "reason"), [("fail", "500"), ("hang", "timed out")])
def test_vlm_failure_falls_back_to_the_default_describer(tmp_path, mode, reason):
    with (
        loopback_vlm(mode) as (vlm_url, seen),
        running_vision(tmp_path, {"VLM__URL": vlm_url, "VLM__TIMEOUT_S": "1"}) as vision,
    ):
        response = _upload(vision.url)
        metrics = httpx.get(f"{vision.url}/metrics", timeout=5).text
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["describer"] == "default"
    assert body["description"].startswith("One person, facing the camera.")
    assert reason in body["fallback"]
    assert "the default describer answered" in body["fallback"]
    assert len(seen) == 1
    assert 'vision_errors_total{kind="vlm"} 1.0' in metrics


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
