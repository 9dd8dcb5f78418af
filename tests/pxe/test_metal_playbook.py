"""playbooks/metal.yml: serve the installs, wait for each machine's report, reach it.

The PXE server and the "machine" are this host (local connection): the
machine's install report is the marker the web server writes
(``state/installed/<mac>``), written here by hand with the address it
came from. site.yml runs too; the inventory has no cluster groups, so its
plays match no host. No machine is installed here (see test_network_boot.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.ansible import LOCAL, ROOT, PlayResult
from pxe.rendered import converge

pytestmark = pytest.mark.slow

MAC = "52:54:00:5e:00:07"
METAL = ROOT / "playbooks" / "metal.yml"


def run_metal(root: Path, timeout_s: int) -> PlayResult:
    return converge(
        root,
        {"node7": {"pxe_mac": MAC, **LOCAL}},
        address="127.0.0.1",
        interface="lo",
        extra_vars={"twin_metal_timeout": timeout_s},
        playbook=METAL,
    )


def test_machine_that_reported_is_reached_at_the_reported_address(tmp_path: Path):
    marker = tmp_path / "state" / "installed" / MAC.replace(":", "-")
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"address": "127.0.0.1", "time": 0}) + "\n")
    result = run_metal(tmp_path, 60)
    assert result.returncode == 0, result.output
    assert "node7 is installed and answers at 127.0.0.1." in result.stdout


def test_machine_that_never_reports_stops_the_play_after_the_timeout(tmp_path: Path):
    result = run_metal(tmp_path, 40)
    assert result.returncode != 0, result.stdout
    assert "Wait for the install to report back" in result.stdout
    assert "retries left" in result.stdout
    assert "is installed and answers" not in result.stdout
