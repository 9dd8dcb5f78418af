"""Serve hand-written Consul/Nomad HTTP API responses on 127.0.0.1.

No Consul or Nomad binary runs on the test machine, so the roles' API tasks
(ACL bootstrap, tokens, policies, namespaces) are exercised against this small
server instead. Its answers are fixtures under
``tests/api_fixtures/<product>/<name>.yaml``, hand-written from HashiCorp's API
documentation and source (each names its source); none was recorded from a
running agent. ``tests/test_api_fixtures.py`` keeps them consistent with what
Consul and Nomad return (indexes, ``Hash`` values, the names the roles use).
The server remembers every request it received, so a test can assert what
the role sent (method, path, token header, JSON body) and how often.

A fixture file describes one endpoint::

    # Source: where the shape comes from (HashiCorp API docs page, source file).
    request:
      method: PUT
      path: /v1/acl/bootstrap
    responses:            # answered in order; the last one repeats forever
      - status: 200
        headers: {Content-Type: application/json, X-Consul-Index: "13"}
        json: {...}       # or `text: "..."` for plain-text bodies
      - status: 403
        text: "Permission denied: ACL bootstrap no longer allowed (reset index: 13)"

The sequence models the server's state: the first bootstrap succeeds, every
later one is refused, as a real cluster answers. A request that has no
fixture gets a 599 answer naming it, and shows up in ``unmatched``.

Usage::

    with FixtureAPI("consul", ["status_leader", "acl_bootstrap"]) as api:
        run_playbook(consul_api_url=api.url)
        assert len(api.requests_to("PUT", "/v1/acl/bootstrap")) == 1
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

FIXTURES_ROOT = Path(__file__).resolve().parent.parent / "api_fixtures"
UNMATCHED_STATUS = 599


@dataclass(frozen=True)
class FixtureResponse:
    """One answer: status, headers and a JSON or text body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: Path) -> FixtureResponse:
        headers = {str(k): str(v) for k, v in (raw.get("headers") or {}).items()}
        if "json" in raw:
            body = json.dumps(raw["json"], indent=2).encode()
            headers.setdefault("Content-Type", "application/json")
        elif "text" in raw:
            body = str(raw["text"]).encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            body = b""
        if "status" not in raw:
            raise ValueError(f"{origin}: every response needs a status")
        return cls(status=int(raw["status"]), headers=headers, body=body)


@dataclass
class Route:
    """One endpoint and its responses, consumed in order (the last one repeats)."""

    method: str
    path: str
    responses: list[FixtureResponse]
    origin: Path
    served: int = 0

    def next_response(self) -> FixtureResponse:
        response = self.responses[min(self.served, len(self.responses) - 1)]
        self.served += 1
        return response


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        lowered = {k.lower(): v for k, v in self.headers.items()}
        return lowered.get(name.lower())


def load_route(path: Path) -> Route:
    """Read one fixture file."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or "request" not in raw or not raw.get("responses"):
        raise ValueError(f"{path}: needs a `request` and a non-empty `responses` list")
    request = raw["request"]
    return Route(
        method=str(request["method"]).upper(),
        path=str(request["path"]),
        responses=[FixtureResponse.from_dict(r, path) for r in raw["responses"]],
        origin=path,
    )


@dataclass
class FixtureAPI:
    """A local HTTP server answering one product's API from its fixtures."""

    product: str
    fixtures: Iterable[str]
    root: Path = FIXTURES_ROOT
    requests: list[ReceivedRequest] = field(default_factory=list)
    unmatched: list[ReceivedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        for name in self.fixtures:
            route = load_route(self.root / self.product / f"{name}.yaml")
            key = (route.method, route.path)
            if key in self.routes:
                raise ValueError(f"{route.origin}: {key} is already answered by another file")
            self.routes[key] = route
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FixtureAPI is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def requests_to(self, method: str, path: str) -> list[ReceivedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def answer(self, request: ReceivedRequest) -> FixtureResponse:
        with self._lock:
            self.requests.append(request)
            route = self.routes.get((request.method, request.path))
            if route is None:
                self.unmatched.append(request)
                text = f"fixture_api: no fixture for {request.method} {request.path}"
                headers = {"Content-Type": "text/plain"}
                return FixtureResponse(UNMATCHED_STATUS, headers, text.encode())
            return route.next_response()

    def start(self) -> FixtureAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = ReceivedRequest(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers=dict(self.headers.items()),
                    body=body,
                )
                response = api.answer(request)
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FixtureAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serving(product: str, fixtures: Iterable[str]) -> Iterator[FixtureAPI]:
    """Context manager form: ``with serving("nomad", [...]) as api``."""
    api = FixtureAPI(product, list(fixtures)).start()
    try:
        yield api
    finally:
        api.stop()


def main() -> None:
    """Serve fixtures from the command line until interrupted (for manual runs)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("product", choices=sorted(p.name for p in FIXTURES_ROOT.iterdir()))
    parser.add_argument(
        "fixtures", nargs="+", help="file names under tests/api_fixtures/<product>/"
    )
    args = parser.parse_args()
    with serving(args.product, args.fixtures) as api:
        print(api.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
