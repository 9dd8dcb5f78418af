"""twin_common.consul_client: the Consul client of the app, the vision service and prompts.

py-consul 1.8 lets ``CONSUL_HTTP_TOKEN`` override the token it is given; the
configured token must win. Checked against a local HTTP server that records
the ``X-Consul-Token`` header of each request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from twin_common.consul_client import consul_client


@pytest.fixture
def consul_stand_in() -> Iterator[tuple[str, list[str | None]]]:
    """A server that answers every KV read with 404 and records the token sent."""
    tokens: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            tokens.append(self.headers.get("X-Consul-Token"))
            self.send_response(404)
            self.send_header("X-Consul-Index", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tokens
    server.shutdown()
    server.server_close()


def test_the_configured_token_wins_over_consul_http_token(consul_stand_in, monkeypatch):
    url, tokens = consul_stand_in
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-the-environment")
    consul_client(url, "configured").kv.get("twin/prompt")
    assert tokens == ["configured"]


def test_no_configured_token_leaves_consul_http_token(consul_stand_in, monkeypatch):
    url, tokens = consul_stand_in
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-the-environment")
    consul_client(url, "").kv.get("twin/prompt")
    assert tokens == ["from-the-environment"]


def test_the_port_left_out_is_the_schemes():
    assert consul_client("http://consul.example").http.base_uri == "http://consul.example:8500"
    assert consul_client("https://consul.example").http.base_uri == "https://consul.example:443"


def test_a_scheme_other_than_http_or_https_is_refused():
    with pytest.raises(ValueError, match="must be http or https"):
        consul_client("ftp://consul.example")
