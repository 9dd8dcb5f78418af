"""The pxe_server role converged into a local directory: what a boot test serves.

The role runs with ansible-playbook against this machine (``ansible_connection:
local``) with every path under one directory and ``pxe_server_service_state:
unmanaged``: it copies the netboot files, writes the boot entries, preseeds,
dnsmasq.conf and both systemd units, and starts nothing. A test then runs the
units' own ``ExecStart`` command lines (in a network namespace).
"""

from __future__ import annotations

import configparser
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.ansible import LOCAL, PlayResult, inventory, run_playbook

PLAY = [
    {
        "name": "Serve network installs.",
        "hosts": "pxe_server",
        "gather_facts": False,
        "roles": [{"role": "pxe_server"}],
    }
]


@dataclass(frozen=True)
class Rendered:
    """Where the role put things under ``root``."""

    root: Path

    @property
    def tftp(self) -> Path:
        return self.root / "srv" / "tftp"

    @property
    def http(self) -> Path:
        return self.root / "srv" / "http"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def grub(self) -> Path:
        return self.tftp / "debian-installer" / "amd64" / "grub"

    def exec_start(self, unit: str) -> list[str]:
        """The ``ExecStart`` of a rendered unit, split as systemd splits it."""
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.read(self.root / "systemd" / f"{unit}.service")
        return shlex.split(parser["Service"]["ExecStart"])


def server_vars(root: Path, address: str, interface: str) -> dict[str, Any]:
    """Host vars of a PXE server whose every path is under ``root``."""
    return {
        **LOCAL,
        "pxe_server_packages": [],
        "pxe_server_root": str(root / "srv"),
        "pxe_server_config_dir": str(root / "etc"),
        "pxe_server_state_dir": str(root / "state"),
        "pxe_server_systemd_dir": str(root / "systemd"),
        "pxe_server_user": "root",
        "pxe_server_service_state": "unmanaged",
        "pxe_server_interface": interface,
        "pxe_server_address": address,
        "pxe_server_proxy_subnet": address.rsplit(".", 1)[0] + ".0",
        "pxe_server_mirror": "http://mirror.invalid/debian",
    }


def converge(
    root: Path,
    machines: Mapping[str, Mapping[str, Any]],
    *,
    address: str,
    interface: str,
    extra_vars: Mapping[str, Any] | None = None,
    playbook: Path | None = None,
) -> PlayResult:
    """Run the role for ``machines`` (host vars with pxe_mac) into ``root``, the inventory dir.

    ``playbook`` runs a playbook file (``playbooks/metal.yml``) instead of the role alone.
    """
    hosts = {"pxe1": server_vars(root, address, interface), **machines}
    return run_playbook(
        playbook or PLAY,
        inventory({"pxe_server": ["pxe1"]}, hosts=hosts),
        extra_vars=extra_vars,
        workdir=root,
        timeout=600,
    )
