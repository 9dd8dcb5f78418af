"""The consul role refuses bad settings at once, with a message naming the variable.

Runs the real role with ansible-playbook in check mode against local hosts;
every case must stop in the argument spec or validate.yml, before any change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.ansible import inventory, run_playbook

PLAY = [
    {
        "name": "Apply the consul role.",
        "hosts": "all",
        "gather_facts": True,
        "gather_subset": ["network"],
        "roles": [{"role": "consul"}],
    }
]


def run_role(workdir: Path, servers: int, extra_vars: dict[str, object]) -> str:
    names = [f"server{i}" for i in range(1, servers + 1)]
    result = run_playbook(
        PLAY,
        inventory({"consul_servers": names}, local=names),
        extra_vars={"consul_download_base_url": "http://127.0.0.1:9", **extra_vars},
        check=True,
        workdir=workdir,
    )
    assert result.returncode != 0, "the role accepted bad settings:\n" + result.stdout
    assert "Install the pinned Consul binary" not in result.stdout
    return result.output


@pytest.mark.slow
def test_even_number_of_servers_fails_with_the_fix(tmp_path: Path):
    output = run_role(tmp_path, servers=2, extra_vars={})
    assert "consul_bootstrap_expect is 2 with 2 host(s) in 'consul_servers'" in output
    assert "odd number" in output


@pytest.mark.slow
def test_unknown_install_method_fails_in_the_argument_spec(tmp_path: Path):
    output = run_role(tmp_path, servers=1, extra_vars={"consul_install_method": "curl"})
    assert "consul_install_method" in output
    assert "must be one of: release, apt" in output


@pytest.mark.slow
def test_wrong_type_fails_in_the_argument_spec(tmp_path: Path):
    output = run_role(tmp_path, servers=1, extra_vars={"consul_ports": "8500"})
    assert "consul_ports" in output
    assert "dict" in output


@pytest.mark.slow
def test_missing_interface_is_named_with_the_existing_ones(tmp_path: Path):
    output = run_role(tmp_path, servers=1, extra_vars={"consul_iface": "nope0"})
    assert "consul_iface 'nope0' does not exist on server1" in output
    assert "lo" in output
