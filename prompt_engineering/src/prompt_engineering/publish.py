"""Where an evolved prompt goes: a Consul KV key, or a local file; both with check-and-set.

A target is read once (:meth:`current`) before the held-out comparison; the
write (:meth:`publish`) succeeds only if nothing changed since, so two runs
cannot overwrite each other: the later one is told the key moved and
publishes nothing.

Consul KV keeps no metadata beyond ``Flags``, so the version, scores and
date go in a sibling key, ``<key>.meta`` (JSON), written after the prompt.
TwinService watches only ``<key>`` (``twin.prompt.consul_key``).
A file target keeps its metadata in ``<file>.meta.json``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twin_common.consul_client import consul_client


@dataclass(frozen=True)
class Current:
    """The target's prompt as read, and the token a check-and-set write must match."""

    text: str | None
    token: str
    version: int


class Target(Protocol):
    """A place prompts are published to."""

    name: str

    def current(self) -> Current: ...

    def publish(self, text: str, meta: dict[str, Any], read: Current) -> bool:
        """Write ``text`` (and ``meta``) if the target is still as ``read``; False if it moved."""
        ...


def _version(meta: Any) -> int:
    return int(meta.get("version", 0)) if isinstance(meta, dict) else 0


class ConsulTarget:
    """A Consul KV key (``twin.prompt.consul_key``), written with ``?cas=<ModifyIndex>``.

    Args:
        key: e.g. ``twin/prompts/system``.
        addr: Consul's HTTP(S) address (``CONSUL_HTTP_ADDR``).
        token: ACL token allowed to write ``key`` and ``key.meta`` (``CONSUL_HTTP_TOKEN``).
        ca_file: CA of Consul's HTTPS certificate (``CONSUL_CACERT``).
        cert: Client certificate and key, when Consul demands one (mTLS).
    """

    def __init__(
        self,
        key: str,
        addr: str,
        token: str = "",
        ca_file: str = "",
        cert: tuple[str, str] | None = None,
    ) -> None:
        self.key = key.strip("/")
        self.meta_key = f"{self.key}.meta"
        self.name = f"consul:{self.key} at {addr}"
        self._kv = consul_client(addr, token, verify=ca_file or True, cert=cert).kv

    def current(self) -> Current:
        _, entry = self._kv.get(self.key)
        _, meta_entry = self._kv.get(self.meta_key)
        meta = json.loads(meta_entry["Value"]) if meta_entry and meta_entry["Value"] else {}
        if entry is None:
            return Current(None, "0", _version(meta))
        text = (entry["Value"] or b"").decode("utf-8").strip() or None
        return Current(text, str(entry["ModifyIndex"]), _version(meta))

    def publish(self, text: str, meta: dict[str, Any], read: Current) -> bool:
        if not self._kv.put(self.key, text, cas=int(read.token)):
            return False
        self._kv.put(self.meta_key, json.dumps(meta, indent=2))
        return True


class FileTarget:
    """A local file (the app's ``twin.prompt.file``), replaced atomically under a lock.

    The check-and-set token is the SHA-256 of the file as read ("absent" when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta_path = path.with_name(path.name + ".meta.json")
        self.name = f"file:{path}"

    def _token(self) -> tuple[str | None, str]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None, "absent"
        return data.decode("utf-8").strip() or None, hashlib.sha256(data).hexdigest()

    def _meta(self) -> dict[str, Any]:
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}

    def current(self) -> Current:
        text, token = self._token()
        return Current(text, token, _version(self._meta()))

    def publish(self, text: str, meta: dict[str, Any], read: Current) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with lock_path.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._token()[1] != read.token:
                return False
            for path, body in (
                (self.path, text + "\n"),
                (self.meta_path, json.dumps(meta, indent=2)),
            ):
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(body, encoding="utf-8")
                os.replace(tmp, path)
        return True
