"""``make test-metal``: a full unattended Debian install over the network, then SSH.

The pxe_server role is converged as in test_network_boot.py and its rendered
dnsmasq and web server run in the LAN's server namespace, with the home
router's DHCP beside them. One BIOS VM (qemu TCG, a sparse qcow2 disk, a MAC
from the test inventory) boots from the network and installs Debian with the
preseed the role wrote, unattended, to the end. The VM reaches no outside
network: its gateway and DNS server are the server namespace, which routes
nowhere. Packages come through an apt-cacher-ng in the host namespace,
listening on the test network (a veth from the host to the LAN bridge), that
fetches from the mirror the role took from this machine's own apt sources
(the preseed's ``mirror/http/proxy`` is the role's ``pxe_server_mirror_proxy``).

At the end of the install the preseed's report flips the machine's boot
entry to local boot, and the installer reboots: the VM network-boots again,
gets the local-disk entry (the role's no-reinstall-loop behaviour) and
starts Debian from its disk. The test then waits for SSH at the VM's address
and checks, with the key the role generated on the controller: the
hostname is the inventory's, ``python3 --version`` works, and the admin user
runs ``sudo -n true``.

Software emulation on a shared two-core machine is slow (the installer
fetched its preseed 8 minutes after qemu started, at a load of 11-16):
``METAL_INSTALL_TIMEOUT`` (seconds, default 5400) and ``METAL_SSH_TIMEOUT``
(default 1200) bound the waits. ``METAL_MIRROR`` (``http://<host>/debian``)
names another mirror for the proxy, e.g. a local full mirror.

Before the VM starts, the test asks the mirror (through the proxy) for the
installer components d-i will download (udebs, not in the netboot initrd)
and fails at once, naming them, if the mirror does not serve them all; and
while it waits, a d-i dialog on the serial console ("[!]" or "[!!]": a
question nobody answers, or an error) fails it with the dialog's text.

A progress line is printed every minute; the VM's serial console is
``<workdir>/metal1.serial`` (the workdir is printed first; ``PXE_KEEP=1``
keeps it afterwards). The ``metal`` marker keeps this test out of every
run that does not ask for it (conftest.py).
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pxe import lab
from pxe.rendered import Rendered, converge


def _missing() -> str | None:
    for tool in ("apt-cacher-ng", "qemu-img", "ssh"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (scripts/apt-packages.txt)"
    return lab.unavailable()


pytestmark = [
    pytest.mark.metal,
    pytest.mark.skipif(bool(_missing()), reason=str(_missing())),
]

INSTALL_TIMEOUT = float(os.environ.get("METAL_INSTALL_TIMEOUT", "5400"))
SSH_TIMEOUT = float(os.environ.get("METAL_SSH_TIMEOUT", "1200"))
PROGRESS_EVERY = 60.0
# The Debian mirror the apt proxy fetches from; empty: this machine's own apt source.
MIRROR = os.environ.get("METAL_MIRROR", "")

MACHINE = "metal1"
MAC = "52:54:00:7e:00:11"
DASHES = MAC.replace(":", "-")
ADDRESS = "10.77.0.111"
DISK = "/dev/vda"  # the VM's virtio disk
DISK_SIZE = "6G"
PROXY_PORT = 3142
PROXY_URL = f"http://{lab.HOST_ADDRESS}:{PROXY_PORT}"
ADMIN = "twin"  # pxe_server_admin_user's default
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|[\x00-\x08\x0e-\x1f]")
# The status line d-i's screen session draws on the serial console, over and over.
SCREEN_STATUS = re.compile(r"\[ \( 1\*installer \).*?\]\[ [^]]*\]")
# Box drawing in the VT100 line-drawing character set (lqqk, x, mqqj).
BOX = re.compile(r"\b[lmtukjqx]*q{3,}[lmtukjqx]*\b|(?<= )x(?= )")


def qemu_argv(tap: str, disk: Path, serial: Path) -> list[str]:
    """A BIOS VM that boots from the network, then (when that hands back) its disk.

    No ``-no-reboot``: the installer's reboot at the end restarts the VM, which
    network-boots again and gets the entry the install report left.
    """
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "1024", "-smp", "2"]
    argv += ["-display", "none", "-monitor", "none", "-serial", f"file:{serial}"]
    argv += ["-boot", "order=nc"]
    argv += ["-drive", f"file={disk},format=qcow2,if=virtio,cache=unsafe"]
    argv += ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
    argv += ["-device", f"virtio-net-pci,netdev=n0,mac={MAC}"]
    return argv


def preseed_mirror(preseed: str) -> str:
    """``http://<host><directory>`` of the mirror a rendered preseed names."""
    host = re.search(r"^d-i mirror/http/hostname string (\S+)$", preseed, re.MULTILINE)
    directory = re.search(r"^d-i mirror/http/directory string (\S+)$", preseed, re.MULTILINE)
    assert host, "the preseed names no http mirror host"
    assert directory, "the preseed names no http mirror directory"
    return f"http://{host.group(1)}{directory.group(1)}"


def preseed_suite(preseed: str) -> str:
    suite = re.search(r"^d-i mirror/suite string (\S+)$", preseed, re.MULTILINE)
    assert suite, "the preseed names no suite"
    return suite.group(1)


def proxy_argv(workdir: Path, mirror: str) -> list[str]:
    """apt-cacher-ng on the host's test-network address, fetching Debian from ``mirror``."""
    conf = workdir / "acng"
    for sub in ("cache", "log"):
        (conf / sub).mkdir(parents=True, exist_ok=True)
    (conf / "backends_debian").write_text(mirror.rstrip("/") + "/\n")
    (conf / "acng.conf").write_text(
        f"CacheDir: {conf / 'cache'}\n"
        f"LogDir: {conf / 'log'}\n"
        "SupportDir: /usr/lib/apt-cacher-ng\n"
        f"BindAddress: {lab.HOST_ADDRESS}\n"
        f"Port: {PROXY_PORT}\n"
        f"PidFile: {conf / 'pid'}\n"
        f"SocketPath: {conf / 'socket'}\n"
        "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian\n"
        "ExThreshold: 4\n"
    )
    return ["apt-cacher-ng", "-c", str(conf), "ForeGround=1"]


# Installer components (udebs) that d-i downloads from the mirror for this
# preseed: they are not in the netboot initrd.
COMPONENTS = (
    "apt-mirror-setup",
    "apt-setup-udeb",
    "base-installer",
    "bootstrap-base",
    "clock-setup",
    "finish-install",
    "grub-installer",
    "partman-auto",
    "partman-ext3",
    "pkgsel",
    "tzsetup-udeb",
    "user-setup-udeb",
)


def unserved_components(mirror: str, suite: str) -> list[str]:
    """The COMPONENTS the mirror, asked through the apt proxy, does not serve.

    A mirror that serves the installer's index but not all of its udebs
    stops d-i at "Download installer components" twenty minutes in; this
    asks first (the files are the install's own, so the proxy keeps them).
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": PROXY_URL}))
    index = f"{mirror.rstrip('/')}/dists/{suite}/main/debian-installer/binary-amd64/Packages.xz"
    with opener.open(index, timeout=120) as response:
        stanzas = lzma.decompress(response.read()).decode().split("\n\n")
    filenames = {}
    for stanza in stanzas:
        fields = dict(re.findall(r"^(Package|Filename): (\S+)$", stanza, re.MULTILINE))
        if fields.get("Package") in COMPONENTS:
            filenames[fields["Package"]] = fields.get("Filename", "")
    unserved = []
    for package in COMPONENTS:
        url = f"{mirror.rstrip('/')}/{filenames.get(package, 'not-in-the-index')}"
        try:
            with opener.open(url, timeout=300) as response:
                response.read()
        except urllib.error.HTTPError as error:
            unserved.append(f"{package} ({url}: HTTP {error.code})")
    return unserved


def installer_stopped(serial: str) -> str | None:
    """The dialog d-i stopped at, if it shows one ("[!]" or "[!!]" title): nothing answers it."""
    text = " ".join(ANSI.sub(" ", serial).split())
    match = re.search(r"\[!!?\] .*", text)
    if match is None:
        return None
    return " ".join(BOX.sub(" ", SCREEN_STATUS.sub(" ", match.group(0))).split())[:600]


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Metal:
    """What the install left: logs, the role's outputs, the times."""

    workdir: Path
    rendered: Rendered
    install_s: float = 0.0
    ssh_s: float = 0.0

    @property
    def serial(self) -> Path:
        return self.workdir / f"{MACHINE}.serial"

    @property
    def dnsmasq_log(self) -> str:
        return _read(self.workdir / "dnsmasq.log")

    @property
    def http_log(self) -> str:
        return _read(self.workdir / "http.log")

    @property
    def proxy_log(self) -> str:
        return _read(self.workdir / "acng" / "log" / "apt-cacher.log")

    @property
    def key(self) -> Path:
        """The controller's key the role generated (pxe_server_admin_ssh_key_file)."""
        return self.workdir / ".credentials" / "pxe-admin_ed25519"

    def got(self, path: str) -> bool:
        """The web server answered the VM's ``GET path`` with 200."""
        pattern = rf'^{re.escape(ADDRESS)} .*"GET {re.escape(path)} HTTP/1\.\d" 200'
        return re.search(pattern, self.http_log, re.MULTILINE) is not None

    def reported(self) -> bool:
        return self.got(f"/installed/{DASHES}")

    def entry_fetches(self) -> int:
        """How often the VM fetched its own pxelinux entry over TFTP."""
        return self.dnsmasq_log.count(f"pxelinux.cfg/01-{DASHES} to {ADDRESS}")

    def serial_tail(self, chars: int = 100) -> str:
        text = " ".join(ANSI.sub(" ", _read(self.serial)[-20000:]).split())
        return " ".join(BOX.sub(" ", SCREEN_STATUS.sub(" ", text)).split())[-chars:]

    def progress(self) -> str:
        files = len(self.proxy_log.splitlines())
        return f"{files} files through the apt proxy; console: ...{self.serial_tail()}"

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        argv += ["-o", "LogLevel=ERROR", f"{ADMIN}@{ADDRESS}", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def wait_for(
    what: str, ready: Callable[[], bool], timeout: float, metal: Metal, vm: subprocess.Popen[bytes]
) -> float:
    """Seconds until ``ready()``, a progress line every minute; fails on timeout or qemu's exit."""
    started = last = time.monotonic()
    print(f"{what}: waiting up to {timeout / 60:.0f} min", flush=True)
    while not ready():
        now = time.monotonic()
        stopped = installer_stopped(_read(metal.serial)[-20000:])
        if stopped is not None:
            pytest.fail(f"the installer stopped at a dialog before {what}: {stopped}")
        if vm.poll() is not None:
            tail = metal.serial_tail(1500)
            pytest.fail(f"qemu exited ({vm.returncode}) before {what}: ...{tail}")
        if now - started > timeout:
            pytest.fail(f"no {what} after {timeout:.0f} s: {metal.progress()}")
        if now - last >= PROGRESS_EVERY:
            last = now
            print(f"  {what}: {(now - started) / 60:.0f} min, {metal.progress()}", flush=True)
        time.sleep(5)
    took = time.monotonic() - started
    print(f"{what}: after {took / 60:.1f} min", flush=True)
    return took


def await_port(host: str, port: int, timeout: float) -> None:
    """Until something listens on ``host:port`` (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError as error:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing listens on {host}:{port} after {timeout:.0f} s: {error}")
            time.sleep(0.5)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module")
def metal() -> Iterator[Metal]:
    """Converge the role, serve the boot and the apt proxy, install the VM, reach it over SSH."""
    # A SIGTERM (a CI time limit, kill) unwinds like Ctrl-C, so the VM and the
    # namespaces are still taken down.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="twin-pxe-metal-", dir="/var/tmp"))
    workdir.chmod(0o755)  # dnsmasq reads the TFTP root as its own user
    print(f"\nworkdir {workdir} (serial console: {workdir / (MACHINE + '.serial')})", flush=True)
    try:
        result = converge(
            workdir,
            {MACHINE: {"pxe_mac": MAC, "pxe_disk": DISK}},
            address=lab.SERVER_ADDRESS,
            interface=lab.SERVER_LINK,
            extra_vars={
                "pxe_server_kernel_extra_args": ["console=ttyS0,115200n8"],
                # Empty (no METAL_MIRROR): the role takes this machine's apt source.
                "pxe_server_mirror": MIRROR,
                "pxe_server_mirror_proxy": PROXY_URL,
            },
        )
        assert result.returncode == 0, result.output
        rendered = Rendered(workdir)
        metal = Metal(workdir, rendered)
        preseed = (rendered.http / "preseed" / f"{DASHES}.cfg").read_text()
        disk = workdir / f"{MACHINE}.qcow2"
        create = ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), DISK_SIZE]
        subprocess.run(create, check=True)
        with lab.lan() as net:
            net.add_host_link()
            net.processes.append(
                subprocess.Popen(
                    proxy_argv(workdir, preseed_mirror(preseed)),
                    stdout=(workdir / "acng.out").open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            await_port(lab.HOST_ADDRESS, PROXY_PORT, 60)
            unserved = unserved_components(preseed_mirror(preseed), preseed_suite(preseed))
            if unserved:
                pytest.fail(
                    f"the mirror {preseed_mirror(preseed)} (through the apt proxy) does not serve"
                    f" these installer components, so d-i cannot finish: {'; '.join(unserved)}",
                    pytrace=False,
                )
            router = lab.router_argv(workdir, {MAC: ADDRESS})
            net.start(net.server, router, workdir / "router.log")
            net.start(net.server, rendered.exec_start("twin-pxe-dnsmasq"), workdir / "dnsmasq.log")
            net.start(net.server, rendered.exec_start("twin-pxe-http"), workdir / "http.log")
            time.sleep(1)
            argv = qemu_argv(net.add_tap(), disk, metal.serial)
            vm = net.start(net.lan, argv, workdir / "qemu.log")
            metal.install_s = wait_for(
                "the install's report", metal.reported, INSTALL_TIMEOUT, metal, vm
            )
            metal.ssh_s = wait_for(
                f"SSH at {ADDRESS}",
                lambda: metal.ssh("true").returncode == 0,
                SSH_TIMEOUT,
                metal,
                vm,
            )
            print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout}")
            yield metal
    finally:
        signal.signal(signal.SIGTERM, previous)
        if os.environ.get("PXE_KEEP") is None:
            shutil.rmtree(workdir, ignore_errors=True)


def test_install_used_the_role_preseed_and_the_apt_proxy(metal: Metal):
    assert metal.got(f"/preseed/{DASHES}.cfg"), metal.http_log
    preseed = (metal.rendered.http / "preseed" / f"{DASHES}.cfg").read_text()
    assert f"d-i mirror/http/proxy string {PROXY_URL}" in preseed
    # The installer's packages came through the proxy (the VM has no other way out).
    assert re.search(r"/pool/main/o/openssh/openssh-server_", metal.proxy_log), metal.progress()


def test_report_flipped_the_entry_so_the_reboot_started_the_disk(metal: Metal):
    entry = metal.rendered.tftp / "pxelinux.cfg" / f"01-{DASHES}"
    assert "LOCALBOOT 0" in entry.read_text()
    assert metal.entry_fetches() >= 2, metal.dnsmasq_log[-2000:]
    serial = _read(metal.serial)
    after_install = serial[serial.rfind("twin-pxe: installing Debian") :]
    assert "twin-pxe: no install entry for this machine, booting its local disk" in after_install


def test_installed_machine_answers_over_ssh_with_the_controller_key(metal: Metal):
    hostname = metal.ssh("hostname")
    assert hostname.returncode == 0, hostname.stderr
    assert hostname.stdout.strip() == MACHINE
    python = metal.ssh("python3 --version")
    assert python.returncode == 0, python.stderr
    assert re.fullmatch(r"Python 3\.\d+\.\d+", python.stdout.strip()), python.stdout
    sudo = metal.ssh("sudo -n true && id -un")
    assert sudo.returncode == 0, sudo.stderr
    assert sudo.stdout.strip() == ADMIN
    print(f"VM answered: hostname {hostname.stdout.strip()}, {python.stdout.strip()}, "
          f"sudo -n true as {sudo.stdout.strip()}: ok")  # fmt: skip
