"""Render the Nomad job templates under ``jobs/`` as Ansible does, and read them back.

:func:`render_job` does what ``ansible.builtin.template`` does with a template
(ansible-core's ``plugins/action/template.py``), through ansible-core's public
Templar: the module's defaults (``trim_blocks=True``, ``lstrip_blocks=False``,
``\\n`` newlines), ``\\`` kept as written, and ``ansible_managed`` as the
module sets it. What a test renders is byte for byte what a role writes to
disk for the same variables; ``tests/jobs/test_jobs_helper.py`` renders the
jobs with the roles' own tasks and compares.

Of the variables the module adds, only ``ansible_managed`` is set: it is the
one the job templates use, and ansible-core asks code outside it to set these
itself (its ``generate_ansible_template_vars`` is private, the public alias is
deprecated). A template that starts using another one (``template_host``,
``template_path``, ...) fails here as undefined instead of rendering something
the role would not. Includes are looked up next to the template only (the
module also searches the role's and the play's folders); the job templates
include nothing.

:func:`role_vars` loads a role's defaults and vars as Ansible does (strings
are templates, resolved lazily), so a job can be rendered with exactly the
variables a role hands its template, and :func:`evaluate` computes one of
those values (``_prima_cpp_expert_defaults``) through the role's own
expressions.

:func:`parse_job` reads the result with python-hcl2 (quotes stripped, blocks
as plain dicts); :class:`Job` and :class:`Block` walk it by HCL block type and
label, so tests say ``job.group("rank-0").task("server").config["args"]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import yaml
from ansible import constants as C
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[2]
JOBS_DIR = REPO / "jobs"
ROLES_DIR = REPO / "roles"

# What ansible-playbook does once at start: without it a role variable that
# calls a lookup (``lookup('ansible.builtin.file', ...)``) cannot be
# evaluated here as Ansible evaluates it.
init_plugin_loader()

_HCL_OPTIONS = hcl2.SerializationOptions(
    with_comments=False,
    explicit_blocks=False,
    preserve_heredocs=False,
    strip_string_quotes=True,
)


def _ansible_managed() -> str:
    """``ansible_managed`` as the template module sets it: the configured string.

    The setting's ``{host}``/``{uid}``/``{file}`` fields and strftime codes
    (deprecated in ansible-core 2.19) would need the module's other variables,
    so they are refused rather than rendered differently.
    """
    managed = str(C.config.get_config_value("DEFAULT_MANAGED_STR"))
    if "{" in managed or "%" in managed:
        raise ValueError(
            f"ansible_managed = {managed!r} in ansible.cfg uses fields render_job does not fill;"
            " set the ansible_managed variable instead"
        )
    return managed


def render_job(template: str | Path, variables: Mapping[str, Any]) -> str:
    """Render ``jobs/<template>`` (or a path) with ``variables`` as the template module would.

    A variable ``ansible_managed`` wins over the configured one, as in the module.
    """
    source = Path(template)
    if not source.is_absolute():
        source = JOBS_DIR / source
    loader = DataLoader()
    loader.set_basedir(str(source.parent))
    task_vars: dict[str, Any] = {"ansible_managed": _ansible_managed(), **variables}
    searchpath = [str(source.parent / "templates"), str(source.parent)]
    templar = Templar(loader=loader).copy_with_new_env(
        searchpath=searchpath, available_variables=task_vars
    )
    overrides = {"trim_blocks": True, "lstrip_blocks": False, "newline_sequence": "\n"}
    text = trust_as_template(source.read_text(encoding="utf-8"))
    rendered = templar.template(text, escape_backslashes=False, overrides=overrides)
    return "" if rendered is None else str(rendered)


def _trusted(value: Any) -> Any:
    """Mark strings from a role's YAML as templates, as Ansible does for role vars."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value


def role_vars(role: str, **overrides: Any) -> dict[str, Any]:
    """``roles/<role>``'s defaults/main.yml and vars/main.yml, with ``overrides`` on top.

    ``role_path`` is set; what the inventory and play provide (``hostvars``,
    ``groups``, ``playbook_dir``, ``inventory_dir``, the user's settings) is
    up to the caller.
    """
    path = ROLES_DIR / role
    variables: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        file = path / part / "main.yml"
        if file.exists():
            variables.update(_trusted(yaml.safe_load(file.read_text())))
    variables["role_path"] = str(path)
    variables.update(overrides)
    return variables


def evaluate(expression: str, variables: Mapping[str, Any]) -> Any:
    """The value of one Jinja expression (``"{{ pipecat_app_namespace }}"``) over ``variables``."""
    templar = Templar(loader=DataLoader(), variables=dict(variables))
    return templar.template(trust_as_template(expression))


def parse_hcl(text: str) -> dict[str, Any]:
    """HCL2 text -> plain dicts and lists (strings unquoted, no comments)."""
    return hcl2.loads(text, serialization_options=_HCL_OPTIONS)


@dataclass(frozen=True)
class Block:
    """One HCL block body with lookups by nested block type and label."""

    body: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default)

    def blocks(self, kind: str) -> list[Block]:
        """Unlabelled nested blocks of one type (``network``, ``check``...)."""
        return [Block(b) for b in self.body.get(kind, [])]

    def block(self, kind: str) -> Block:
        """The one nested block of this type; fails if there are none or several."""
        found = self.blocks(kind)
        if len(found) != 1:
            raise KeyError(f"expected one {kind!r} block, found {len(found)}")
        return found[0]

    def labelled(self, kind: str) -> dict[str, Block]:
        """Labelled nested blocks of one type (``group "x"``, ``port "http"``) by label."""
        out: dict[str, Block] = {}
        for entry in self.body.get(kind, []):
            for label, body in entry.items():
                if label in out:
                    raise KeyError(f"duplicate {kind} {label!r}")
                out[label] = Block(body)
        return out


@dataclass(frozen=True)
class Job(Block):
    """A parsed job file: its id and the job block."""

    id: str = ""

    def groups(self) -> dict[str, Block]:
        return self.labelled("group")

    def group(self, name: str) -> Block:
        return self.groups()[name]

    def tasks(self) -> Iterator[tuple[str, str, Block]]:
        """Every ``(group, task, body)`` in file order."""
        for group_name, group in self.groups().items():
            for task_name, task in group.labelled("task").items():
                yield group_name, task_name, task


def parse_job(text: str) -> Job:
    """Parse a rendered job file that holds exactly one ``job`` block."""
    jobs = Block(parse_hcl(text)).labelled("job")
    if len(jobs) != 1:
        raise ValueError(f"expected one job block, found {sorted(jobs)}")
    ((job_id, body),) = jobs.items()
    return Job(body.body, id=job_id)
