"""The nomad_job role, run by the real ansible-playbook against Nomad's API over HTTPS.

No Nomad runs here: the API is the shared fixture server
(``helpers.fixture_api``) behind a TLS front whose certificate is signed by
a CA of the test's own (``helpers.tls``), so a submission gets through only
when the role hands ``nomad_job_ca_path`` to every request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.ansible import PlayResult, inventory, run_playbook
from helpers.fixture_api import FixtureAPI
from helpers.tls import CertFiles, make_ca, tls_front

TOKEN = "5e0c1d2a-4b3f-4a6e-9c7d-8f1e2d3c4b5a"

# Renders the job of the module's hello fixtures (tests/api_fixtures/nomad_jobs)
# from its input `hello`, as the collection's templates render theirs.
HELLO_TEMPLATE = """\
{{ ansible_managed | comment }}
job "{{ hello.id }}" {
  namespace   = "{{ hello.namespace }}"
  datacenters = {{ hello.datacenters | to_json }}

  group "hello" {
    task "hello" {
      driver = "raw_exec"

      config {
        command = "/bin/sleep"
        args    = ["3600"]
      }
    }
  }
}
"""

INVENTORY = inventory(local=["localhost"])


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    directory = tmp_path / "tls"
    directory.mkdir()
    return make_ca(directory)


def run_role(tmp_path: Path, tasks_from: str, role_vars: dict[str, Any]) -> PlayResult:
    """Include twin.cluster.nomad_job (entry point ``tasks_from``) with ``role_vars``.

    ``role_vars`` are the include's vars, as a calling role passes them; the
    play and inventory are written to ``tmp_path``.
    """
    play = [
        {
            "name": "Use the nomad_job role.",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Include the role.",
                    "ansible.builtin.include_role": {
                        "name": "twin.cluster.nomad_job",
                        "tasks_from": tasks_from,
                    },
                    "vars": role_vars,
                }
            ],
        }
    ]
    return run_playbook(play, INVENTORY, workdir=tmp_path)


def hello_vars(tmp_path: Path, url: str, **extra: Any) -> dict[str, Any]:
    template = tmp_path / "hello.nomad.hcl.j2"
    template.write_text(HELLO_TEMPLATE)
    return {
        "hello": {"id": "hello", "namespace": "llm", "datacenters": ["dc1"]},
        "nomad_job_template": str(template),
        "nomad_job_id": "hello",
        "nomad_job_dir": str(tmp_path / "rendered"),
        "nomad_job_addr": url,
        "nomad_job_token": TOKEN,
        **extra,
    }


def test_job_is_rendered_with_the_callers_input_and_submitted_trusting_the_ca(tmp_path, certs):
    fixtures = ["jobs_parse", "job_plan_added", "jobs_register"]
    with FixtureAPI("nomad_jobs", fixtures) as api, tls_front(api.url, certs) as url:
        proc = run_role(
            tmp_path, "main", hello_vars(tmp_path, url, nomad_job_ca_path=str(certs.ca))
        )
    assert proc.returncode == 0, proc.output
    assert TOKEN not in proc.output
    rendered = (tmp_path / "rendered" / "hello.nomad.hcl").read_text()
    assert rendered.startswith("#\n# Ansible managed\n#\n")
    assert 'job "hello" {\n  namespace   = "llm"\n  datacenters = ["dc1"]\n' in rendered
    assert api.unmatched == []
    assert {r.header("X-Nomad-Token") for r in api.requests} == {TOKEN}
    [parse] = api.requests_to("POST", "/v1/jobs/parse")
    assert parse.json()["JobHCL"].strip() == rendered.strip()
    assert len(api.requests_to("POST", "/v1/job/hello/plan")) == 1
    assert len(api.requests_to("POST", "/v1/jobs")) == 1
    assert "changed: [localhost]" in proc.stdout


def test_submission_without_the_ca_is_refused_by_certificate_verification(tmp_path, certs):
    fixtures = ["jobs_parse", "job_plan_added", "jobs_register"]
    with FixtureAPI("nomad_jobs", fixtures) as api, tls_front(api.url, certs) as url:
        proc = run_role(tmp_path, "main", hello_vars(tmp_path, url))
    assert proc.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in proc.output, proc.output
    assert TOKEN not in proc.output
    assert api.requests == []


def test_render_only_asks_nomad_nothing(tmp_path, certs):
    with FixtureAPI("nomad_jobs", []) as api:
        proc = run_role(tmp_path, "main", hello_vars(tmp_path, api.url, nomad_job_submit=False))
    assert proc.returncode == 0, proc.output
    assert (tmp_path / "rendered" / "hello.nomad.hcl").is_file()
    assert api.requests == []


def test_purge_keeps_the_listed_jobs_and_purges_the_rest_of_the_prefix(tmp_path, certs):
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    for name in ("expert-general", "expert-old", "pipecat-app"):
        (rendered / f"{name}.nomad.hcl").write_text("job {}\n")
    fixtures = [
        "jobs_list_experts",
        "expert_old_read",
        "expert_old_deregister",
        "expert_general_lab_read",
        "expert_general_lab_deregister",
    ]
    role_vars = {
        "nomad_job_prefix": "expert-",
        "nomad_job_keep": ["llm/expert-general"],
        "nomad_job_dir": str(rendered),
        "nomad_job_token": TOKEN,
        "nomad_job_ca_path": str(certs.ca),
    }
    with FixtureAPI("nomad_jobs", fixtures) as api, tls_front(api.url, certs) as url:
        proc = run_role(tmp_path, "purge", {**role_vars, "nomad_job_addr": url})
    assert proc.returncode == 0, proc.output
    assert TOKEN not in proc.output
    assert sorted(p.name for p in rendered.iterdir()) == [
        "expert-general.nomad.hcl",
        "pipecat-app.nomad.hcl",  # not under the prefix: left alone
    ]
    assert api.unmatched == []
    assert {r.header("X-Nomad-Token") for r in api.requests} == {TOKEN}
    [listing] = api.requests_to("GET", "/v1/jobs")
    assert listing.query == {"prefix": ["expert-"], "namespace": ["*"]}
    [old] = api.requests_to("DELETE", "/v1/job/expert-old")
    assert old.query == {"namespace": ["llm"], "purge": ["true"]}
    [moved] = api.requests_to("DELETE", "/v1/job/expert-general")
    assert moved.query == {"namespace": ["lab"], "purge": ["true"]}


def test_purge_without_submit_removes_only_files(tmp_path):
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    (rendered / "expert-old.nomad.hcl").write_text("job {}\n")
    with FixtureAPI("nomad_jobs", []) as api:
        proc = run_role(
            tmp_path,
            "purge",
            {
                "nomad_job_prefix": "expert-",
                "nomad_job_keep": [],
                "nomad_job_dir": str(rendered),
                "nomad_job_addr": api.url,
                "nomad_job_submit": False,
            },
        )
    assert proc.returncode == 0, proc.output
    assert list(rendered.iterdir()) == []
    assert api.requests == []


@pytest.mark.parametrize(
    ("entry_point", "given", "missing"),
    [
        pytest.param("main", {"nomad_job_id": "hello"}, "nomad_job_template", id="main"),
        # Leaving out what to keep must not purge the whole prefix.
        pytest.param("purge", {"nomad_job_prefix": "expert-"}, "nomad_job_keep", id="purge"),
    ],
)
def test_missing_required_input_is_named_and_nothing_is_touched(
    tmp_path, entry_point, given, missing
):
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    (rendered / "expert-old.nomad.hcl").write_text("job {}\n")
    with FixtureAPI("nomad_jobs", []) as api:
        role_vars = {**given, "nomad_job_dir": str(rendered), "nomad_job_addr": api.url}
        proc = run_role(tmp_path, entry_point, role_vars)
    out = " ".join(proc.output.split())
    assert proc.returncode != 0
    assert f"missing required arguments: {missing}" in out, out
    assert [p.name for p in rendered.iterdir()] == ["expert-old.nomad.hcl"]
    assert api.requests == []
