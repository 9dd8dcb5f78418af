"""One switch, twin_tls, turns TLS on (the default) or off for Consul and Nomad alike.

The consul and nomad roles' templates are rendered by the real
ansible-playbook from the roles' own defaults and vars, for a server and a
client, with twin_tls unset, true and false, and parsed with python-hcl2;
the addresses the roles' API calls use are read from the same variables.
(molecule/consul and molecule/nomad converge with TLS on and check the
certificates on the nodes.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest
from helpers.ansible import PlayResult, inventory, run_playbook

ROOT = Path(__file__).resolve().parents[1]
HCL = hcl2.SerializationOptions(
    strip_string_quotes=True, explicit_blocks=False, with_comments=False
)


def load_role(role: str) -> dict[str, Any]:
    return {
        "name": f"Load the {role} role's defaults and derived vars.",
        "ansible.builtin.include_vars": {"file": f"{ROOT}/roles/{role}/{{{{ f }}}}"},
        "loop_control": {"loop_var": "f"},
        "loop": ["defaults/main.yml", "vars/main.yml"],
    }


def render(role: str, template: str) -> dict[str, Any]:
    return {
        "name": f"Render {template}.",
        "ansible.builtin.template": {
            "src": f"{ROOT}/roles/{role}/templates/{template}.j2",
            "dest": "{{ out_dir }}/{{ inventory_hostname }}-" + template,
            "mode": "0644",
        },
    }


def show(names: list[str]) -> dict[str, Any]:
    """Print the variables as one JSON line per host, to read them back."""
    values = ", ".join(f'"{n}": {{{{ {n} | to_json }}}}' for n in names)
    return {"name": "Show the API settings.", "ansible.builtin.debug": {"msg": f"API {{{values}}}"}}


CONSUL_PLAY: dict[str, Any] = {
    "name": "Render the consul role's configuration.",
    "hosts": "all",
    "gather_facts": False,
    "tasks": [
        load_role("consul"),
        {
            "name": "Set what earlier tasks of the role would have set.",
            "ansible.builtin.set_fact": {
                "_consul_node_address": "{{ consul_advertise_address }}",
                "_consul_gossip_key": "{{ 'k' * 43 }}=",
                "_consul_agent_token": "00000000-0000-4000-8000-000000000000",
            },
        },
        render("consul", "consul.hcl"),
        show(["consul_tls_enable", "consul_api_url", "_consul_api_ca_file", "_consul_tls_sans"]),
    ],
}

NOMAD_PLAY: dict[str, Any] = {
    "name": "Render the nomad role's configuration.",
    "hosts": "all",
    "gather_facts": False,
    "tasks": [
        load_role("nomad"),
        {
            "name": "Set what earlier tasks of the role would have set.",
            "ansible.builtin.set_fact": {
                "_nomad_advertise_address": "{{ nomad_advertise_address }}",
                "_nomad_gossip_key": "{{ 'k' * 43 }}=",
                "_nomad_consul_token": "",
            },
        },
        render("nomad", "nomad.hcl"),
        show(
            [
                "nomad_tls_enable",
                "nomad_api_addr",
                "_nomad_api_ca_file",
                "nomad_consul_address",
                "_nomad_tls_sans",
            ]
        ),
    ],
}


def run(tmp_path: Path, switch: dict[str, Any]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Render both roles for server s1 and client c1; return their configs and API settings."""
    out = tmp_path / "out"
    out.mkdir()
    result: PlayResult = run_playbook(
        [CONSUL_PLAY, NOMAD_PLAY],
        inventory(
            {"consul_servers": ["s1"], "nomad_servers": ["s1"], "workers": ["c1"]},
            hosts={"s1": {"address": "10.0.0.11"}, "c1": {"address": "10.0.0.21"}},
            local=["s1", "c1"],
        ),
        # Extra vars, as include_vars of the defaults outranks inventory vars.
        extra_vars={
            "out_dir": str(out),
            "consul_bind_address": "{{ address }}",
            "nomad_advertise_address": "{{ address }}",
            **switch,
        },
        workdir=tmp_path,
    )
    assert result.returncode == 0, result.output
    configs = {
        f"{host}-{name}": hcl2.loads(
            (out / f"{host}-{name}.hcl").read_text(), serialization_options=HCL
        )
        for host in ("s1", "c1")
        for name in ("consul", "nomad")
    }
    api: dict[str, dict] = {}
    for host, line in re.findall(r'ok: \[(\w+)\] => \{\n\s+"msg": "API (.*)"\n', result.stdout):
        api.setdefault(host, {}).update(json.loads(json.loads(f'"{line}"')))
    assert set(api) == {"s1", "c1"}, result.stdout
    return configs, api


@pytest.mark.parametrize("switch", [{}, {"twin_tls": True}], ids=["default", "twin_tls-true"])
def test_tls_is_on_by_default_for_both_with_https_apis_and_mutual_rpc(
    tmp_path: Path, switch: dict[str, Any]
):
    configs, api = run(tmp_path, switch)
    for host, role in (("s1", "server"), ("c1", "client")):
        consul = configs[f"{host}-consul"]
        tls = consul["tls"][0]
        assert tls["defaults"][0]["ca_file"] == "/etc/consul.d/tls/ca.pem"
        assert tls["defaults"][0]["verify_outgoing"] is True
        assert tls["internal_rpc"][0] == {"verify_incoming": True, "verify_server_hostname": True}
        assert tls["https"][0] == {"verify_incoming": False}
        assert consul["ports"][0]["https"] == 8501
        assert consul["ports"][0]["http"] == -1
        assert api[host]["consul_api_url"] == "https://127.0.0.1:8501"
        assert api[host]["_consul_api_ca_file"] == "/etc/consul.d/tls/ca.pem"
        address = "10.0.0.11" if host == "s1" else "10.0.0.21"
        assert set(api[host]["_consul_tls_sans"]) >= {
            f"DNS:{role}.dc1.consul",
            f"DNS:{host}",
            f"IP:{address}",
            "DNS:localhost",
            "IP:127.0.0.1",
        }

        nomad = configs[f"{host}-nomad"]
        assert nomad["tls"][0]["http"] is True
        assert nomad["tls"][0]["rpc"] is True
        assert nomad["tls"][0]["verify_server_hostname"] is True
        assert nomad["consul"][0] == {
            "address": "127.0.0.1:8501",
            "ssl": True,
            "verify_ssl": True,
            "ca_file": "/etc/twin-cluster/ca.pem",
        }
        assert api[host]["nomad_api_addr"] == "https://127.0.0.1:4646"
        assert api[host]["_nomad_api_ca_file"] == "/etc/nomad.d/tls/ca.pem"
        assert f"IP:{address}" in api[host]["_nomad_tls_sans"]
        assert f"DNS:{host}" in api[host]["_nomad_tls_sans"]
    # Servers also run work here (nomad_servers_are_clients): both names.
    assert {"DNS:server.global.nomad", "DNS:client.global.nomad"} <= set(
        api["s1"]["_nomad_tls_sans"]
    )
    assert "DNS:server.global.nomad" not in api["c1"]["_nomad_tls_sans"]


def test_twin_tls_false_turns_tls_off_for_consul_nomad_and_their_api_calls(tmp_path: Path):
    configs, api = run(tmp_path, {"twin_tls": False})
    for host in ("s1", "c1"):
        consul = configs[f"{host}-consul"]
        assert "tls" not in consul
        assert consul["ports"][0]["http"] == 8500
        assert consul["ports"][0]["https"] == -1
        assert api[host]["consul_tls_enable"] is False
        assert api[host]["consul_api_url"] == "http://127.0.0.1:8500"
        assert api[host]["_consul_api_ca_file"] == ""

        nomad = configs[f"{host}-nomad"]
        assert "tls" not in nomad
        assert nomad["consul"][0] == {"address": "127.0.0.1:8500"}
        assert api[host]["nomad_tls_enable"] is False
        assert api[host]["nomad_api_addr"] == "http://127.0.0.1:4646"
        assert api[host]["_nomad_api_ca_file"] == ""
        assert api[host]["nomad_consul_address"] == "127.0.0.1:8500"


def test_each_role_can_still_be_switched_on_its_own(tmp_path: Path):
    configs, api = run(tmp_path, {"twin_tls": False, "consul_tls_enable": True})
    assert "tls" in configs["s1-consul"]
    assert api["s1"]["consul_api_url"] == "https://127.0.0.1:8501"
    assert "tls" not in configs["s1-nomad"]
    assert api["s1"]["nomad_api_addr"] == "http://127.0.0.1:4646"
