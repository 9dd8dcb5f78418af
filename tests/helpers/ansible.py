"""Running the repo's roles with the real ansible-playbook of this environment.

The roles come from ``roles/`` and the settings from the repo's ansible.cfg;
hosts run with ``ansible_connection=local`` on this interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


def run_playbook(
    playbook: Path, inventory: str | Path, *args: str, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook -i inventory [args] playbook`` from the repo root; never raises."""
    return subprocess.run(
        [tool("ansible-playbook"), "-i", str(inventory), *args, str(playbook)],
        capture_output=True,
        text=True,
        env=ansible_env(),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
