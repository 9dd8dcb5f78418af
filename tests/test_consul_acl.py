"""The consul role's ACL steps against hand-written answers of the Consul HTTP API.

No Consul binary exists on this machine; helpers.ansible.run_playbook runs the
role's own credentials.yml and acl.yml (unchanged) against
tests/helpers/fixture_api.py, which answers in order with Consul responses
written from its API documentation (tests/api_fixtures/consul/) and keeps the
requests.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers.ansible import PlayResult, inventory, run_playbook, write_inventory
from helpers.fixture_api import FixtureAPI

BOOTSTRAP_SECRET = "527347d3-9653-07dc-adc0-598b8f2b0f4d"
UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
POLICY_ID = "e359bd81-baca-903e-7e64-1ccd9fdc78f5"
FRESH_CLUSTER = [
    "status_leader",
    "acl_bootstrap",
    "acl_policy_read_agents",
    "acl_policy_create",
    "acl_token_self_agent",
    "acl_token_create",
]

INVENTORY = inventory({"consul_servers": ["server1"]}, local=["server1"])


def include(tasks_from: str, name: str) -> dict[str, Any]:
    """A task that runs one task file of the consul role."""
    return {
        "name": name,
        "ansible.builtin.include_role": {"name": "consul", "tasks_from": tasks_from},
    }


PLAY: list[dict[str, Any]] = [
    {
        "name": "Run the consul role's ACL steps.",
        "hosts": "consul_servers",
        "gather_facts": False,
        "tasks": [
            include("credentials.yml", "Create or load the secrets."),
            include("acl.yml", "Bootstrap ACLs."),
        ],
    }
]


# What Ansible reads from an inventory: its groups with their hosts, each host's vars.
LIST_INVENTORY: list[dict[str, Any]] = [
    {
        "name": "List the inventory's hosts.",
        "hosts": "all",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Show the groups and their hosts.",
                "ansible.builtin.debug": {"var": "groups"},
            },
            {
                "name": "Show the host's vars.",
                "ansible.builtin.debug": {"var": "hostvars[inventory_hostname]"},
            },
        ],
    }
]


def run_acl_tasks(
    workdir: Path,
    api: FixtureAPI,
    inventory_as_dir: bool = False,
    plays: Sequence[Mapping[str, Any]] = PLAY,
    check: bool = False,
) -> PlayResult:
    """Run the role's credentials.yml + acl.yml with the inventory in workdir/inventory/.

    The inventory is passed as its file, or as that folder with
    ``inventory_as_dir``; ``plays`` replace the play (other task files of the
    role). The API's address and no wait between leader polls are extra vars.
    """
    hosts_file = write_inventory(workdir / "inventory", INVENTORY)
    return run_playbook(
        plays,
        hosts_file.parent if inventory_as_dir else hosts_file,
        extra_vars={"consul_api_url": api.url, "consul_leader_wait_delay": 0},
        check=check,
        workdir=workdir,
    )


def credentials_of(workdir: Path) -> Path:
    """Where the role keeps its secrets: next to the inventory, in a hidden directory."""
    return workdir / "inventory" / ".credentials"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_fresh_cluster_is_bootstrapped_once_and_the_token_is_kept_0600(tmp_path: Path):
    credentials = credentials_of(tmp_path)
    with FixtureAPI("consul", FRESH_CLUSTER) as api:
        first = run_acl_tasks(tmp_path, api)
        assert first.returncode == 0, first.output
        bootstraps_after_first = len(api.requests_to("PUT", "/v1/acl/bootstrap"))
        second = run_acl_tasks(tmp_path, api)
        assert second.returncode == 0, second.output

    token_file = credentials / "consul-bootstrap.token"
    assert token_file.read_text().strip() == BOOTSTRAP_SECRET
    assert mode(token_file) == 0o600
    assert mode(credentials) == 0o700
    # The leader was polled until the fixture stopped answering "".
    assert len(api.requests_to("GET", "/v1/status/leader")) >= 2
    # One bootstrap over two runs: the second run reused the saved token.
    assert bootstraps_after_first == 1
    assert len(api.requests_to("PUT", "/v1/acl/bootstrap")) == 1
    assert second.changed == 0, second.output
    assert not api.unmatched


@pytest.mark.slow
def test_agents_policy_and_token_are_created_with_the_bootstrap_token(tmp_path: Path):
    with FixtureAPI("consul", FRESH_CLUSTER) as api:
        result = run_acl_tasks(tmp_path, api)
        assert result.returncode == 0, result.output
        run_acl_tasks(tmp_path, api)

    agent_token = (credentials_of(tmp_path) / "consul-agent.token").read_text().strip()
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", agent_token
    )
    assert mode(credentials_of(tmp_path) / "consul-agent.token") == 0o600

    [policy] = api.requests_to("PUT", "/v1/acl/policy")
    assert policy.header("X-Consul-Token") == BOOTSTRAP_SECRET
    assert policy.json()["Name"] == "twin-consul-agents"
    assert 'node_prefix "" {' in policy.json()["Rules"]

    [token] = api.requests_to("PUT", "/v1/acl/token")
    assert token.header("X-Consul-Token") == BOOTSTRAP_SECRET
    assert token.json()["SecretID"] == agent_token
    assert token.json()["Policies"] == [{"Name": "twin-consul-agents"}]
    # The existence check asks as the agents' token itself.
    assert {r.header("X-Consul-Token") for r in api.requests_to("GET", "/v1/acl/token/self")} == {
        agent_token
    }


@pytest.mark.slow
def test_secrets_never_appear_in_the_output(tmp_path: Path):
    with FixtureAPI("consul", FRESH_CLUSTER) as api:
        result = run_acl_tasks(tmp_path, api)
    assert result.returncode == 0, result.output
    agent_token = (credentials_of(tmp_path) / "consul-agent.token").read_text().strip()
    gossip_key = (credentials_of(tmp_path) / "consul-gossip.key").read_text().strip()
    for secret in (BOOTSTRAP_SECRET, agent_token, gossip_key):
        assert secret not in result.output


@pytest.mark.slow
def test_bootstrapped_cluster_without_saved_token_stops_with_the_fix(tmp_path: Path):
    with FixtureAPI("consul", ["status_leader", "acl_bootstrap_done"]) as api:
        result = run_acl_tasks(tmp_path, api)
    assert result.returncode != 0
    assert "bootstrapped before" in result.stdout
    assert "consul-bootstrap.token does not exist" in result.stdout
    assert "Restore that file (consul_acl_bootstrap_token_file)" in result.stdout
    assert not (credentials_of(tmp_path) / "consul-bootstrap.token").exists()
    assert not api.requests_to("PUT", "/v1/acl/policy")


@pytest.mark.slow
def test_outdated_agents_policy_is_updated_in_place_once(tmp_path: Path):
    credentials = credentials_of(tmp_path)
    credentials.mkdir(mode=0o700, parents=True)
    (credentials / "consul-bootstrap.token").write_text(BOOTSTRAP_SECRET + "\n")
    (credentials / "consul-bootstrap.token").chmod(0o600)
    fixtures = [
        "status_leader",
        "acl_policy_read_agents_outdated",
        "acl_policy_update_agents",
        "acl_token_self_agent",
        "acl_token_create",
    ]
    with FixtureAPI("consul", fixtures) as api:
        first = run_acl_tasks(tmp_path, api)
        assert first.returncode == 0, first.output
        second = run_acl_tasks(tmp_path, api)
        assert second.returncode == 0, second.output

    assert not api.requests_to("PUT", "/v1/acl/bootstrap")
    assert not api.requests_to("PUT", "/v1/acl/policy")
    [update] = api.requests_to("PUT", f"/v1/acl/policy/{POLICY_ID}")
    assert update.json()["ID"] == POLICY_ID
    assert 'policy = "write"' in update.json()["Rules"]
    assert second.changed == 0, second.output


@pytest.mark.slow
def test_secrets_next_to_an_inventory_directory_are_not_read_as_hosts(tmp_path: Path):
    with FixtureAPI("consul", FRESH_CLUSTER) as api:
        result = run_acl_tasks(tmp_path, api, inventory_as_dir=True)
    assert result.returncode == 0, result.output
    folder = tmp_path / "inventory"
    credentials = credentials_of(tmp_path)
    secrets = [p.read_text().strip() for p in credentials.iterdir()]
    assert len(secrets) == 5  # gossip key, bootstrap, agent and the two Nomad tokens

    # Every host Ansible now reads from that folder runs the listing play.
    listed = run_playbook(LIST_INVENTORY, folder, workdir=tmp_path)
    assert set(listed.recap) == {"server1"}, listed.output
    assert listed.returncode == 0, listed.output
    for secret in secrets:
        assert secret not in listed.output


@pytest.mark.slow
def test_check_mode_reports_the_outdated_policy_and_missing_token_and_writes_nothing(
    tmp_path: Path,
):
    credentials = credentials_of(tmp_path)
    credentials.mkdir(mode=0o700, parents=True)
    secrets = {
        "consul-gossip.key": "c2VjcmV0LWdvc3NpcC1rZXktb2YtMzItYnl0ZXMtLS0=",
        "consul-bootstrap.token": BOOTSTRAP_SECRET,
        "consul-agent.token": "0b7c1f1e-5d0e-4c49-9e44-3f0c2d6b8a17",
        "consul-nomad-server.token": "88d70804-db02-4fe9-8d8f-b14be41386fb",
        "consul-nomad-client.token": "a7bf0c6f-2995-4ad2-b7df-4784d48c1e25",
    }
    for name, secret in secrets.items():
        (credentials / name).write_text(secret + "\n")
        (credentials / name).chmod(0o600)
    fixtures = ["status_leader", "acl_policy_read_agents_outdated", "acl_token_self_agent"]
    with FixtureAPI("consul", fixtures) as api:
        result = run_acl_tasks(tmp_path, api, check=True)
    assert result.returncode == 0, result.output

    # It read what it needed to decide, and wrote nothing.
    assert {r.method for r in api.requests} == {"GET"}
    assert len(api.requests_to("GET", "/v1/acl/policy/name/twin-consul-agents")) == 1
    assert len(api.requests_to("GET", "/v1/acl/token/self")) == 1
    # The policy update and the token creation it would make.
    assert result.changed == 2, result.output
    assert not api.unmatched
    for secret in secrets.values():
        assert secret not in result.output
