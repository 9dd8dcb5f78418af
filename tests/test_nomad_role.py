"""The nomad role's checks and HTTP API steps, run with the real ansible-playbook.

No Nomad binary exists on this machine, so the API steps (wait for a leader,
ACL bootstrap, namespaces) talk to ``FixtureAPI`` answering with Nomad API
responses hand-written from its documentation and source (tests/api_fixtures/nomad/,
each naming its source). The checks run
in check mode against the local machine and stop before anything is installed.
"""

from __future__ import annotations

import stat
from pathlib import Path

import hcl2
import pytest
from helpers.ansible import PlayResult, inventory, run_playbook
from helpers.fixture_api import FixtureAPI

ROOT = Path(__file__).resolve().parents[1]
SECRET_ID = "3f4a0fcd-7c42-773c-25db-2d31ba0c05fe"  # tests/api_fixtures/nomad/acl_bootstrap.yaml

API_PLAY = [
    {
        "name": "Run the nomad role's API steps.",
        "hosts": "nomad_servers",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Bootstrap ACLs and manage namespaces.",
                "ansible.builtin.include_role": {
                    "name": "twin.cluster.nomad",
                    "tasks_from": "api.yml",
                },
            }
        ],
    }
]

MAIN_PLAY = [
    {
        "name": "Run the whole nomad role.",
        "hosts": "all",
        "gather_facts": False,
        "roles": [{"role": "twin.cluster.nomad"}],
    }
]

NAMESPACES = [
    {"name": "llm", "description": "LLM experts"},
    {
        "name": "assistant",
        "description": "Voice assistant and its memory",
        "meta": {"owner": "twin", "tier": 1},
    },
]


def run_play(
    workdir: Path, play: list, hosts: dict[str, list[str]], variables: dict, check: bool = False
) -> PlayResult:
    """Run ``play`` on local-connection hosts grouped as ``hosts`` with ``variables``."""
    names = [name for members in hosts.values() for name in members]
    return run_playbook(
        play,
        inventory(hosts, local=names),
        extra_vars=variables,
        check=check,
        workdir=workdir,
    )


def api_vars(api: FixtureAPI, creds: Path, **extra: object) -> dict:
    return {
        "nomad_api_addr": api.url,
        "nomad_credentials_dir": str(creds),
        "nomad_namespaces": NAMESPACES,
        "nomad_leader_wait_retries": 3,
        **extra,
    }


def run_api(tmp_path: Path, variables: dict) -> PlayResult:
    return run_play(tmp_path, API_PLAY, {"nomad_servers": ["nomad1"]}, variables)


ALL_NAMESPACE_FIXTURES = [
    "status_leader",
    "acl_bootstrap",
    "namespace_llm_read",
    "namespace_llm_write",
    "namespace_assistant_read",
    "namespace_assistant_write",
]


def test_first_run_bootstraps_acls_and_creates_namespaces_second_run_changes_nothing(
    tmp_path: Path,
):
    creds = tmp_path / "credentials"
    with FixtureAPI("nomad", ALL_NAMESPACE_FIXTURES) as api:
        first = run_api(tmp_path, api_vars(api, creds))
        assert first.returncode == 0, first.output
        token_file = creds / "nomad-bootstrap.token"
        assert token_file.read_text().strip() == SECRET_ID
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert len(api.requests_to("POST", "/v1/acl/bootstrap")) == 1
        [llm] = api.requests_to("POST", "/v1/namespace/llm")
        [assistant] = api.requests_to("POST", "/v1/namespace/assistant")
        assert llm.json() == {"Name": "llm", "Description": "LLM experts", "Meta": {}}
        assert assistant.json() == {
            "Name": "assistant",
            "Description": "Voice assistant and its memory",
            "Meta": {"owner": "twin", "tier": "1"},
        }
        assert llm.header("X-Nomad-Token") == assistant.header("X-Nomad-Token") == SECRET_ID
        assert first.changed >= 3  # bootstrap + two namespace writes
        assert SECRET_ID not in first.output, "the management token was printed"
        # The leader is asked again until raft answers with an address.
        assert len(api.requests_to("GET", "/v1/status/leader")) == 2

        second = run_api(tmp_path, api_vars(api, creds))
        assert second.returncode == 0, second.output
        assert second.changed == 0, second.output
        assert len(api.requests_to("POST", "/v1/acl/bootstrap")) == 1
        assert len(api.requests_to("POST", "/v1/namespace/llm")) == 1
        assert len(api.requests_to("POST", "/v1/namespace/assistant")) == 1
        reads = api.requests_to("GET", "/v1/namespace/llm")
        assert [r.header("X-Nomad-Token") for r in reads] == [SECRET_ID, SECRET_ID]
        assert not api.unmatched, api.unmatched


def test_namespace_with_a_different_description_is_updated(tmp_path: Path):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "nomad-bootstrap.token").write_text(SECRET_ID + "\n")
    fixtures = ["status_leader", "namespace_llm_read_outdated", "namespace_llm_write"]
    with FixtureAPI("nomad", fixtures) as api:
        result = run_api(tmp_path, api_vars(api, creds, nomad_namespaces=NAMESPACES[:1]))
    assert result.returncode == 0, result.output
    assert result.changed == 1, result.output
    [write] = api.requests_to("POST", "/v1/namespace/llm")
    assert write.json()["Description"] == "LLM experts"
    assert not api.requests_to("POST", "/v1/acl/bootstrap"), "a saved token must be reused"
    assert not api.unmatched, api.unmatched


def test_bootstrapped_cluster_without_the_saved_token_stops_and_says_how_to_fix(tmp_path: Path):
    creds = tmp_path / "credentials"
    with FixtureAPI("nomad", ["status_leader", "acl_bootstrap_done"]) as api:
        result = run_api(tmp_path, api_vars(api, creds))
    assert result.returncode != 0
    assert "ACL bootstrap already done" in result.output
    assert "nomad_acl_bootstrap_token_file" in result.output
    assert not (creds / "nomad-bootstrap.token").exists()


def test_token_the_cluster_does_not_know_stops_on_the_namespace_read(tmp_path: Path):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "nomad-bootstrap.token").write_text("not-this-clusters-token\n")
    with FixtureAPI("nomad", ["status_leader", "namespace_llm_read_forbidden"]) as api:
        result = run_api(tmp_path, api_vars(api, creds, nomad_namespaces=NAMESPACES[:1]))
    assert result.returncode != 0
    assert "status 403 ACL token not found" in result.output
    assert str(creds / "nomad-bootstrap.token") in result.output
    assert not api.requests_to("POST", "/v1/namespace/llm")


def test_cluster_without_a_leader_stops_before_touching_acls(tmp_path: Path):
    creds = tmp_path / "credentials"
    with FixtureAPI("nomad", ["status_leader_electing"]) as api:
        url = api.url
        result = run_api(tmp_path, api_vars(api, creds, nomad_leader_wait_retries=1))
    assert result.returncode != 0
    assert f"No Nomad leader at {url}" in result.output
    assert [r.path for r in api.requests] == ["/v1/status/leader"] * 2


# --- checks that stop the role before it touches the machine ----------------


def check_vars(**extra: object) -> dict:
    return {
        "nomad_advertise_address": "127.0.0.1",
        "nomad_credentials_dir": "/nonexistent",
        **extra,
    }


@pytest.mark.parametrize(
    ("servers", "extra", "message"),
    [
        (
            ["s1", "s2"],
            {},
            "nomad_bootstrap_expect is 2 with 2 host(s) in 'nomad_servers'. Raft needs an odd",
        ),
        (
            ["s1", "s2", "s3"],
            {"nomad_bootstrap_expect": 5},
            "nomad_bootstrap_expect is 5 with 3 host(s)",
        ),
        (
            ["s1"],
            {"nomad_host_volumes": [{"name": "models", "path": "relative/models"}]},
            "nomad_host_volumes needs a unique name",
        ),
        (
            ["s1"],
            {"nomad_namespaces": [{"name": "llm experts"}]},
            "nomad_namespaces names must be unique and made of letters, digits and '-'",
        ),
        (["s1"], {"nomad_advertise_address": ""}, "nomad_advertise_address is '' on s1"),
        (
            ["s1"],
            {"nomad_chroot_env": {"/usr": "/usr", "opt/prima.cpp": "/opt/prima.cpp"}},
            "nomad_chroot_env maps absolute host paths to absolute paths inside the task",
        ),
    ],
    ids=[
        "even-server-count",
        "expect-above-servers",
        "relative-volume",
        "bad-namespace",
        "no-address",
        "relative-chroot-path",
    ],
)
def test_validation_stops_with_a_message_naming_the_variable(
    tmp_path: Path, servers: list[str], extra: dict, message: str
):
    result = run_play(
        tmp_path, MAIN_PLAY, {"nomad_servers": servers}, check_vars(**extra), check=True
    )
    assert result.returncode != 0
    assert message in result.output, result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"nomad_install_method": "snap"},
            "value of nomad_install_method must be one of: release, apt",
        ),
        ({"nomad_servers_are_clients": "sometimes"}, "nomad_servers_are_clients"),
        (
            {"nomad_ports": {"http": "web", "rpc": 4647, "serf": 4648}},
            "argument 'http' is of type str found in 'nomad_ports'",
        ),
        ({"nomad_host_volumes": [{"name": "models"}]}, "missing required arguments: path"),
        ({"nomad_chroot_env": ["/usr"]}, "argument 'nomad_chroot_env' is of type list"),
    ],
    ids=[
        "unknown-install-method",
        "not-a-bool",
        "port-not-int",
        "volume-without-path",
        "chroot-env-not-a-dict",
    ],
)
def test_argument_specs_refuse_wrong_types_and_choices(tmp_path: Path, extra: dict, message: str):
    result = run_play(
        tmp_path, MAIN_PLAY, {"nomad_servers": ["s1"]}, check_vars(**extra), check=True
    )
    assert result.returncode != 0
    assert "Validating arguments against arg spec" in result.output
    assert message in result.output, result.output


# --- the role's templates, rendered by Ansible for server-only and client-only hosts ---

RENDER_PLAY = [
    {
        "name": "Render the nomad role's templates to a folder.",
        "hosts": "all",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Load the role's defaults and derived vars.",
                "ansible.builtin.include_vars": {"file": f"{ROOT}/roles/nomad/{{{{ f }}}}"},
                "loop_control": {"loop_var": "f"},
                "loop": ["defaults/main.yml", "vars/main.yml"],
            },
            {
                "name": "Set what earlier tasks of the role would have set.",
                "ansible.builtin.set_fact": {
                    "_nomad_advertise_address": "{{ nomad_advertise_address }}",
                    "_nomad_gossip_key": "{{ 'k' * 43 }}=",
                },
            },
            {
                "name": "Choose the Consul token as the role does.",
                "ansible.builtin.include_tasks": f"{ROOT}/roles/nomad/tasks/consul_token.yml",
            },
            {
                "name": "Render the templates.",
                "ansible.builtin.template": {
                    "src": f"{ROOT}/roles/nomad/templates/{{{{ t }}}}.j2",
                    "dest": "{{ out_dir }}/{{ inventory_hostname }}-{{ t }}",
                    "mode": "0644",
                },
                "loop_control": {"loop_var": "t"},
                "loop": ["nomad.hcl", "nomad.service"],
            },
        ],
    }
]


def test_server_only_and_client_only_hosts_get_only_their_blocks_and_run_users(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    variables = {
        "out_dir": str(out),
        "nomad_advertise_address": "10.0.0.11",
        "nomad_servers_are_clients": False,
        "nomad_consul_enable": False,
    }
    result = run_play(
        tmp_path,
        RENDER_PLAY,
        {"nomad_servers": ["s1", "s2", "s3"], "workers": ["c1"]},
        variables,
    )
    assert result.returncode == 0, result.output
    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    server = hcl2.loads((out / "s1-nomad.hcl").read_text(), serialization_options=options)
    client = hcl2.loads((out / "c1-nomad.hcl").read_text(), serialization_options=options)
    assert "client" not in server
    assert server["server"][0]["bootstrap_expect"] == 3
    assert server["server"][0]["server_join"][0]["retry_join"] == ["10.0.0.11"] * 3
    assert "server" not in client
    assert client["client"][0]["server_join"][0]["retry_join"] == ["10.0.0.11"] * 3
    assert client["client"][0]["options"] == {"driver.allowlist": "exec"}
    assert "consul" not in server
    assert "consul" not in client
    assert "plugin" not in client
    server_unit = (out / "s1-nomad.service").read_text()
    client_unit = (out / "c1-nomad.service").read_text()
    assert "User=nomad\n" in server_unit
    assert "OOMScoreAdjust=-1000" in server_unit
    assert "User=root\n" in client_unit
    assert "OOMScoreAdjust" not in client_unit
    assert "Description=Nomad agent (server)" in server_unit


def test_chroot_env_is_rendered_on_clients_only_and_left_out_when_empty(tmp_path: Path):
    chroot_env = {"/usr": "/usr", "/opt/prima.cpp": "/opt/prima.cpp", "/bin": "/bin"}
    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    rendered = {}
    for label, value in (("set", chroot_env), ("empty", {})):
        out = tmp_path / label
        out.mkdir()
        (tmp_path / f"play-{label}").mkdir()
        variables = {
            "out_dir": str(out),
            "nomad_advertise_address": "10.0.0.11",
            "nomad_servers_are_clients": False,
            "nomad_chroot_env": value,
        }
        result = run_play(
            tmp_path / f"play-{label}",
            RENDER_PLAY,
            {"nomad_servers": ["s1"], "workers": ["c1"]},
            variables,
        )
        assert result.returncode == 0, result.output
        rendered[label] = {host: (out / f"{host}-nomad.hcl").read_text() for host in ("s1", "c1")}
    client = hcl2.loads(rendered["set"]["c1"], serialization_options=options)
    assert client["client"][0]["chroot_env"] == chroot_env
    # nomad fmt style: keys sorted, the equals signs aligned.
    assert (
        "  chroot_env = {\n"
        '    "/bin"           = "/bin"\n'
        '    "/opt/prima.cpp" = "/opt/prima.cpp"\n'
        '    "/usr"           = "/usr"\n'
        "  }\n"
    ) in rendered["set"]["c1"]
    assert "chroot_env" not in rendered["set"]["s1"]
    assert "chroot_env" not in rendered["empty"]["c1"]
    empty_client = hcl2.loads(rendered["empty"]["c1"], serialization_options=options)
    assert "chroot_env" not in empty_client["client"][0]


def test_consul_token_defaults_to_the_one_the_consul_role_saved_for_servers_and_clients(
    tmp_path: Path,
):
    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    server_token = "1d2c9a4e-8f0b-4c3d-9e5f-6a7b8c9d0e1f"
    client_token = "2e3d0b5f-9a1c-4d4e-8f60-7b8c9d0e1f2a"

    def render(label: str, saved: dict[str, str], extra: dict) -> dict[str, dict]:
        # The inventory (hosts.yml) sits in play_dir, so <inventory_dir>/.credentials is there.
        play_dir = tmp_path / label
        out = play_dir / "out"
        out.mkdir(parents=True)
        credentials = play_dir / ".credentials"
        credentials.mkdir(mode=0o700)
        for kind, token in saved.items():
            (credentials / f"consul-nomad-{kind}.token").write_text(token + "\n")
        variables = {
            "out_dir": str(out),
            "nomad_advertise_address": "10.0.0.11",
            "nomad_servers_are_clients": False,
            **extra,
        }
        result = run_play(
            play_dir, RENDER_PLAY, {"nomad_servers": ["s1"], "workers": ["c1"]}, variables
        )
        assert result.returncode == 0, result.output
        for token in saved.values():
            assert token not in result.output
        return {
            host: hcl2.loads((out / f"{host}-nomad.hcl").read_text(), serialization_options=options)
            for host in ("s1", "c1")
        }

    saved = render("saved", {"server": server_token, "client": client_token}, {})
    assert saved["s1"]["consul"][0]["token"] == server_token
    assert saved["c1"]["consul"][0]["token"] == client_token

    by_hand = render(
        "by-hand", {"server": server_token, "client": client_token}, {"nomad_consul_token": "mine"}
    )
    assert by_hand["s1"]["consul"][0]["token"] == "mine"
    assert by_hand["c1"]["consul"][0]["token"] == "mine"

    # No file (ACLs off in Consul, or the consul role not run): no token line.
    none_saved = render("none", {}, {})
    assert "token" not in none_saved["s1"]["consul"][0]
    assert "token" not in none_saved["c1"]["consul"][0]
