"""A stateful Consul KV endpoint on 127.0.0.1, hand-written from Consul's KV API docs.

No Consul binary runs here. This serves what the publisher and TwinService's
prompt watch use of ``/v1/kv/<key>`` (developer.hashicorp.com/consul/api-docs/kv):

- ``GET``: ``[{"Key", "Value" (base64), "Flags", "CreateIndex", "ModifyIndex",
  "LockIndex"}]`` with ``X-Consul-Index``, or 404 (still with the header)
  when the key is absent; ``?index=N&wait=Ts`` blocks until the key's index
  passes N or the wait ends (blocking queries);
- ``PUT`` with the raw value as body: ``true``; with ``?cas=N`` only when N
  is the key's ``ModifyIndex`` (0: only if absent), else ``false``.

Every write raises the store's index, as Consul's Raft index does.
"""

from __future__ import annotations

import base64
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class KVStore:
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    index: int = 10
    changed: threading.Condition = field(default_factory=threading.Condition)
    puts: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""

    def value(self, key: str) -> str | None:
        entry = self.entries.get(key)
        return None if entry is None else base64.b64decode(entry["Value"]).decode()

    def write(self, key: str, value: str, cas: int | None = None) -> bool:
        with self.changed:
            entry = self.entries.get(key)
            if cas is not None and cas != (entry["ModifyIndex"] if entry else 0):
                return False
            self.index += 1
            self.entries[key] = {
                "Key": key,
                "Value": base64.b64encode(value.encode()).decode(),
                "Flags": 0,
                "LockIndex": 0,
                "CreateIndex": entry["CreateIndex"] if entry else self.index,
                "ModifyIndex": self.index,
            }
            self.changed.notify_all()
            return True


def _handler(store: KVStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, index: int) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Consul-Index", str(index))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _key(self) -> tuple[str, dict[str, str]]:
            url = urllib.parse.urlsplit(self.path)
            return url.path.removeprefix("/v1/kv/"), dict(urllib.parse.parse_qsl(url.query))

        def do_GET(self) -> None:
            import json

            key, params = self._key()
            wait = float(params.get("wait", "0s").rstrip("s") or 0)
            deadline = time.monotonic() + min(wait, 10.0)
            with store.changed:
                while "index" in params:
                    entry = store.entries.get(key)
                    current = entry["ModifyIndex"] if entry else store.index
                    left = deadline - time.monotonic()
                    if current > int(params["index"]) or left <= 0:
                        break
                    store.changed.wait(left)
                entry = store.entries.get(key)
                index = entry["ModifyIndex"] if entry else store.index
            if entry is None:
                self._send(404, b"", index)
            else:
                self._send(200, json.dumps([entry]).encode(), index)

        def do_PUT(self) -> None:
            key, params = self._key()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            store.puts.append((key, params.get("cas")))
            cas = int(params["cas"]) if "cas" in params else None
            ok = store.write(key, body, cas)
            self._send(200, b"true" if ok else b"false", store.index)

    return Handler


@contextmanager
def consul_kv() -> Iterator[KVStore]:
    """The KV fixture on a free local port; ``store.url`` is its address."""
    store = KVStore()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(store))
    server.daemon_threads = True
    store.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield store
    finally:
        with store.changed:
            store.changed.notify_all()
        server.shutdown()
        server.server_close()
