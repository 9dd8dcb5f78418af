"""The consul role's Consul policies and tokens for the Nomad agents, against
hand-written answers of the Consul HTTP API.

No Consul binary exists on this machine; helpers.ansible.run_playbook (through
test_consul_acl's runner) runs the role's own credentials.yml, acl.yml and
nomad_acl.yml (unchanged) against tests/helpers/fixture_api.py, which answers
in order with Consul responses written from its API documentation
(tests/api_fixtures/consul/) and keeps the requests. The policies are those of
Nomad's "Integrate Consul ACL" guide
(developer.hashicorp.com/nomad/docs/secure/acl/consul).
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers.ansible import PlayResult
from helpers.fixture_api import FixtureAPI
from test_consul_acl import BOOTSTRAP_SECRET, credentials_of, include, run_acl_tasks

SERVER_ACCESSOR = "27624077-1eb5-528e-a056-f61ecd6177ab"
CLIENT_ACCESSOR = "6cb8ab31-98f4-5715-9be9-0b37e1bd1967"
# The SecretIDs in tests/api_fixtures/consul/acl_token_read_nomad_*.yaml.
SERVER_SECRET = "88d70804-db02-4fe9-8d8f-b14be41386fb"
CLIENT_SECRET = "a7bf0c6f-2995-4ad2-b7df-4784d48c1e25"
FIXTURES = [
    "status_leader",
    "acl_bootstrap",
    "acl_policy_read_agents",
    "acl_policy_create",
    "acl_token_self_agent",
    "acl_token_create",
    "acl_policy_read_nomad_servers",
    "acl_policy_read_nomad_clients",
    "acl_token_read_nomad_server",
    "acl_token_read_nomad_client",
]
SERVER_RULES = """agent_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
}
acl  = "write"
mesh = "write"
"""
CLIENT_RULES = """agent_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
}
"""

PLAY: list[dict[str, Any]] = [
    {
        "name": "Run the consul role's ACL steps for the agents and for Nomad.",
        "hosts": "consul_servers",
        "gather_facts": False,
        "tasks": [
            include("credentials.yml", "Create or load the secrets."),
            include("acl.yml", "Bootstrap ACLs."),
            include("nomad_acl.yml", "Create the Nomad agents' policies and tokens."),
        ],
    }
]


def run(workdir: Path, api: FixtureAPI) -> PlayResult:
    return run_acl_tasks(workdir, api, plays=PLAY)


def seed_nomad_tokens(workdir: Path, server: str, client: str) -> None:
    """Token files as an earlier run of credentials.yml left them."""
    folder = credentials_of(workdir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for kind, secret in (("server", server), ("client", client)):
        path = folder / f"consul-nomad-{kind}.token"
        path.write_text(secret + "\n")
        path.chmod(0o600)


@pytest.mark.slow
def test_missing_token_files_are_generated_once_as_private_uuids(tmp_path: Path):
    with FixtureAPI("consul", FIXTURES) as api:
        result = run(tmp_path, api)
    assert result.returncode == 0, result.output
    secrets = {}
    for kind in ("server", "client"):
        path = credentials_of(tmp_path) / f"consul-nomad-{kind}.token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secrets[kind] = path.read_text().strip()
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", secrets[kind]
        )
        assert secrets[kind] not in result.output
    assert secrets["server"] != secrets["client"]
    # Consul got exactly the secrets the files hold.
    created = {
        r.json()["AccessorID"]: r.json()["SecretID"]
        for r in api.requests_to("PUT", "/v1/acl/token")[1:]
    }
    assert created == {SERVER_ACCESSOR: secrets["server"], CLIENT_ACCESSOR: secrets["client"]}


@pytest.mark.slow
def test_policies_and_tokens_follow_nomads_guide_and_a_second_run_changes_nothing(tmp_path: Path):
    seed_nomad_tokens(tmp_path, SERVER_SECRET, CLIENT_SECRET)
    with FixtureAPI("consul", FIXTURES) as api:
        first = run(tmp_path, api)
        assert first.returncode == 0, first.output
        second = run(tmp_path, api)
        assert second.returncode == 0, second.output

    # The agents' policy first (acl.yml), then Nomad's two, all with the bootstrap token.
    policies = api.requests_to("PUT", "/v1/acl/policy")
    assert [p.json()["Name"] for p in policies] == [
        "twin-consul-agents",
        "twin-nomad-servers",
        "twin-nomad-clients",
    ]
    assert {p.header("X-Consul-Token") for p in policies} == {BOOTSTRAP_SECRET}
    assert policies[1].json()["Rules"] == SERVER_RULES
    assert policies[2].json()["Rules"] == CLIENT_RULES

    tokens = api.requests_to("PUT", "/v1/acl/token")
    assert [t.json() for t in tokens[1:]] == [
        {
            "AccessorID": SERVER_ACCESSOR,
            "SecretID": SERVER_SECRET,
            "Description": "twin.cluster Nomad server agent token",
            "Policies": [{"Name": "twin-nomad-servers"}],
        },
        {
            "AccessorID": CLIENT_ACCESSOR,
            "SecretID": CLIENT_SECRET,
            "Description": "twin.cluster Nomad client agent token",
            "Policies": [{"Name": "twin-nomad-clients"}],
        },
    ]
    # Looked up by AccessorID with the bootstrap token, twice per run and kind:
    # the role's secret check, then consul_token's own read.
    for accessor in (SERVER_ACCESSOR, CLIENT_ACCESSOR):
        reads = api.requests_to("GET", f"/v1/acl/token/{accessor}")
        assert len(reads) == 4
        assert {r.header("X-Consul-Token") for r in reads} == {BOOTSTRAP_SECRET}

    # The second run found everything as it should be: no writes, nothing changed.
    assert len(policies) == 3
    assert len(tokens) == 3
    assert second.changed == 0, second.output
    assert not api.unmatched
    output = first.output + second.output
    for secret in (BOOTSTRAP_SECRET, SERVER_SECRET, CLIENT_SECRET):
        assert secret not in output


@pytest.mark.slow
def test_token_file_replaced_after_the_token_was_created_stops_with_the_fix(tmp_path: Path):
    # The token exists in Consul with SERVER_SECRET; the file now holds another secret.
    seed_nomad_tokens(tmp_path, SERVER_SECRET, CLIENT_SECRET)
    with FixtureAPI("consul", FIXTURES) as api:
        first = run(tmp_path, api)
        assert first.returncode == 0, first.output
        replaced = "0f0e0d0c-0b0a-4909-8807-060504030201"
        seed_nomad_tokens(tmp_path, replaced, CLIENT_SECRET)
        second = run(tmp_path, api)

    assert second.returncode != 0
    assert "Consul already has the Nomad server token(s)" in second.stdout
    assert f"AccessorID {SERVER_ACCESSOR}" in second.stdout
    assert "consul acl token delete -id" in second.stdout
    assert len(api.requests_to("PUT", "/v1/acl/token")) == 3
    # Stopped before consul_token, which would try to change the SecretID.
    assert not api.requests_to("PUT", f"/v1/acl/token/{SERVER_ACCESSOR}")
    assert not api.unmatched
    output = second.output
    for secret in (replaced, SERVER_SECRET, CLIENT_SECRET):
        assert secret not in output


@pytest.mark.slow
def test_token_with_another_policy_gets_its_own_back_once_with_its_secret_unchanged(
    tmp_path: Path,
):
    seed_nomad_tokens(tmp_path, SERVER_SECRET, CLIENT_SECRET)
    fixtures = [
        "acl_token_read_nomad_server_other_policy" if f == "acl_token_read_nomad_server" else f
        for f in FIXTURES
    ] + ["acl_token_update_nomad_server"]
    with FixtureAPI("consul", fixtures) as api:
        first = run(tmp_path, api)
        assert first.returncode == 0, first.output
        second = run(tmp_path, api)
        assert second.returncode == 0, second.output

    [update] = api.requests_to("PUT", f"/v1/acl/token/{SERVER_ACCESSOR}")
    assert update.header("X-Consul-Token") == BOOTSTRAP_SECRET
    assert update.json()["AccessorID"] == SERVER_ACCESSOR
    assert update.json()["SecretID"] == SERVER_SECRET
    assert update.json()["Description"] == "twin.cluster Nomad server agent token"
    assert update.json()["Policies"] == [{"Name": "twin-nomad-servers"}]
    # The server token was not created anew; the (fresh) client token was created once.
    created = [t.json().get("AccessorID") for t in api.requests_to("PUT", "/v1/acl/token")]
    assert created == [None, CLIENT_ACCESSOR]
    assert not api.requests_to("PUT", f"/v1/acl/token/{CLIENT_ACCESSOR}")
    assert second.changed == 0, second.output
    assert not api.unmatched
    output = first.output + second.output
    for secret in (BOOTSTRAP_SECRET, SERVER_SECRET, CLIENT_SECRET):
        assert secret not in output
