"""The pxe_server role, converged into a local directory (no network boot here).

Bad settings stop the role in its argument spec or validate.yml, before it
writes anything, with a message naming the variable. The install report
(the preseed's last step) flips a machine to local boot through the rendered
web server, the next run keeps it there, and pxe_reinstall flips it back.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.ansible import PlayResult
from pxe.rendered import Rendered, converge

pytestmark = pytest.mark.slow

MAC = "52:54:00:5e:00:01"
DASHES = MAC.replace(":", "-")


def failing_run(root: Path, machines: dict[str, dict[str, Any]], **extra: Any) -> str:
    result = converge(root, machines, address="127.0.0.1", interface="lo", extra_vars=extra)
    assert result.returncode != 0, "the role accepted bad settings:\n" + result.stdout
    assert not (root / "srv" / "tftp" / "pxelinux.cfg").exists(), "the role wrote files first"
    return result.output


def test_bad_mac_is_refused_with_the_host_and_the_format(tmp_path: Path):
    output = failing_run(tmp_path, {"node1": {"pxe_mac": "52:54:00:12:34"}})
    assert "pxe_mac '52:54:00:12:34' of host node1 is not a MAC address" in output


def test_full_dhcp_without_a_range_is_refused(tmp_path: Path):
    output = failing_run(
        tmp_path,
        {"node1": {"pxe_mac": MAC}},
        pxe_server_dhcp_mode="full",
        pxe_server_dhcp_router="10.0.0.1",
    )
    assert "pxe_server_dhcp_mode is 'full'" in output
    assert "pxe_server_dhcp_range_start" in output


def test_plain_text_password_is_refused_and_not_printed(tmp_path: Path):
    output = failing_run(
        tmp_path, {"node1": {"pxe_mac": MAC}}, pxe_server_admin_password_hash="hunter2hunter2"
    )
    assert "pxe_server_admin_password_hash (or the file" in output
    assert "is not a crypt hash" in output
    assert "hunter2hunter2" not in output


def test_unknown_dhcp_mode_fails_in_the_argument_spec(tmp_path: Path):
    output = failing_run(tmp_path, {"node1": {"pxe_mac": MAC}}, pxe_server_dhcp_mode="router")
    assert "pxe_server_dhcp_mode" in output
    assert "must be one of: proxy, full" in output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[Rendered, int]]:
    """The role converged for one machine, and its rendered web server running."""
    port = _free_port()
    result = converge(
        tmp_path,
        {"node1": {"pxe_mac": MAC}},
        address="127.0.0.1",
        interface="lo",
        extra_vars={"pxe_server_http_port": port},
    )
    assert result.returncode == 0, result.output
    rendered = Rendered(tmp_path)
    proc = subprocess.Popen(rendered.exec_start("twin-pxe-http"), stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield rendered, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def converge_again(rendered: Rendered, port: int, node1: dict[str, Any]) -> PlayResult:
    return converge(
        rendered.root,
        {"node1": node1},
        address="127.0.0.1",
        interface="lo",
        extra_vars={"pxe_server_http_port": port},
    )


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_install_report_flips_the_machine_to_local_boot_until_reinstall(http_server):
    rendered, port = http_server
    entry = rendered.tftp / "pxelinux.cfg" / f"01-{DASHES}"
    grub_entry = rendered.grub / f"grub.cfg-{MAC}"
    assert "KERNEL debian-installer/amd64/linux" in entry.read_text()
    status, preseed = _get(port, f"/preseed/{DASHES}.cfg")
    assert status == 200
    assert f"/installed/{DASHES}" in preseed

    status, _ = _get(port, f"/installed/{DASHES}")
    assert status == 200
    assert entry.read_text() == (rendered.tftp / "pxelinux.cfg" / "default").read_text()
    assert grub_entry.read_text() == (rendered.grub / "grub.cfg-local").read_text()

    again = converge_again(rendered, port, {"pxe_mac": MAC})
    assert again.returncode == 0, again.output
    assert again.changed == 0, again.stdout
    assert "LOCALBOOT 0" in entry.read_text()

    reinstall = converge_again(rendered, port, {"pxe_mac": MAC, "pxe_reinstall": True})
    assert reinstall.returncode == 0, reinstall.output
    assert "KERNEL debian-installer/amd64/linux" in entry.read_text()
    assert "linux /debian-installer/amd64/linux" in grub_entry.read_text()
    assert not (rendered.state / "installed" / DASHES).exists()


def test_unknown_report_and_listing_are_refused(http_server):
    _, port = http_server
    assert _get(port, "/installed/52-54-00-00-00-99")[0] == 404
    assert _get(port, "/preseed/")[0] == 404


def test_install_report_bypasses_the_installers_apt_proxy(http_server):
    """The preseed's report command reaches the PXE server though http_proxy names an apt proxy.

    An apt-cacher-ng answers 403 to anything but a Debian archive path, so a
    report sent through it would never flip the boot entry; here the "proxy"
    is a closed port, which fails any request that goes to it.
    """
    rendered, _ = http_server
    preseed = (rendered.http / "preseed" / f"{DASHES}.cfg").read_text()
    report = re.search(r"^\s*(.*wget .*/installed/\S+)$", preseed, re.MULTILINE)
    assert report, preseed
    env = {**os.environ, "http_proxy": f"http://127.0.0.1:{_free_port()}", "no_proxy": ""}
    run = subprocess.run(
        ["sh", "-c", report.group(1)], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, f"{report.group(1)!r} failed: {run.stderr}"
    assert (rendered.state / "installed" / DASHES).exists()
