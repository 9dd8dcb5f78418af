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


# Entry point consul_token: a job's least-privilege Consul token, handed to
# the job through its Nomad Variable, against hand-written Consul and Nomad
# API answers (tests/api_fixtures/consul/*_job_hello.yaml and
# nomad_jobs/var_hello_*.yaml), each behind HTTPS with the test's CA.

CONSUL_BOOTSTRAP = "e1a2b3c4-d5e6-4f70-8192-a3b4c5d6e7f8"
HELLO_ACCESSOR = "d8af5b0c-5597-5407-a7be-a204c96e607a"  # uuid5 of "llm/hello"
HELLO_SECRET = "c4a1f7e2-9b3d-4e85-a6c0-2d8f1e5b7a94"  # what Consul answers
# A prompt-evolve-like job: reads the experts, writes the prompt key.
HELLO_RULES = """service "llm-expert" {
  policy = "read"
}
key "twin/prompts/system" {
  policy = "write"
}
"""
CONSUL_FIXTURES = [
    "acl_policy_read_job_hello",
    "acl_policy_create_job_hello",
    "acl_token_read_job_hello",
    "acl_token_create_job_hello",
]


def consul_token_vars(nomad_url: str, consul_url: str, ca: Path) -> dict[str, Any]:
    return {
        "nomad_job_id": "hello",
        "nomad_job_namespace": "llm",
        "nomad_job_addr": nomad_url,
        "nomad_job_token": TOKEN,
        "nomad_job_ca_path": str(ca),
        "nomad_job_consul_addr": consul_url,
        "nomad_job_consul_ca_path": str(ca),
        "nomad_job_consul_management_token": CONSUL_BOOTSTRAP,
        "nomad_job_consul_rules": HELLO_RULES,
        "nomad_job_variable_items": {"greeting": "hello"},
    }


def test_consul_token_makes_policy_token_and_variable_once_then_changes_nothing(
    tmp_path: Path, certs: CertFiles
):
    with (
        FixtureAPI("nomad_jobs", ["var_hello_read", "var_hello_write"]) as nomad,
        FixtureAPI("consul", CONSUL_FIXTURES) as consul,
        tls_front(nomad.url, certs) as nomad_url,
        tls_front(consul.url, certs) as consul_url,
    ):
        role_vars = consul_token_vars(nomad_url, consul_url, certs.ca)
        first = run_role(tmp_path, "consul_token", role_vars)
        second = run_role(tmp_path, "consul_token", role_vars)
    assert first.returncode == 0, first.output
    assert second.returncode == 0, second.output
    assert nomad.unmatched == []
    assert consul.unmatched == []
    # First run: the policy with the caller's rules, a token for it, the variable.
    [policy] = consul.requests_to("PUT", "/v1/acl/policy")
    assert policy.json()["Name"] == "nomad-job-llm-hello"
    assert policy.json()["Rules"] == HELLO_RULES
    [token] = consul.requests_to("PUT", "/v1/acl/token")
    assert token.json()["AccessorID"] == HELLO_ACCESSOR
    assert token.json()["Policies"] == [{"Name": "nomad-job-llm-hello"}]
    [put] = nomad.requests_to("PUT", "/v1/var/nomad/jobs/hello")
    assert put.query == {"namespace": ["llm"], "cas": ["0"]}
    assert put.json() == {
        "Namespace": "llm",
        "Path": "nomad/jobs/hello",
        "Items": {"consul_token": HELLO_SECRET, "greeting": "hello"},
    }
    assert {r.header("X-Consul-Token") for r in consul.requests} == {CONSUL_BOOTSTRAP}
    assert {r.header("X-Nomad-Token") for r in nomad.requests} == {TOKEN}
    assert first.changed == 3
    # Second run: Consul and Nomad already hold the same; nothing is written.
    assert second.changed == 0, second.output
    assert len(nomad.requests_to("GET", "/v1/var/nomad/jobs/hello")) == 2
    for secret in (HELLO_SECRET, CONSUL_BOOTSTRAP, TOKEN):
        assert secret not in first.output + second.output


def test_variable_with_other_items_is_updated_with_the_index_it_was_read_at(
    tmp_path: Path, certs: CertFiles
):
    with (
        FixtureAPI("nomad_jobs", ["var_hello_read", "var_hello_write"]) as nomad,
        tls_front(nomad.url, certs) as nomad_url,
    ):
        nomad.routes[("GET", "/v1/var/nomad/jobs/hello")].served = 1  # the variable exists
        role_vars = {
            "nomad_job_id": "hello",
            "nomad_job_namespace": "llm",
            "nomad_job_addr": nomad_url,
            "nomad_job_token": TOKEN,
            "nomad_job_ca_path": str(certs.ca),
            "nomad_job_variable_items": {"greeting": "hi", "count": 3},
        }
        result = run_role(tmp_path, "variable", role_vars)
    assert result.returncode == 0, result.output
    [put] = nomad.requests_to("PUT", "/v1/var/nomad/jobs/hello")
    assert put.query == {"namespace": ["llm"], "cas": ["118"]}
    assert put.json()["Items"] == {"greeting": "hi", "count": "3"}  # Nomad keeps strings
    assert result.changed == 1


def test_variable_is_left_alone_when_nothing_is_submitted(tmp_path: Path, certs: CertFiles):
    with FixtureAPI("nomad_jobs", []) as nomad:
        role_vars = {
            "nomad_job_id": "hello",
            "nomad_job_addr": nomad.url,
            "nomad_job_submit": False,
            "nomad_job_variable_items": {"greeting": "hi"},
        }
        result = run_role(tmp_path, "variable", role_vars)
    assert result.returncode == 0, result.output
    assert nomad.requests == []
