"""Running the repo's roles with the real ansible-playbook of this environment.

The roles come from ``roles/`` (and as ``twin.cluster.*`` from the collection
link) and the settings from the repo's ansible.cfg. A test states its run in
one call::

    result = run_playbook(
        [{"hosts": "nomad_servers", "roles": [{"role": "twin.cluster.nomad"}]}],
        inventory({"nomad_servers": ["s1", "s2", "s3"]}, local=["s1", "s2", "s3"]),
        extra_vars={"nomad_advertise_address": "127.0.0.1"},
        check=True,
        workdir=tmp_path,
    )
    assert result.returncode != 0 and "nomad_bootstrap_expect" in result.output

Plays and inventories given as data are written to ``workdir`` as
``playbook.yml`` and ``hosts.yml``, so ``playbook_dir`` and ``inventory_dir``
(where the roles keep ``.credentials``) are ``workdir``. An inventory kept as
a folder, as users keep one, is written with :func:`write_inventory` and
passed as that folder. Extra vars go on the command line as JSON, with extra
vars' precedence; their strings are templates, as in a vars file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]

# The host vars of a host that runs on this machine with this interpreter.
LOCAL: Mapping[str, str] = {
    "ansible_connection": "local",
    "ansible_python_interpreter": sys.executable,
}

_RECAP = re.compile(r"^(\S+)[ \t]+:[ \t]+((?:\w+=\d+[ \t]*)+)$", re.MULTILINE)


class PlayResult(subprocess.CompletedProcess[str]):
    """An ansible-playbook run: the process's result, its whole output and its recap."""

    @property
    def output(self) -> str:
        """stdout then stderr: the tasks' messages and Ansible's warnings and errors."""
        return self.stdout + self.stderr

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP by host: ``{"s1": {"ok": 3, "changed": 1, "failed": 0, ...}}``."""
        return {
            host: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counts)}
            for host, counts in _RECAP.findall(self.stdout)
        }

    @property
    def changed(self) -> int:
        """Tasks changed, summed over the hosts of the recap; fails if there is no recap."""
        recap = self.recap
        assert recap, f"no PLAY RECAP in output:\n{self.output}"
        return sum(counts["changed"] for counts in recap.values())


def ansible_env() -> dict[str, str]:
    """The environment: this repo's config and roles, no colour, this Python."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }


def tool(name: str) -> str:
    """An Ansible command of this environment (``ansible-playbook``, ``ansible-inventory``)."""
    return str(Path(sys.executable).parent / name)


def inventory(
    groups: Mapping[str, Iterable[str]] | None = None,
    hosts: Mapping[str, Mapping[str, Any]] | None = None,
    local: Iterable[str] = (),
) -> dict[str, Any]:
    """An inventory as data, in Ansible's YAML inventory shape.

    ``groups`` maps each group to its hosts' names, ``hosts`` gives hosts their
    vars, and the ``local`` hosts run on this machine (:data:`LOCAL`). A host
    named only in a group has no vars.
    """
    all_hosts: dict[str, dict[str, Any]] = {name: dict(v) for name, v in (hosts or {}).items()}
    for name in local:
        all_hosts[name] = {**all_hosts.get(name, {}), **LOCAL}
    children = {
        group: {"hosts": dict.fromkeys(members)} for group, members in (groups or {}).items()
    }
    return {"all": {"hosts": all_hosts, "children": children}}


def run_playbook(
    playbook: Path | Sequence[Mapping[str, Any]],
    inventory: str | Path | Mapping[str, Any],
    *args: str,
    extra_vars: Mapping[str, Any] | None = None,
    check: bool = False,
    workdir: Path | None = None,
    timeout: int = 300,
) -> PlayResult:
    """``ansible-playbook -i inventory [args] playbook`` from the repo root; failing runs return.

    ``playbook`` is a file or a list of plays; ``inventory`` a file, a
    directory, a host list (``"localhost,"``) or an inventory as data (see
    :func:`inventory`). Data is written to ``workdir``. ``check`` runs in
    check mode; ``args`` are passed as they are.
    """
    if not isinstance(playbook, Path):
        playbook = _write(_workdir(workdir, "playbook.yml"), "playbook.yml", list(playbook))
    if isinstance(inventory, Mapping):
        inventory = write_inventory(_workdir(workdir, "hosts.yml"), inventory)
    options = list(args)
    if extra_vars is not None:
        options += ["-e", json.dumps(extra_vars)]
    if check:
        options.append("--check")
    proc = subprocess.run(
        [tool("ansible-playbook"), "-i", str(inventory), *options, str(playbook)],
        capture_output=True,
        text=True,
        env=ansible_env(),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    return PlayResult(proc.args, proc.returncode, proc.stdout, proc.stderr)


def write_inventory(folder: Path, inventory: Mapping[str, Any]) -> Path:
    """Write an inventory given as data (see :func:`inventory`) to ``folder/hosts.yml``.

    Returns that file. ``folder`` is made if missing; pass it to
    :func:`run_playbook` as the inventory to run with an inventory folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    return _write(folder, "hosts.yml", dict(inventory))


def _workdir(workdir: Path | None, name: str) -> Path:
    if workdir is None:
        raise ValueError(f"a playbook or inventory given as data needs a workdir for {name}")
    return workdir


def _write(folder: Path, name: str, data: object) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
