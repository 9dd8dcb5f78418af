"""A small LAN in network namespaces for network-boot tests.

Two namespaces: ``server`` (the PXE server's dnsmasq and web server, and a
second dnsmasq playing the home router: full DHCP with a DNS option) and
``lan`` (a bridge with one tap device per VM; the VMs run there). A veth
pair joins them. Nothing touches the host's own network, and deleting the
namespaces removes every link. :meth:`Lan.add_host_link` is the exception a
test asks for: a second veth pair from the host namespace to the bridge, the
host end with ``HOST_ADDRESS`` (a service on the host, such as an apt proxy,
that the VMs reach and that itself reaches out); the VMs' default route stays
the server namespace, which has no way out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SERVER_ADDRESS = "10.77.0.1"
SUBNET = "10.77.0.0"
# The server side's link, inside the server namespace (the name is free there).
SERVER_LINK = "pxe0"
# The host namespace's address on the test network (Lan.add_host_link).
HOST_ADDRESS = "10.77.0.2"


def unavailable() -> str | None:
    """None when namespaces, a bridge and tap devices can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces and tap devices need root"
    for tool in ("ip", "dnsmasq", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/apt-packages.txt)"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing: the kernel gives no tap devices here"
    name = f"twp{uuid.uuid4().hex[:6]}"
    probe = subprocess.run(
        ["ip", "netns", "add", name], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"the kernel refuses network namespaces: {probe.stderr.strip()}"
    try:
        tap = subprocess.run(
            ["ip", "-n", name, "tuntap", "add", "tap0", "mode", "tap"],
            capture_output=True,
            text=True,
            check=False,
        )
        if tap.returncode != 0:
            return f"the kernel refuses tap devices: {tap.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Lan:
    """The two namespaces, and the processes started in them (stopped on exit)."""

    server: str
    lan: str
    bridge: str
    taps: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def add_tap(self) -> str:
        """A new tap device on the bridge, for one VM."""
        tap = f"{self.bridge}t{len(self.taps)}"
        _ip("-n", self.lan, "tuntap", "add", tap, "mode", "tap")
        _ip("-n", self.lan, "link", "set", tap, "master", self.bridge)
        _ip("-n", self.lan, "link", "set", tap, "up")
        self.taps.append(tap)
        return tap

    def add_host_link(self) -> str:
        """A veth from the host namespace to the bridge; the host end has ``HOST_ADDRESS``/24.

        Gone with the namespaces: deleting the lan namespace deletes its end,
        and a veth pair goes with either end.
        """
        host_link, lan_end = f"{self.bridge}h", f"{self.bridge}v"
        _ip("link", "add", host_link, "type", "veth", "peer", "name", lan_end, "netns", self.lan)
        _ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", host_link)
        _ip("link", "set", host_link, "up")
        _ip("-n", self.lan, "link", "set", lan_end, "master", self.bridge)
        _ip("-n", self.lan, "link", "set", lan_end, "up")
        return host_link

    def start(self, namespace: str, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Run ``argv`` in ``namespace``, its stdout and stderr in ``log``."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", namespace, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc


def router_argv(workdir: Path, addresses: Mapping[str, str]) -> list[str]:
    """The home router: full DHCP with a gateway and a DNS server, ``addresses`` by MAC.

    Its gateway and DNS server are the server side, which routes nowhere and
    answers no DNS (``--port=0``): the VMs reach nothing outside the LAN.
    """
    argv = ["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--conf-file=/dev/null"]
    argv += ["--port=0", f"--interface={SERVER_LINK}", "--bind-interfaces", "--log-dhcp"]
    argv += [
        f"--pid-file={workdir / 'router.pid'}",
        f"--dhcp-leasefile={workdir / 'router.leases'}",
    ]
    argv += ["--dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h"]
    argv += [f"--dhcp-option=option:router,{SERVER_ADDRESS}"]
    argv += [f"--dhcp-option=option:dns-server,{SERVER_ADDRESS}"]
    argv += [f"--dhcp-host={mac},{address}" for mac, address in addresses.items()]
    return argv


@contextmanager
def lan() -> Iterator[Lan]:
    """The namespaces; the server side has ``SERVER_ADDRESS``/24 on ``SERVER_LINK``."""
    tag = f"twp{uuid.uuid4().hex[:5]}"
    names = (f"{tag}-server", f"{tag}-lan")
    made: list[str] = []
    result = Lan(server=names[0], lan=names[1], bridge=f"{tag}b")
    try:
        for name in names:
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", result.lan, "link", "add", result.bridge, "type", "bridge")
        _ip("-n", result.lan, "link", "set", result.bridge, "up")
        veth_server, veth_lan = SERVER_LINK, f"{tag}l"
        _ip("-n", result.server, "link", "add", veth_server, "type", "veth",
            "peer", "name", veth_lan, "netns", result.lan)  # fmt: skip
        _ip("-n", result.server, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", veth_server)
        _ip("-n", result.server, "link", "set", veth_server, "up")
        _ip("-n", result.lan, "link", "set", veth_lan, "master", result.bridge)
        _ip("-n", result.lan, "link", "set", veth_lan, "up")
        yield result
    finally:
        for proc in result.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in result.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
