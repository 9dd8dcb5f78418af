"""Network namespaces joined by veth pairs: a few "machines" on one host for ring tests.

Nothing touches the host's own network: every interface lives inside the
namespaces this helper creates, and deleting a namespace removes its links.

Usage::

    with Link.pair("10.77.0.1", "10.77.0.2") as (ns0, ns1):
        LocalTask(spec0, netns=ns0.name, ip=ns0.address)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Namespace:
    """One namespace and its address on the shared link."""

    name: str
    address: str


class Link:
    """Two namespaces joined by one veth pair on a /24."""

    @staticmethod
    @contextmanager
    def pair(address0: str, address1: str) -> Iterator[tuple[Namespace, Namespace]]:
        tag = uuid.uuid4().hex[:6]
        names = (f"twin-{tag}-0", f"twin-{tag}-1")
        made: list[str] = []
        try:
            for name in names:
                _ip("netns", "add", name)
                made.append(name)
                _ip("-n", name, "link", "set", "lo", "up")
            veth0, veth1 = f"tw{tag}a", f"tw{tag}b"
            _ip("-n", names[0], "link", "add", veth0, "type", "veth", "peer", "name", veth1,
                "netns", names[1])  # fmt: skip
            for name, veth, address in ((names[0], veth0, address0), (names[1], veth1, address1)):
                _ip("-n", name, "addr", "add", f"{address}/24", "dev", veth)
                _ip("-n", name, "link", "set", veth, "up")
            yield Namespace(names[0], address0), Namespace(names[1], address1)
        finally:
            for name in made:
                subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
