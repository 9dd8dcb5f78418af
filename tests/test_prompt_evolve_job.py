"""jobs/prompt-evolve.nomad.hcl.j2 rendered from what the pipecat_app role computes.

The template's one input, ``evolve``, is the role's ``_pipecat_app_evolve_job``
from its defaults and vars loaded as Ansible loads them; the template is
rendered with that variable alone (``helpers.jobs.render_job``), parsed with
python-hcl2 and checked block by block. The task's arguments are parsed by
prompt-evolve's own argument parser, so an option it does not have fails
here. The role's rendering through the nomad_job role runs through the real
ansible-playbook, and (``slow``) the rendered task runs here as a dispatch
would start it: experts from the repository's Consul fixture server, SmolLM2
on llama-server, one iteration, published to a file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.ansible import inventory, run_playbook
from helpers.consul_experts import serving_experts
from helpers.consul_template import render_consul_template
from helpers.evolve import LOSING_PROMPT, repeatable_smollm2
from helpers.jobs import Block, Job, evaluate, parse_hcl, parse_job, render_job
from helpers.llama_server import LlamaServer
from helpers.nomad_task import LocalTask, TaskSpec, interpolate
from helpers.pipecat_app_role import OWNER, RELEASE, SOURCE_HASH, role_vars, run_validate
from pipecat_app.twin.config import SHIPPED_PROMPT
from prompt_engineering.cli import parse_args

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "prompt-evolve.nomad.hcl.j2"
RELEASE_BIN = f"/usr/local/lib/twin-pipecat-app/{RELEASE}/venv/bin/prompt-evolve"


def job_input(**overrides: Any) -> dict[str, Any]:
    """``evolve``: the role's ``_pipecat_app_evolve_job`` for these settings."""
    return evaluate("{{ _pipecat_app_evolve_job }}", role_vars(None, **overrides))


def render(**overrides: Any) -> tuple[str, Job]:
    text = render_job(TEMPLATE, {"evolve": job_input(**overrides)})
    return text, parse_job(text)


def task_of(job: Job) -> Block:
    return job.group("evolve").labelled("task")["prompt-evolve"]


def options(job: Job, iterations: str = "20") -> Any:
    """The task's arguments as prompt-evolve reads them, for a dispatch with ``iterations``."""
    runtime = {"NOMAD_META_iterations": iterations, "NOMAD_ALLOC_DIR": "/alloc"}
    args = [interpolate(str(a), runtime) for a in task_of(job).block("config")["args"]]
    return parse_args(args)


def test_job_is_a_parameterized_batch_job_in_namespace_batch_with_iterations_as_meta():
    text, job = render()
    assert text.startswith("#\n# Ansible managed\n#\n")
    assert job.id == "prompt-evolve"
    assert (job["type"], job["namespace"], job["region"]) == ("batch", "batch", "global")
    assert job["datacenters"] == ["dc1"]
    parameterized = job.block("parameterized")
    assert parameterized["payload"] == "forbidden"
    assert parameterized["meta_optional"] == ["iterations"]
    assert parameterized.get("meta_required", []) == []
    assert job.block("meta")["iterations"] == "10"  # a dispatch without -meta
    _, job = render(pipecat_app_prompt_evolve_iterations=3)
    assert job.block("meta")["iterations"] == "3"


def test_runs_once_on_the_machines_with_the_app_and_is_never_retried():
    _, job = render()
    group = job.group("evolve")
    constraint = group.block("constraint")
    assert constraint["attribute"] == "${attr.unique.hostname}"
    assert constraint["operator"] == "set_contains_any"
    assert constraint["value"] == "node1,node2"
    assert (group.block("restart")["attempts"], group.block("restart")["mode"]) == (0, "fail")
    assert group.block("reschedule")["attempts"] == 0
    assert group.block("reschedule")["unlimited"] is False
    task = task_of(job)
    assert (task["driver"], task["user"]) == ("exec", "twin-assistant")
    assert task.block("resources").body == {"cpu": 1000, "memory": 2048}


def test_task_runs_the_releases_prompt_evolve_on_consuls_experts_publishing_to_the_prompt_key():
    _, job = render()
    task = task_of(job)
    assert task.block("config")["command"] == RELEASE_BIN
    args = options(job, iterations="20")
    assert args.iterations == 20  # the dispatch's meta
    assert str(args.run_dir) == "/alloc/data/prompt-evolve"
    assert (args.consul_service, args.expert_domain) == ("llm-expert", "general")
    assert args.consul_key == "twin/prompts/system"
    assert args.publish_file is None
    assert args.assistant_url is None  # the experts come from Consul
    assert (args.concurrency, args.case_timeout) == (2, 180.0)
    env = task.block("env").body
    assert env["CONSUL_HTTP_ADDR"] == "https://127.0.0.1:8501"
    assert env["CONSUL_CACERT"] == "${NOMAD_SECRETS_DIR}/ca.pem"
    assert env["TWIN_SECRETS_VARIABLE"] == "nomad/jobs/prompt-evolve"


def test_consul_token_and_ca_come_from_the_jobs_nomad_variable_not_the_job_spec():
    text, job = render()
    templates = {str(t["destination"]): t for t in task_of(job).blocks("template")}
    assert sorted(templates) == ["secrets/ca.pem", "secrets/prompt-evolve.env"]
    env_template = templates["secrets/prompt-evolve.env"]
    assert env_template["env"] is True
    variables = {"nomad/jobs/prompt-evolve": {"consul_token": "s3cr3t", "ca_cert": "PEM"}}
    task_env = {"TWIN_SECRETS_VARIABLE": "nomad/jobs/prompt-evolve"}
    rendered = render_consul_template(str(env_template["data"]), task_env, {}, variables)
    assert rendered.split() == ["CONSUL_HTTP_TOKEN=s3cr3t"]
    ca = templates["secrets/ca.pem"]
    assert render_consul_template(str(ca["data"]), task_env, {}, variables).strip() == "PEM"
    assert (ca["perms"], ca["uid"], ca["gid"]) == ("0600", OWNER["uid"], OWNER["gid"])
    assert "s3cr3t" not in text


def test_plain_consul_without_acl_needs_no_variable():
    _, job = render(twin_tls=False, pipecat_app_consul_acl=False)
    assert task_of(job).blocks("template") == []
    env = task_of(job).block("env").body
    assert env["CONSUL_HTTP_ADDR"] == "http://127.0.0.1:8500"
    assert "CONSUL_CACERT" not in env


def test_publish_file_replaces_the_consul_key_and_extra_args_and_env_reach_the_task():
    _, job = render(
        pipecat_app_prompt_evolve_publish_file="/var/lib/twin/system.md",
        pipecat_app_prompt_evolve_extra_args=["--held-out-limit", "10"],
        pipecat_app_prompt_evolve_env={"OPENAI_API_KEY": "local"},
        pipecat_app_prompt_evolve_expert_domain="code",
    )
    args = options(job)
    assert (args.consul_key, str(args.publish_file)) == (None, "/var/lib/twin/system.md")
    assert args.held_out_limit == 10
    assert args.expert_domain == "code"
    assert task_of(job).block("env")["OPENAI_API_KEY"] == "local"


def rules(**overrides: Any) -> dict[str, Any]:
    return parse_hcl(
        evaluate("{{ _pipecat_app_evolve_consul_rules }}", role_vars(None, **overrides))
    )


def test_consul_policy_writes_only_the_prompt_key_and_its_meta_sibling():
    assert rules(pipecat_app_prompt_key="lab/prompt") == {
        "service": [{"llm-expert": {"policy": "read"}}],
        "node_prefix": [{"": {"policy": "read"}}],
        "key": [{"lab/prompt": {"policy": "write"}}, {"lab/prompt.meta": {"policy": "write"}}],
    }
    # Publishing to a file, the token writes nothing.
    assert "key" not in rules(pipecat_app_prompt_evolve_publish_file="/tmp/system.md")


def readme_section() -> str:
    text = (ROOT / "jobs" / "README.md").read_text()
    return text.split("## prompt-evolve.nomad.hcl.j2", 1)[1].split("\n## ", 1)[0]


def test_every_field_of_the_template_input_is_documented_in_the_jobs_readme():
    rows = re.findall(r"^\| `(\w+)` \|", readme_section(), re.MULTILINE)
    assert [f for f in job_input() if f not in rows] == []
    assert [r for r in rows if r not in job_input()] == []


def test_role_renders_the_job_through_the_nomad_job_role(tmp_path):
    play = [
        {
            "name": "Render the jobs.",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {
                "pipecat_app_submit_job": False,
                "pipecat_app_jobs_dir": str(tmp_path / "rendered"),
                "twin_tls": False,
                "pipecat_app_access_token_enable": False,
                "_pipecat_app_source_hash": SOURCE_HASH,
            },
            "tasks": [
                {
                    "name": "Run the role's job tasks.",
                    "ansible.builtin.include_role": {
                        "name": "twin.cluster.pipecat_app",
                        "tasks_from": "job.yml",
                    },
                }
            ],
        }
    ]
    node1 = {"_pipecat_app_ids": OWNER}
    hosts = inventory({"pipecat_app_hosts": ["node1"]}, hosts={"node1": node1}, local=["localhost"])
    proc = run_playbook(play, hosts, workdir=tmp_path)
    assert proc.returncode == 0, proc.output
    rendered = (tmp_path / "rendered" / "prompt-evolve.nomad.hcl").read_text()
    job = parse_job(rendered)
    assert job.id == "prompt-evolve"
    assert task_of(job).block("config")["command"] == RELEASE_BIN
    assert job.group("evolve").block("constraint")["value"] == "node1"


# The rendered task, run here as a dispatch starts it.


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Iterator[LlamaServer]:
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    with repeatable_smollm2(log) as server:
        yield server


@pytest.mark.slow
def test_dispatched_task_evolves_on_the_expert_consul_lists_and_publishes_to_a_file(
    tmp_path, smollm2
):
    # The release directory the job names holds this checkout's environment,
    # where prompt_engineering is installed (what the role's venv holds).
    install_dir = tmp_path / "install"
    (install_dir / RELEASE).mkdir(parents=True)
    (install_dir / RELEASE / "venv").symlink_to(ROOT / ".venv")
    target = tmp_path / "published" / "system.md"
    target.parent.mkdir()
    # A deliberately bad current prompt (longer than SmolLM2's context: every
    # held-out case gets no answer), so that the run's best beats it. The
    # answers get 64 tokens: the held-out case is a tool turn, and 32 cut its
    # JSON tool call short once the turn's observation moved after the
    # history, so no prompt could pass it.
    target.write_text(LOSING_PROMPT)
    with serving_experts({"general": smollm2.base_url}, tmp_path) as consul:
        _, job = render(
            twin_tls=False,
            pipecat_app_install_dir=str(install_dir),
            pipecat_app_driver="raw_exec",  # a host process, as here; no chroot
            pipecat_app_consul_addr=consul.url,
            pipecat_app_prompt_evolve_publish_file=str(target),
            pipecat_app_prompt_evolve_concurrency=1,
            pipecat_app_prompt_evolve_extra_args=[
                "--train-limit", "1", "--held-out-limit", "1", "--stage1-cases", "1",
                "--stage1-threshold", "0", "--max-tokens", "64", "--mutator-max-tokens", "128",
                "--temperature", "0", "--seed", "7",
            ],
        )  # fmt: skip
        spec = TaskSpec.from_job(job, "evolve", "prompt-evolve")
        # The Consul token the env template writes from the job's variable.
        task = LocalTask(
            spec, dispatch_meta={"iterations": "1"}, template_env={"CONSUL_HTTP_TOKEN": "evolve"}
        )
        with task:
            code = task.wait(timeout=900)
            log = task.log()
            assert code == 0, log[-4000:]
            assert task.alloc_dir is not None
            report = json.loads(
                (task.alloc_dir / "alloc/data/prompt-evolve/report.json").read_text()
            )
        [query] = consul.requests_to("GET", "/v1/health/service/llm-expert")
        assert query.header("X-Consul-Token") == "evolve"
    assert f"experts from Consul (llm-expert, general, smollm2-135m): ['{smollm2.base_url}']" in log
    assert report["iterations"] == 1  # the dispatch's meta
    assert report["start_prompt"] == str(SHIPPED_PROMPT)  # the one TwinService ships with
    assert report["scores"]["current_held_out"] == 0.0
    assert report["published"] is True, report["reason"]
    assert report["target"] == f"file:{target}"
    assert target.read_text().strip() == report["best_prompt"]
    assert json.loads(target.with_name("system.md.meta.json").read_text())["version"] == 1


@pytest.mark.parametrize(
    ("settings", "shown"),
    [
        pytest.param(
            {"pipecat_app_prompt_evolve_iterations": 0}, "got 0, 2, 180", id="zero-iterations"
        ),
        pytest.param(
            {"pipecat_app_prompt_evolve_publish_file": "system.md"},
            'got "system.md"',
            id="relative-publish-file",
        ),
        pytest.param({"pipecat_app_prompt_evolve_job_name": "Evolve"}, "got Evolve", id="job-name"),
    ],
)
def test_validate_rejects_prompt_evolve_settings_naming_the_variable(tmp_path, settings, shown):
    result = run_validate(
        tmp_path, {"pipecat_app_hosts": ["node1"]}, pipecat_app_consul_acl=False, **settings
    )
    assert result.returncode != 0
    assert "pipecat_app_prompt_evolve_" in result.stdout
    assert shown in result.stdout, result.stdout[-3000:]
