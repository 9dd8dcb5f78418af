"""The pipecat_app role as its job tests see it: its variables, its checks and its secrets.

The prompt-evolve and vision job tests render their jobs from the same role
(or from its Nomad Variable), so these live here rather than in one test file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from helpers.ansible import PlayResult, inventory, run_playbook
from helpers.jobs import role_vars as helpers_role_vars
from helpers.tls import make_ca

ROOT = Path(__file__).resolve().parents[2]
APP_VERSION = tomllib.loads((ROOT / "apps" / "pipecat_app" / "pyproject.toml").read_text())[
    "project"
]["version"]
SOURCE_HASH = "0123456789abcdef" * 4
RELEASE = f"{APP_VERSION}-{SOURCE_HASH[:12]}"
# The ids files.yml finds for the task's user on every host.
OWNER = {"uid": 990, "gid": 991}
ACCESS_TOKEN = "Qm9sZC1hY2Nlc3MtdG9rZW4tZm9yLXRoZS10ZXN0cw"
CONSUL_TOKEN = "5d0e8a71-3c2b-4f96-8a17-e9b4c6d2f035"
VISION_TOKEN = "VmlzaW9uLXNlcnZpY2UtdG9rZW4tZm9yLXRlc3Rz"
VARIABLE = "nomad/jobs/pipecat-app"


def secrets_variable(tmp_path: Path) -> dict[str, dict[str, str]]:
    """The job's Nomad Variable as the role writes it, with a real certificate, key and CA."""
    folder = tmp_path / "issued"
    folder.mkdir(exist_ok=True)
    certs = make_ca(folder)
    items = {
        "access_token": ACCESS_TOKEN,
        "consul_token": CONSUL_TOKEN,
        "vision_token": VISION_TOKEN,
        "tls_cert": certs.cert.read_text(),
        "tls_key": certs.key.read_text(),
        "ca_cert": certs.ca.read_text(),
    }
    return {VARIABLE: items}


def role_vars(hostvars: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The role's defaults and vars plus what Ansible provides, with ``overrides`` on top.

    ``_pipecat_app_version`` (a file lookup in vars/main.yml) and the source
    hash (computed by wheelhouse.yml) are given, as after the wheelhouse step.
    """
    if hostvars is None:
        hostvars = {"node1": {"_pipecat_app_ids": OWNER}, "node2": {"_pipecat_app_ids": OWNER}}
    defaults: dict[str, Any] = {
        "playbook_dir": "/srv/playbooks",
        "inventory_dir": "/srv/inventory",
        "groups": {"pipecat_app_hosts": list(hostvars)},
        "hostvars": hostvars,
        "_pipecat_app_version": APP_VERSION,
        "_pipecat_app_source_hash": SOURCE_HASH,
    }
    return helpers_role_vars("pipecat_app", **{**defaults, **overrides})


def run_validate(tmp_path: Path, groups: dict[str, list[str]], **role_vars_: Any) -> PlayResult:
    """Include the role's validate.yml on localhost with ``role_vars_`` as play vars.

    ``groups`` are the inventory's groups (their hosts have no vars);
    localhost runs the play.
    """
    play = [
        {
            "name": "Run the pipecat_app role's checks.",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": role_vars_,
            "tasks": [
                {
                    "name": "Check the settings.",
                    "ansible.builtin.include_role": {
                        "name": "twin.cluster.pipecat_app",
                        "tasks_from": "validate.yml",
                    },
                }
            ],
        }
    ]
    return run_playbook(play, inventory(groups, local=["localhost"]), workdir=tmp_path)
