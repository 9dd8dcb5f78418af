"""twin.cluster.nomad_job against hand-written answers of Nomad's HTTP API.

No Nomad binary runs here, so the module talks to the shared fixture server
(tests/helpers/fixture_api.py) answering from tests/api_fixtures/nomad_jobs/
(written from Nomad's API documentation and source, not recorded),
and the tests assert what the module sent and what it reported. The live test
at the end does the same against a real cluster when NOMAD_ADDR is set.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.fixture_api import FIXTURES_ROOT, FixtureAPI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".cache" / "collections"))

from ansible.module_utils.testing import patch_module_args  # noqa: E402
from ansible_collections.twin.cluster.plugins.modules import nomad_job  # noqa: E402

TOKEN = "3f4a5b6c-0000-4000-8000-00000000beef"

HELLO_HCL = """\
job "hello" {
  namespace   = "llm"
  datacenters = ["dc1"]

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
# The same job without its own namespace line.
NO_NAMESPACE_HCL = HELLO_HCL.replace('  namespace   = "llm"\n', "")


def run_module(capsys: pytest.CaptureFixture[str], args: dict[str, Any], check: bool = False):
    """Run the module in this process like Ansible does; return (result, exit code)."""
    capsys.readouterr()
    with patch_module_args({**args, "_ansible_check_mode": check}), pytest.raises(SystemExit) as ex:
        nomad_job.main()
    out = capsys.readouterr().out
    return json.loads(out), ex.value.code


@pytest.fixture
def hello_file(tmp_path: Path) -> Path:
    path = tmp_path / "hello.nomad.hcl"
    path.write_text(HELLO_HCL)
    return path


def present_args(api: FixtureAPI, hello_file: Path) -> dict[str, Any]:
    return {"nomad_addr": api.url, "token": TOKEN, "src": str(hello_file)}


def fixture_body(name: str) -> Any:
    """The JSON body of the first answer of a nomad_jobs fixture."""
    raw = yaml.safe_load((FIXTURES_ROOT / "nomad_jobs" / f"{name}.yaml").read_text())
    return raw["responses"][0]["json"]


def test_new_job_is_parsed_planned_and_registered_with_check_and_set(capsys, hello_file):
    with FixtureAPI("nomad_jobs", ["jobs_parse", "job_plan_added", "jobs_register"]) as api:
        result, code = run_module(capsys, present_args(api, hello_file))
    assert code == 0, result
    assert result["changed"] is True
    assert result["diff_type"] == "Added"
    assert result["eval_id"] == "d092fdc0-e1fd-2536-67d8-43af8ca798ac"
    assert (result["job_id"], result["namespace"]) == ("hello", "llm")
    assert [(r.method, r.path) for r in api.requests] == [
        ("POST", "/v1/jobs/parse"),
        ("POST", "/v1/job/hello/plan"),
        ("POST", "/v1/jobs"),
    ]
    assert all(r.header("X-Nomad-Token") == TOKEN for r in api.requests)
    parse, plan, register = (r.json() for r in api.requests)
    assert parse == {"JobHCL": HELLO_HCL, "Canonicalize": False}
    assert plan["Diff"] is True
    # The job's fields are Nomad's own parse of the file, passed through
    # unchanged (they come from the fixture, so this only checks pass-through);
    # the module sets the namespace and registers exactly the job it planned.
    assert plan["Job"] == {**fixture_body("jobs_parse"), "Namespace": "llm"}
    assert register["Job"] == plan["Job"]
    assert register["EnforceIndex"] is True
    assert register["JobModifyIndex"] == 0
    assert register["Submission"] == {"Source": HELLO_HCL, "Format": "hcl2"}
    assert api.requests[2].query == {"namespace": ["llm"]}
    assert TOKEN not in json.dumps(result)


@pytest.mark.parametrize(
    ("option", "variable", "expected"),
    [("apps", None, "apps"), (None, "apps", "apps"), (None, None, "default")],
    ids=["namespace-option", "NOMAD_NAMESPACE", "nomad-default"],
)
def test_job_without_a_namespace_is_planned_and_registered_in_the_namespace_given(
    capsys, tmp_path, monkeypatch, option, variable, expected
):
    """The module's namespace logic: the option, else NOMAD_NAMESPACE, else Nomad's default.

    Nomad's parse of a file without a ``namespace`` line has ``Namespace: null``
    (jobspec2 leaves it unset and the endpoint does not canonicalize); the
    fixtures here are the shared ones with only that field changed.
    """
    fixtures = tmp_path / "nomad_jobs"
    fixtures.mkdir()
    for name in ("jobs_parse", "job_plan_added", "jobs_register"):
        raw = yaml.safe_load((FIXTURES_ROOT / "nomad_jobs" / f"{name}.yaml").read_text())
        if name == "jobs_parse":
            raw["responses"][0]["json"]["Namespace"] = None
        (fixtures / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    if variable is None:
        monkeypatch.delenv("NOMAD_NAMESPACE", raising=False)
    else:
        monkeypatch.setenv("NOMAD_NAMESPACE", variable)
    args = {"job_hcl": NO_NAMESPACE_HCL, **({"namespace": option} if option else {})}
    names = ["jobs_parse", "job_plan_added", "jobs_register"]
    with FixtureAPI("nomad_jobs", names, root=tmp_path) as api:
        result, code = run_module(capsys, {"nomad_addr": api.url, **args})
    assert code == 0, result
    assert (result["changed"], result["namespace"]) == (True, expected)
    [parse] = api.requests_to("POST", "/v1/jobs/parse")
    assert parse.json()["JobHCL"] == NO_NAMESPACE_HCL
    [plan] = api.requests_to("POST", "/v1/job/hello/plan")
    [register] = api.requests_to("POST", "/v1/jobs")
    assert plan.json()["Job"]["Namespace"] == expected
    assert register.json()["Job"]["Namespace"] == expected
    assert plan.query["namespace"] == [expected]
    assert register.query["namespace"] == [expected]


def test_plan_without_diff_reports_no_change_and_sends_no_register(capsys, hello_file):
    with FixtureAPI("nomad_jobs", ["jobs_parse", "job_plan_none", "jobs_register"]) as api:
        result, code = run_module(capsys, present_args(api, hello_file))
    assert code == 0, result
    assert result["changed"] is False
    assert result["diff_type"] == "None"
    assert result["job_modify_index"] == 42
    assert api.requests_to("POST", "/v1/jobs") == []


def test_edited_job_is_registered_against_the_planned_modify_index(capsys, hello_file):
    with FixtureAPI("nomad_jobs", ["jobs_parse", "job_plan_edited", "jobs_register"]) as api:
        result, code = run_module(capsys, present_args(api, hello_file))
    assert code == 0, result
    assert result["changed"] is True
    assert result["diff_type"] == "Edited"
    assert result["annotations"]["DesiredTGUpdates"]["hello"]["DestructiveUpdate"] == 1
    [register] = api.requests_to("POST", "/v1/jobs")
    assert register.json()["JobModifyIndex"] == 42
    assert result["job_modify_index"] == 43


def test_check_mode_plans_only(capsys, hello_file):
    with FixtureAPI("nomad_jobs", ["jobs_parse", "job_plan_added", "jobs_register"]) as api:
        result, code = run_module(capsys, present_args(api, hello_file), check=True)
    assert code == 0, result
    assert result["changed"] is True
    assert result["diff_type"] == "Added"
    assert "eval_id" not in result
    assert api.requests_to("POST", "/v1/job/hello/plan")
    assert api.requests_to("POST", "/v1/jobs") == []


def test_inline_job_hcl_is_submitted_like_a_file(capsys):
    with FixtureAPI("nomad_jobs", ["jobs_parse", "job_plan_added", "jobs_register"]) as api:
        result, code = run_module(capsys, {"nomad_addr": api.url, "job_hcl": HELLO_HCL})
    assert code == 0, result
    assert result["changed"] is True
    assert api.requests[0].json()["JobHCL"] == HELLO_HCL
    assert api.requests[0].header("X-Nomad-Token") is None


def test_invalid_hcl_fails_with_nomads_diagnostic_and_plans_nothing(capsys, hello_file):
    with FixtureAPI("nomad_jobs", ["jobs_parse_invalid", "job_plan_added"]) as api:
        result, code = run_module(capsys, present_args(api, hello_file))
    assert code == 1
    assert result["failed"] is True
    assert str(hello_file) in result["msg"]
    assert 'argument named "drver"' in result["msg"]
    assert api.requests_to("POST", "/v1/job/hello/plan") == []


def test_refused_token_says_which_permissions_are_needed(capsys, hello_file):
    with FixtureAPI("nomad_jobs", ["jobs_parse_forbidden"]) as api:
        result, code = run_module(capsys, present_args(api, hello_file))
    assert code == 1
    assert result["status"] == 403
    assert "Permission denied" in result["msg"]
    assert "submit-job" in result["msg"]
    assert TOKEN not in json.dumps(result)


def test_unreachable_nomad_fails_naming_the_address(capsys, hello_file):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    addr = f"http://127.0.0.1:{port}"
    result, code = run_module(capsys, {"nomad_addr": addr, "src": str(hello_file), "timeout": 5})
    assert code == 1
    assert f"Could not reach Nomad at {addr}" in result["msg"]
    assert "nomad_addr" in result["msg"]


def test_conflicting_namespace_fails_instead_of_guessing(capsys, hello_file):
    with FixtureAPI("nomad_jobs", ["jobs_parse", "job_plan_added"]) as api:
        args = {**present_args(api, hello_file), "namespace": "default"}
        result, code = run_module(capsys, args)
    assert code == 1
    assert "sets namespace 'llm'" in result["msg"]
    assert api.requests_to("POST", "/v1/job/hello/plan") == []


def test_absent_stops_a_running_job(capsys):
    with FixtureAPI("nomad_jobs", ["job_read", "job_deregister"]) as api:
        args = {"nomad_addr": api.url, "name": "hello", "namespace": "llm", "state": "absent"}
        result, code = run_module(capsys, args)
    assert code == 0, result
    assert result["changed"] is True
    assert result["eval_id"] == "5456bd7a-9fc0-c0dd-6131-cbee77f57577"
    [delete] = api.requests_to("DELETE", "/v1/job/hello")
    assert delete.query == {"namespace": ["llm"]}


def test_absent_with_purge_purges_a_stopped_job(capsys):
    with FixtureAPI("nomad_jobs", ["job_read_stopped", "job_deregister"]) as api:
        args = {
            "nomad_addr": api.url,
            "name": "hello",
            "namespace": "llm",
            "state": "absent",
            "purge": True,
        }
        result, code = run_module(capsys, args)
    assert code == 0, result
    assert result["changed"] is True
    [delete] = api.requests_to("DELETE", "/v1/job/hello")
    assert delete.query == {"namespace": ["llm"], "purge": ["true"]}


def test_absent_leaves_a_stopped_job_alone_without_purge(capsys):
    with FixtureAPI("nomad_jobs", ["job_read_stopped", "job_deregister"]) as api:
        args = {"nomad_addr": api.url, "name": "hello", "namespace": "llm", "state": "absent"}
        result, code = run_module(capsys, args)
    assert code == 0, result
    assert result["changed"] is False
    assert api.requests_to("DELETE", "/v1/job/hello") == []


def test_absent_job_that_does_not_exist_is_no_change(capsys, hello_file):
    with FixtureAPI("nomad_jobs", ["jobs_parse", "job_read_missing", "job_deregister"]) as api:
        args = {"nomad_addr": api.url, "src": str(hello_file), "state": "absent"}
        result, code = run_module(capsys, args)
    assert code == 0, result
    assert result["changed"] is False
    assert result["namespace"] == "llm"
    assert api.requests_to("DELETE", "/v1/job/hello") == []


def test_module_runs_from_the_collection_and_hides_the_token(tmp_path, hello_file):
    """The real ansible CLI resolves twin.cluster.nomad_job and never prints the token."""
    with FixtureAPI("nomad_jobs", ["jobs_parse", "job_plan_none"]) as api:
        args = json.dumps({"nomad_addr": api.url, "token": TOKEN, "src": str(hello_file)})
        proc = subprocess.run(
            ["ansible", "localhost", "-m", "twin.cluster.nomad_job", "-a", args, "-vvv"],
            cwd=ROOT,
            env={
                **os.environ,
                "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                "ANSIBLE_LOCALHOST_WARNING": "false",
                "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
            },
            capture_output=True,
            text=True,
            check=False,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"changed": false' in proc.stdout
    assert '"diff_type": "None"' in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr
    assert [r.header("X-Nomad-Token") for r in api.requests] == [TOKEN, TOKEN]


LIVE_HCL = """\
job "{job_id}" {{
  datacenters = ["*"]
  type        = "batch"

  group "noop" {{
    task "noop" {{
      driver = "exec"

      config {{
        command = "/bin/true"
      }}
    }}
  }}
}}
"""


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("NOMAD_ADDR"), reason="NOMAD_ADDR is not set")
def test_live_register_twice_changes_once_then_purge(capsys):
    job_id = f"twin-test-{uuid.uuid4().hex[:8]}"
    base = {"nomad_addr": os.environ["NOMAD_ADDR"], "token": os.environ.get("NOMAD_TOKEN")}
    hcl = LIVE_HCL.format(job_id=job_id)
    first, code = run_module(capsys, {**base, "job_hcl": hcl})
    assert code == 0, first
    try:
        assert first["changed"] is True
        second, code = run_module(capsys, {**base, "job_hcl": hcl})
        assert code == 0, second
        assert second["changed"] is False
        assert second["diff_type"] == "None"
    finally:
        gone, code = run_module(capsys, {**base, "name": job_id, "state": "absent", "purge": True})
    assert code == 0, gone
    assert gone["changed"] is True
