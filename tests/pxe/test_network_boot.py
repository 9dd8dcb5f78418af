"""Real network boots: qemu (TCG) VMs boot from what the pxe_server role rendered.

A LAN in network namespaces (``lab.py``): the server side runs the rendered
units' dnsmasq (proxy DHCP and TFTP) and web server, plus a second dnsmasq
playing the home router (addresses and a DNS server; proxy DHCP hands out
none). Three VMs boot at once on the bridge: BIOS with a known MAC, UEFI with
a known MAC, and BIOS with an unknown MAC. The checks read the servers' logs
(and the unknown machine's serial console): the known machines fetched the
installer over TFTP and then, from the booted installer, their own preseed
over HTTP; the unknown one got the local-disk entry and nothing else.

Each boot takes 80-90 s on an idle two-core machine; the three share the CPU,
so each has ``PXE_BOOT_TIMEOUT`` seconds (default 600).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pxe import lab
from pxe.rendered import Rendered, converge

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(lab.unavailable()), reason=str(lab.unavailable())),
]

TIMEOUT = float(os.environ.get("PXE_BOOT_TIMEOUT", "600"))
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


@dataclass(frozen=True)
class Vm:
    name: str
    mac: str
    address: str
    firmware: str  # bios or uefi
    known: bool

    @property
    def dashes(self) -> str:
        return self.mac.replace(":", "-")


VMS = (
    Vm("bios-known", "52:54:00:7e:00:01", "10.77.0.101", "bios", known=True),
    Vm("uefi-known", "52:54:00:7e:00:02", "10.77.0.102", "uefi", known=True),
    Vm("bios-unknown", "52:54:00:7e:00:03", "10.77.0.103", "bios", known=False),
)


def qemu_argv(vm: Vm, tap: str, workdir: Path) -> list[str]:
    """A diskless VM that boots from the network, its serial console in a file."""
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "1"]
    argv += ["-display", "none", "-monitor", "none", "-no-reboot"]
    argv += ["-serial", f"file:{workdir / (vm.name + '.serial')}"]
    argv += ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
    if vm.firmware == "uefi":
        vars_copy = workdir / f"{vm.name}-vars.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv += ["-machine", "q35"]
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
        argv += ["-drive", f"if=pflash,format=raw,file={vars_copy}"]
        # Without qemu's iPXE ROM, OVMF's own PXE boots (the bundled iPXE
        # cannot start the signed shim: "Malformed binary after Attribute
        # Certificate Table").
        argv += ["-device", f"virtio-net-pci,netdev=n0,mac={vm.mac},romfile="]
    else:
        argv += ["-machine", "pc", "-boot", "n"]
        argv += ["-device", f"virtio-net-pci,netdev=n0,mac={vm.mac}"]
    return argv


@dataclass(frozen=True)
class Logs:
    dnsmasq: Path
    http: Path
    workdir: Path
    rendered: Rendered

    def tftp_sent(self, vm: Vm) -> list[str]:
        """Files dnsmasq sent to ``vm`` over TFTP, relative to the TFTP root."""
        root = str(self.rendered.tftp) + "/"
        pattern = re.compile(rf"sent (\S+) to {re.escape(vm.address)}$", re.MULTILINE)
        return [path.removeprefix(root) for path in pattern.findall(_read(self.dnsmasq))]

    def http_gets(self, vm: Vm) -> list[str]:
        """``<path> <status>`` of the web server's GETs from ``vm``."""
        pattern = re.compile(
            rf'^{re.escape(vm.address)} .*"GET (\S+) HTTP/1\.\d" (\d+)', re.MULTILINE
        )
        return [f"{path} {status}" for path, status in pattern.findall(_read(self.http))]

    def serial(self, vm: Vm) -> str:
        return _read(self.workdir / f"{vm.name}.serial")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def done(logs: Logs, vm: Vm) -> bool:
    """The VM got as far as the test needs."""
    if vm.known:
        return f"/preseed/{vm.dashes}.cfg 200" in logs.http_gets(vm)
    sent = logs.tftp_sent(vm)
    return "pxelinux.cfg/default" in sent and "Booting from local disk" in logs.serial(vm)


@pytest.fixture(scope="module")
def boots() -> Iterator[Logs]:
    """Converge the role, serve what it rendered, boot the three VMs at once."""
    workdir = Path(tempfile.mkdtemp(prefix="twin-pxe-boot-"))
    workdir.chmod(0o755)  # dnsmasq reads the TFTP root as its own user
    try:
        machines = {vm.name: {"pxe_mac": vm.mac} for vm in VMS if vm.known}
        result = converge(
            workdir,
            machines,
            address=lab.SERVER_ADDRESS,
            interface=lab.SERVER_LINK,
            extra_vars={"pxe_server_kernel_extra_args": ["console=ttyS0,115200n8"]},
        )
        assert result.returncode == 0, result.output
        rendered = Rendered(workdir)
        logs = Logs(workdir / "dnsmasq.log", workdir / "http.log", workdir, rendered)
        with lab.lan() as net:
            router = lab.router_argv(workdir, {vm.mac: vm.address for vm in VMS})
            net.start(net.server, router, workdir / "router.log")
            net.start(net.server, rendered.exec_start("twin-pxe-dnsmasq"), logs.dnsmasq)
            net.start(net.server, rendered.exec_start("twin-pxe-http"), logs.http)
            time.sleep(1)
            vms = {
                vm: net.start(
                    net.lan, qemu_argv(vm, net.add_tap(), workdir), workdir / f"{vm.name}.qemu.log"
                )
                for vm in VMS
            }
            started = time.monotonic()
            waiting = set(VMS)
            while waiting and time.monotonic() - started < TIMEOUT:
                for vm in list(waiting):
                    if done(logs, vm) or vms[vm].poll() is not None:
                        waiting.discard(vm)
                        outcome = "done" if done(logs, vm) else "qemu exited"
                        print(f"{vm.name}: {outcome} after {time.monotonic() - started:.0f} s")
                        if vms[vm].poll() is None:
                            vms[vm].terminate()
                time.sleep(2)
            for vm in waiting:
                print(f"{vm.name}: not done after {TIMEOUT:.0f} s")
            yield logs
    finally:
        if os.environ.get("PXE_KEEP") is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _evidence(logs: Logs, vm: Vm) -> str:
    return (
        f"TFTP to {vm.address}: {logs.tftp_sent(vm)}\n"
        f"HTTP from {vm.address}: {logs.http_gets(vm)}\n"
        f"serial (last 1500 chars):\n{logs.serial(vm)[-1500:]}"
    )


def test_bios_machine_with_known_mac_fetches_installer_then_its_preseed(boots: Logs):
    vm = VMS[0]
    sent = boots.tftp_sent(vm)
    for path in ("pxelinux.0", "ldlinux.c32", f"pxelinux.cfg/01-{vm.dashes}",
                 "debian-installer/amd64/linux", "debian-installer/amd64/initrd.gz"):  # fmt: skip
        assert path in sent, _evidence(boots, vm)
    assert f"/preseed/{vm.dashes}.cfg 200" in boots.http_gets(vm), _evidence(boots, vm)


def test_uefi_machine_with_known_mac_fetches_shim_grub_installer_then_its_preseed(boots: Logs):
    vm = VMS[1]
    sent = boots.tftp_sent(vm)
    for path in ("bootnetx64.efi", "grubx64.efi", f"debian-installer/amd64/grub/grub.cfg-{vm.mac}",
                 "debian-installer/amd64/linux", "debian-installer/amd64/initrd.gz"):  # fmt: skip
        assert path in sent, _evidence(boots, vm)
    assert f"/preseed/{vm.dashes}.cfg 200" in boots.http_gets(vm), _evidence(boots, vm)


def test_machine_with_unknown_mac_gets_the_local_disk_entry_and_no_installer(boots: Logs):
    vm = VMS[2]
    sent = boots.tftp_sent(vm)
    assert "pxelinux.cfg/default" in sent, _evidence(boots, vm)
    assert "Booting from local disk" in boots.serial(vm), _evidence(boots, vm)
    assert not [p for p in sent if p.startswith("debian-installer/")], _evidence(boots, vm)
    assert boots.http_gets(vm) == [], _evidence(boots, vm)
