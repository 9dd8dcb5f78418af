"""Checks against a real Consul cluster formed by the consul role.

Run with `make test-live` and CONSUL_HTTP_ADDR (e.g. http://10.0.0.11:8500 or
https://...:8501 with CONSUL_CACERT) plus CONSUL_HTTP_TOKEN (the bootstrap
token from <inventory>/.credentials/consul-bootstrap.token). Skipped without
them: no Consul binary exists on the test machine.
"""

from __future__ import annotations

import os

import consul
import httpx
import pytest

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not (os.environ.get("CONSUL_HTTP_ADDR") and os.environ.get("CONSUL_HTTP_TOKEN")),
        reason="needs a real cluster: set CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN",
    ),
]
AGENTS_POLICY = os.environ.get("CONSUL_AGENTS_POLICY", "twin-consul-agents")


def client(token: str | None) -> consul.Consul:
    return consul.Consul(token=token, verify=os.environ.get("CONSUL_CACERT", True))


def test_cluster_has_a_leader_and_an_odd_number_of_servers():
    api = client(os.environ["CONSUL_HTTP_TOKEN"])
    assert api.status.leader()
    peers = api.status.peers()
    assert len(peers) % 2 == 1, peers


def test_every_member_is_alive():
    members = client(os.environ["CONSUL_HTTP_TOKEN"]).agent.members()
    assert members
    # Serf status 1 is "alive".
    assert {m["Name"]: m["Status"] for m in members} == {m["Name"]: 1 for m in members}


def test_anonymous_requests_are_denied():
    # Plain HTTP without a token: py-consul would add CONSUL_HTTP_TOKEN itself.
    addr = os.environ["CONSUL_HTTP_ADDR"]
    base = addr if "://" in addr else f"http://{addr}"
    response = httpx.put(
        f"{base}/v1/kv/twin-cluster-live-test",
        content=b"must be refused",
        verify=os.environ.get("CONSUL_CACERT", True),
    )
    assert response.status_code == 403, response.text


def test_agents_policy_exists_with_node_write_rules():
    api = client(os.environ["CONSUL_HTTP_TOKEN"])
    names = {p["Name"]: p["ID"] for p in api.acl.policy.list()}
    assert AGENTS_POLICY in names
    rules = api.acl.policy.read(names[AGENTS_POLICY])["Rules"]
    assert 'node_prefix ""' in rules
