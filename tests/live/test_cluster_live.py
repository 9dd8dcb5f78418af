"""A real Consul + Nomad cluster formed by the roles: members, leaders, ACLs, namespaces.

Run with ``make test-live`` against a cluster; see conftest.py for the
variables. Without them every test is skipped and says which one is missing.
"""

from __future__ import annotations

import consul
import nomad
import pytest
from nomad.api.exceptions import URLNotAuthorizedNomadException

pytestmark = pytest.mark.live


def test_consul_members_are_all_alive_with_an_odd_number_of_servers(consul_api: consul.Consul):
    members = consul_api.agent.members()
    assert members, "consul members is empty"
    dead = [m["Name"] for m in members if m["Status"] != 1]  # serf: 1 = alive
    assert not dead, f"members not alive: {dead}"
    servers = [m for m in members if m.get("Tags", {}).get("role") == "consul"]
    assert len(servers) % 2 == 1, f"{len(servers)} Consul servers: a quorum needs an odd number"


def test_consul_has_a_leader_among_its_raft_peers(consul_api: consul.Consul):
    leader = consul_api.status.leader()
    assert leader, "Consul has no leader"
    assert leader in consul_api.status.peers()


def test_consul_refuses_an_anonymous_request_for_acl_tokens(consul_anonymous: consul.Consul):
    with pytest.raises(consul.ACLPermissionDenied):
        consul_anonymous.acl.token.list()


def test_nomad_server_members_are_alive_with_an_odd_count(nomad_api: nomad.Nomad):
    members = nomad_api.agent.get_members()["Members"]
    assert members, "nomad server members is empty"
    dead = [m["Name"] for m in members if m["Status"] != "alive"]
    assert not dead, f"Nomad servers not alive: {dead}"
    assert len(members) % 2 == 1, f"{len(members)} Nomad servers: a quorum needs an odd number"


def test_nomad_has_a_leader(nomad_api: nomad.Nomad):
    leader = nomad_api.status.leader.get_leader()
    assert leader, "Nomad has no leader"


def test_nomad_nodes_are_ready_and_eligible(nomad_api: nomad.Nomad):
    nodes = nomad_api.nodes.get_nodes()
    assert nodes, "no Nomad client registered"
    not_ready = [n["Name"] for n in nodes if n["Status"] != "ready"]
    assert not not_ready, f"nodes not ready: {not_ready}"
    assert any(n["SchedulingEligibility"] == "eligible" for n in nodes)


def test_nomad_refuses_an_anonymous_request_for_acl_tokens(nomad_anonymous: nomad.Nomad):
    with pytest.raises(URLNotAuthorizedNomadException):
        nomad_anonymous.acl.get_tokens()


def test_configured_nomad_namespaces_exist(nomad_api: nomad.Nomad, expected_namespaces: list[str]):
    present = {ns["Name"] for ns in nomad_api.namespaces.get_namespaces()}
    missing = sorted(set(expected_namespaces) - present)
    assert not missing, (
        f"namespaces missing from the cluster: {missing} (present: {sorted(present)})"
    )
