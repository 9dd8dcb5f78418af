"""helpers.jobs.render_job writes byte for byte what ansible.builtin.template writes.

One play renders with the real template module, as the roles call it (``src``,
``dest``, ``mode``, every other option at its default), with the same
variables the helper gets: an expert job (``helpers.experts.job_vars``), and a
small template made of what a rendering can get wrong: block whitespace,
indented blocks, backslashes in Jinja strings, ``{% raw %}``, variables that
are templates themselves, ``ansible_managed`` (configured, and set as a
variable).
"""

from __future__ import annotations

from pathlib import Path

from ansible.template import trust_as_template
from helpers.ansible import run_playbook
from helpers.experts import job_vars, make_expert
from helpers.jobs import JOBS_DIR, render_job

EDGES = """\
{{ ansible_managed | comment }}
{% for name in names %}
  {% if name %}
item "{{ name }}" {
  path = "{{ base }}/{{ name }}"
  tab  = "{{ 'a\\tb' }}"
}
  {% endif %}
{% endfor %}
{% raw %}template = "{{ env "NOMAD_TASK_DIR" }}"{% endraw %}

last = true
"""

# "base" is a template over "root", as a role's defaults often are.
EDGE_VARS = {"names": ["a", "", "b"], "root": "/srv", "base": "{{ root }}/data"}
OWN_MANAGED = "Written by the twin tests"


def template_task(src: Path, dest: str, **task_vars: object) -> dict[str, object]:
    task: dict[str, object] = {
        "name": f"Render {dest}.",
        "ansible.builtin.template": {
            "src": str(src),
            "dest": "{{ out }}/" + dest,
            "mode": "0644",
        },
    }
    if task_vars:
        task["vars"] = task_vars
    return task


def test_helper_renders_byte_for_byte_what_the_template_module_writes(tmp_path: Path):
    edges = tmp_path / "edges.j2"
    edges.write_text(EDGES)
    expert = job_vars(
        make_expert(world=3, api_key_variable="nomad/jobs/expert-general", layer_window=[8, 8, 14])
    )
    out = tmp_path / "out"
    out.mkdir()
    play = [
        {
            "name": "Render with ansible.builtin.template.",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                template_task(JOBS_DIR / "expert.nomad.hcl.j2", "expert.nomad.hcl", **expert),
                template_task(edges, "edges"),
                template_task(edges, "edges-own-managed", ansible_managed=OWN_MANAGED),
            ],
        }
    ]
    result = run_playbook(
        play,
        "localhost,",
        "-c",
        "local",
        extra_vars={**EDGE_VARS, "out": str(out)},
        workdir=tmp_path,
    )
    assert result.returncode == 0, result.output

    edge_vars = {**EDGE_VARS, "base": trust_as_template(EDGE_VARS["base"])}
    rendered = {
        "expert.nomad.hcl": render_job("expert.nomad.hcl.j2", expert),
        "edges": render_job(edges, edge_vars),
        "edges-own-managed": render_job(edges, {**edge_vars, "ansible_managed": OWN_MANAGED}),
    }
    for name, text in rendered.items():
        assert text.encode() == (out / name).read_bytes(), name
