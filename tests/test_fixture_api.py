"""The fixture server (helpers.fixture_api) answers in order and remembers requests.

The answers are hand-written Consul fixtures (tests/api_fixtures/consul/).
"""

from pathlib import Path

import httpx
import pytest
from helpers.fixture_api import FIXTURES_ROOT, UNMATCHED_STATUS, FixtureAPI, load_route


def test_second_bootstrap_is_refused_like_a_real_cluster():
    with FixtureAPI("consul", ["acl_bootstrap"]) as api:
        first = httpx.put(f"{api.url}/v1/acl/bootstrap")
        second = httpx.put(f"{api.url}/v1/acl/bootstrap")
        third = httpx.put(f"{api.url}/v1/acl/bootstrap")
    assert first.status_code == 200
    assert first.json()["SecretID"] == first.json()["ID"]
    assert first.headers["content-type"] == "application/json"
    assert second.status_code == third.status_code == 403
    assert "ACL bootstrap no longer allowed" in second.text


def test_requests_are_kept_with_headers_and_body():
    with FixtureAPI("consul", ["acl_policy_create"]) as api:
        httpx.put(
            f"{api.url}/v1/acl/policy?dc=dc1",
            headers={"X-Consul-Token": "secret"},
            json={"Name": "twin-consul-agents"},
        )
    [request] = api.requests_to("PUT", "/v1/acl/policy")
    assert request.header("x-consul-token") == "secret"
    assert request.json() == {"Name": "twin-consul-agents"}
    assert request.query == {"dc": ["dc1"]}


def test_read_headers_carry_the_consul_index():
    with FixtureAPI("consul", ["acl_policy_read_agents"]) as api:
        missing = httpx.get(f"{api.url}/v1/acl/policy/name/twin-consul-agents")
        found = httpx.get(f"{api.url}/v1/acl/policy/name/twin-consul-agents")
    assert missing.status_code == 404
    assert found.status_code == 200
    assert found.headers["x-consul-index"] == "14"


def test_request_without_a_fixture_is_answered_loudly_and_listed():
    with FixtureAPI("consul", ["status_leader"]) as api:
        response = httpx.get(f"{api.url}/v1/agent/members")
    assert response.status_code == UNMATCHED_STATUS
    assert [r.path for r in api.unmatched] == ["/v1/agent/members"]


def test_every_consul_fixture_names_its_source_and_loads():
    files = sorted((FIXTURES_ROOT / "consul").glob("*.yaml"))
    assert files
    for path in files:
        assert "# Source: https://developer.hashicorp.com/" in path.read_text(), path.name
        route = load_route(path)
        assert route.path.startswith("/v1/"), path.name


def test_fixture_without_responses_is_rejected(tmp_path: Path):
    (tmp_path / "consul").mkdir()
    (tmp_path / "consul" / "broken.yaml").write_text("request: {method: GET, path: /v1/x}\n")
    with pytest.raises(ValueError, match="non-empty `responses`"):
        FixtureAPI("consul", ["broken"], root=tmp_path)
