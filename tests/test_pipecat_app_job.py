"""jobs/pipecat-app.nomad.hcl.j2 rendered from what the pipecat_app role computes.

The template's one input, ``assistant``, is the role's ``_pipecat_app_job``
computed from its ``defaults/main.yml`` and ``vars/main.yml`` loaded as
Ansible loads them (their Jinja resolved lazily); the template is rendered
with that variable alone through Ansible's template machinery
(``helpers.jobs.render_job``), parsed with python-hcl2 and checked block by
block. The config the job's ``template`` block writes is fed to the app's
real config loader and prompt reader, so a key the app does not know fails
here, not on a cluster node.

The role's checks (tasks/validate.yml) and its submission (tasks/job.yml,
through the nomad_job role, over HTTPS) run through the real ansible-playbook.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from helpers.ansible import PlayResult, inventory, run_playbook
from helpers.consul_template import render_consul_template
from helpers.fixture_api import FixtureAPI
from helpers.jobs import Block, Job, evaluate, parse_hcl, parse_job, render_job
from helpers.llama_server import tokens_predicted
from helpers.llm_skip import smollm2_server_or_skip
from helpers.nomad_task import LocalTask, TaskSpec
from helpers.pipecat_app_role import (
    ACCESS_TOKEN,
    CONSUL_TOKEN,
    OWNER,
    RELEASE,
    SOURCE_HASH,
    VARIABLE,
    VISION_TOKEN,
    role_vars,
    run_validate,
    secrets_variable,
)
from helpers.tls import make_ca, tls_front
from pipecat_app.config import load_config
from pipecat_app.twin.prompt import load_default

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "pipecat-app.nomad.hcl.j2"


def job_input(hostvars: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """``assistant``: the role's ``_pipecat_app_job`` for these settings."""
    return evaluate("{{ _pipecat_app_job }}", role_vars(hostvars, **overrides))


def render(**overrides: Any) -> tuple[str, Job]:
    text = render_job(TEMPLATE, {"assistant": job_input(**overrides)})
    return text, parse_job(text)


def task_of(job: Job) -> Block:
    return job.group("assistant").labelled("task")["twin-app"]


def templates_of(job: Job) -> dict[str, Block]:
    return {str(t["destination"]): t for t in task_of(job).blocks("template")}


def task_env(
    job: Job, runtime: dict[str, str], variables: dict[str, dict[str, str]] | None = None
) -> dict[str, str]:
    """The task's environment: Nomad's values, the env block, then its ``env = true`` templates.

    An env template is rendered with ``variables`` (Nomad Variables by path)
    and read as Nomad reads it, one ``NAME=value`` per line.
    """
    env = {**runtime, **{k: str(v) for k, v in task_of(job).block("env").body.items()}}
    for block in task_of(job).blocks("template"):
        if block.get("env", False):
            text = render_consul_template(str(block["data"]), env, {}, variables)
            env.update(line.split("=", 1) for line in text.splitlines() if line.strip())
    return env


def write_task_files(
    job: Job,
    task_dir: Path,
    env: dict[str, str],
    kv: dict[str, str] | None = None,
    variables: dict[str, dict[str, str]] | None = None,
) -> None:
    """Write every file template's destination as Nomad would, with its ``perms``.

    ``local/`` goes to ``task_dir`` (Nomad's task directory), ``secrets/`` to
    ``env["NOMAD_SECRETS_DIR"]``; ``env = true`` templates are what
    :func:`task_env` reads.
    """
    for destination, block in templates_of(job).items():
        if block.get("env", False):
            continue
        folder, _, name = destination.partition("/")
        assert folder in {"local", "secrets"}, destination
        path = (task_dir if folder == "local" else Path(env["NOMAD_SECRETS_DIR"])) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_consul_template(str(block["data"]), env, kv or {}, variables))
        path.chmod(int(str(block.get("perms", "0644")), 8))


def nomad_env(tmp_path: Path) -> dict[str, str]:
    """Nomad's runtime values the templates read, with a secrets directory under ``tmp_path``."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    return {
        "NOMAD_IP_http": "127.0.0.1",
        "NOMAD_PORT_http": "7860",
        "NOMAD_SECRETS_DIR": str(secrets),
    }


def plain(**overrides: Any) -> dict[str, Any]:
    """Settings of a job without TLS, access tokens or Consul token (the demo's)."""
    return {
        "twin_tls": False,
        "pipecat_app_access_token_enable": False,
        "pipecat_app_vision_token_enable": False,
        "pipecat_app_consul_acl": False,
        **overrides,
    }


def test_rendered_job_is_pipecat_app_in_namespace_apps_with_rolling_updates():
    text, job = render()
    assert text.startswith("#\n# Ansible managed\n#\n")
    assert job.id == "pipecat-app"
    assert job["namespace"] == "apps"
    assert job["region"] == "global"
    assert job["datacenters"] == ["dc1"]
    assert job["type"] == "service"
    update = job.block("update")
    assert update["max_parallel"] == 1
    assert update["health_check"] == "checks"
    assert update["auto_revert"] is True
    assert list(job.groups()) == ["assistant"]


def test_group_has_http_port_memory_volume_and_restart_policy():
    _, job = render()
    group = job.group("assistant")
    assert group["count"] == 1
    ports = group.block("network").labelled("port")
    assert ports["http"]["static"] == 7860
    volume = group.labelled("volume")["memory"]
    assert (volume["type"], volume["source"], volume["read_only"]) == (
        "host",
        "assistant-memory",
        False,
    )
    restart = group.block("restart")
    assert restart["mode"] == "delay"


def test_http_port_zero_leaves_the_port_to_nomad():
    _, job = render(pipecat_app_http_port=0)
    port = job.group("assistant").block("network").labelled("port")["http"]
    assert "static" not in port.body


def test_job_is_placed_only_on_hosts_of_the_group_by_hostname():
    hostvars = {
        "node1": {"ansible_facts": {"hostname": "mini-pc-1"}},
        "node2": {},  # no facts gathered: the inventory name is used
    }
    text = render_job(TEMPLATE, {"assistant": job_input(hostvars=hostvars)})
    [constraint] = parse_job(text).group("assistant").blocks("constraint")
    assert constraint["attribute"] == "${attr.unique.hostname}"
    assert constraint["operator"] == "set_contains_any"
    assert constraint["value"] == "mini-pc-1,node2"


def test_consul_service_twin_assistant_has_an_http_check_on_health():
    _, job = render()
    service = job.group("assistant").block("service")
    assert service["name"] == "twin-assistant"
    assert service["provider"] == "consul"
    assert service["port"] == "http"
    check = service.block("check")
    assert (check["type"], check["path"]) == ("http", "/health")
    spec = TaskSpec.from_job(job, "assistant", "twin-app")
    assert [(c.service, c.type, c.port, c.path) for c in spec.checks] == [
        ("twin-assistant", "http", "http", "/health")
    ]


def test_task_serves_the_release_venv_and_stops_on_sigterm():
    _, job = render()
    task = task_of(job)
    assert task["driver"] == "exec"
    assert task["user"] == "twin-assistant"
    config = task.block("config")
    assert config["command"] == f"/usr/local/lib/twin-pipecat-app/{RELEASE}/venv/bin/twin-app"
    assert config["args"] == ["serve", "--config", "${NOMAD_TASK_DIR}/twin-app.toml"]
    assert task["kill_signal"] == "SIGTERM"
    assert task["kill_timeout"] == "30s"
    resources = task.block("resources")
    assert (resources["cpu"], resources["memory"]) == (2000, 2048)
    mount = task.block("volume_mount")
    assert (mount["volume"], mount["destination"]) == ("memory", "/var/lib/twin/memory")


def test_raw_exec_has_no_volume_mount_and_uses_the_volume_host_path(tmp_path):
    volumes = [
        {"name": "assistant-memory", "path": "/srv/nomad/assistant-memory", "owner": "nomad"}
    ]
    _, job = render(**plain(pipecat_app_driver="raw_exec", nomad_host_volumes=volumes))
    task = task_of(job)
    assert task["driver"] == "raw_exec"
    assert task["user"] == "nomad"  # the volume's owner, so it can write the memory
    assert task.blocks("volume_mount") == []
    write_task_files(job, tmp_path, task_env(job, nomad_env(tmp_path)))
    config = tomllib.loads((tmp_path / "twin-app.toml").read_text())
    assert config["twin"]["memory"]["path"] == "/srv/nomad/assistant-memory/memory.sqlite3"


def test_config_template_writes_a_config_the_app_accepts(tmp_path):
    _, job = render(**plain())
    templates = templates_of(job)
    assert set(templates) == {"local/twin-app.toml", "local/system_prompt.md"}
    assert templates["local/twin-app.toml"]["change_mode"] == "restart"
    write_task_files(job, tmp_path, task_env(job, nomad_env(tmp_path)))
    config = load_config(tmp_path / "twin-app.toml", environ={})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 7860)
    assert config.log.json_lines is True
    assert config.twin.discovery.mode == "consul"
    assert config.twin.discovery.service == "llm-expert"
    # twin_tls false: Consul and Nomad are asked over plain HTTP, with no CA.
    assert config.twin.discovery.consul_addr == "http://127.0.0.1:8500"
    assert config.twin.discovery.nomad_addr == "http://127.0.0.1:4646"
    assert config.server.tls_cert_file is None
    assert config.twin.prompt.consul_key == "twin/prompts/system"
    assert str(config.twin.memory.path) == "/var/lib/twin/memory/memory.sqlite3"
    assert config.stt.provider == "whisper"
    assert config.tts.provider == "piper"


def test_static_experts_routing_rules_and_speech_services_reach_the_app_config(tmp_path):
    experts = [
        {"name": "general", "base_url": "http://10.0.0.5:8080/v1", "model": "smollm2"},
        {"name": "coder", "domain": "code", "base_url": "http://10.0.0.6:8080/v1"},
    ]
    routing = {
        "default_domain": "general",
        "threshold": 0.5,
        "sticky_turns": 0,
        "expert_timeout_s": 9,
        "max_answer_tokens": 1024,
        "rules": [{"domain": "code", "pattern": '(?i)\\b(python|"quoted")\\b'}],
    }
    stt = {"provider": "openai", "base_url": "http://stt.service.consul:8000/v1", "model": "t"}
    tts = {"provider": "openai", "base_url": "http://tts.service.consul:8000/v1", "voice": "v"}
    _, job = render(
        **plain(
            pipecat_app_discovery_mode="static",
            pipecat_app_static_experts=experts,
            pipecat_app_routing=routing,
            pipecat_app_stt=stt,
            pipecat_app_tts=tts,
        )
    )
    write_task_files(job, tmp_path, task_env(job, nomad_env(tmp_path)))
    config = load_config(tmp_path / "twin-app.toml", environ={})
    assert config.twin.discovery.mode == "static"
    assert [(e.name, e.domain, e.base_url) for e in config.twin.experts] == [
        ("general", "general", "http://10.0.0.5:8080/v1"),
        ("coder", "code", "http://10.0.0.6:8080/v1"),
    ]
    assert config.twin.routing.threshold == 0.5
    assert config.twin.routing.expert_timeout_s == 9
    assert config.twin.routing.max_answer_tokens == 1024
    assert [(r.domain, r.pattern) for r in config.twin.routing.rules] == [
        ("code", '(?i)\\b(python|"quoted")\\b')
    ]
    assert config.stt.base_url == "http://stt.service.consul:8000/v1"
    assert config.tts.voice == "v"


def test_prompt_template_follows_the_kv_key_and_falls_back_to_the_role_default(tmp_path):
    prompt = 'You are a patient tutor.\nSpeak slowly, with "quotes" and a backslash \\ kept.'
    _, job = render(**plain(pipecat_app_system_prompt=prompt, pipecat_app_prompt_key="lab/prompt"))
    assert task_of(job).block("env")["TWIN_PROMPT_KEY"] == "lab/prompt"
    assert templates_of(job)["local/system_prompt.md"]["change_mode"] == "restart"

    write_task_files(job, tmp_path, task_env(job, nomad_env(tmp_path)), kv={})
    config = load_config(tmp_path / "twin-app.toml", environ={})
    assert config.twin.prompt.consul_key == "lab/prompt"
    assert load_default(config.twin.prompt) == prompt

    write_task_files(
        job,
        tmp_path,
        task_env(job, nomad_env(tmp_path)),
        kv={"lab/prompt": "Evolved prompt from Consul."},
    )
    assert load_default(config.twin.prompt) == "Evolved prompt from Consul."


def test_prompt_change_mode_noop_is_passed_through():
    _, job = render(pipecat_app_prompt_change_mode="noop")
    assert templates_of(job)["local/system_prompt.md"]["change_mode"] == "noop"


def test_extra_env_reaches_the_task_environment():
    _, job = render(pipecat_app_env={"TWIN_APP__LOG__LEVEL": "DEBUG", "NUMBER": 3})
    env = task_of(job).block("env").body
    assert env["TWIN_APP__LOG__LEVEL"] == "DEBUG"
    assert env["NUMBER"] == "3"
    assert env["HOME"] == "${NOMAD_TASK_DIR}"


# Who may talk to it: the access token, HTTPS and the Consul token reach the
# task through the job's Nomad Variable, never the job specification.


def test_secrets_reach_the_task_from_the_jobs_nomad_variable_not_the_job_spec(tmp_path):
    text, job = render()
    task = task_of(job)
    assert task.block("env")["TWIN_SECRETS_VARIABLE"] == VARIABLE
    # Tokens as environment variables, from an env template in secrets/.
    [env_template] = [t for t in task.blocks("template") if t.get("env", False)]
    assert env_template["destination"] == "secrets/twin-app.env"
    variables = secrets_variable(tmp_path)
    env = task_env(job, nomad_env(tmp_path), variables)
    assert env["TWIN_APP__SERVER__ACCESS_TOKEN"] == ACCESS_TOKEN
    assert env["CONSUL_HTTP_TOKEN"] == CONSUL_TOKEN
    assert env["TWIN_APP__TWIN__TOOLS__VISION_TOKEN"] == VISION_TOKEN
    # Certificate, key and CA as files in secrets/, for the task's user only.
    files = {str(t["destination"]): t for t in task.blocks("template") if not t.get("env", False)}
    for name in ("secrets/tls.pem", "secrets/tls.key", "secrets/ca.pem"):
        assert (files[name]["perms"], files[name]["uid"], files[name]["gid"]) == ("0600", 990, 991)
    write_task_files(job, tmp_path, env, variables=variables)
    secrets = Path(env["NOMAD_SECRETS_DIR"])
    items = variables[VARIABLE]
    for name, item in (("tls.pem", "tls_cert"), ("tls.key", "tls_key"), ("ca.pem", "ca_cert")):
        assert (secrets / name).read_text().strip() == items[item].strip()
        assert (secrets / name).stat().st_mode & 0o777 == 0o600
    # The app's config points at them, and the loader takes the token from the env.
    config = load_config(tmp_path / "twin-app.toml", environ=env)
    assert config.server.tls_cert_file == secrets / "tls.pem"
    assert config.server.tls_key_file == secrets / "tls.key"
    assert config.server.access_token.get_secret_value() == ACCESS_TOKEN
    assert config.server.metrics_access == "local"
    assert config.twin.discovery.ca_file == str(secrets / "ca.pem")
    assert config.twin.discovery.consul_addr == "https://127.0.0.1:8501"
    assert config.twin.discovery.nomad_addr == "https://127.0.0.1:4646"
    assert config.twin.discovery.resolved_consul_token() == ""  # only the env's, below
    assert config.twin.tools.vision_token.get_secret_value() == VISION_TOKEN
    # The Consul health check asks over HTTPS.
    check = job.group("assistant").block("service").block("check")
    assert (check["protocol"], check["tls_skip_verify"]) == ("https", True)
    # Nothing secret in the job specification.
    for secret in (ACCESS_TOKEN, CONSUL_TOKEN, VISION_TOKEN, "PRIVATE KEY"):
        assert secret not in text


def test_access_tokens_and_consul_token_off_leave_no_env_template(tmp_path):
    _, job = render(
        pipecat_app_access_token_enable=False,
        pipecat_app_consul_acl=False,
        pipecat_app_vision_token_enable=False,
    )
    task = task_of(job)
    assert [t for t in task.blocks("template") if t.get("env", False)] == []
    env = task_env(job, nomad_env(tmp_path))
    assert "TWIN_APP__SERVER__ACCESS_TOKEN" not in env
    assert "CONSUL_HTTP_TOKEN" not in env
    assert "TWIN_APP__TWIN__TOOLS__VISION_TOKEN" not in env


def test_twin_tls_off_serves_plain_http_without_certificate_or_ca(tmp_path):
    _, job = render(twin_tls=False)
    destinations = set(templates_of(job))
    assert destinations == {"local/twin-app.toml", "local/system_prompt.md", "secrets/twin-app.env"}
    check = job.group("assistant").block("service").block("check")
    assert "protocol" not in check.body
    items = {"access_token": ACCESS_TOKEN, "consul_token": CONSUL_TOKEN}
    variables = {VARIABLE: {**items, "vision_token": VISION_TOKEN}}
    env = task_env(job, nomad_env(tmp_path), variables)
    write_task_files(job, tmp_path, env, variables=variables)
    config = load_config(tmp_path / "twin-app.toml", environ=env)
    assert config.server.tls_cert_file is None
    assert config.twin.discovery.ca_file == ""
    # A plain-http vision service may still require its token.
    assert config.twin.tools.vision_token.get_secret_value() == VISION_TOKEN
    assert config.twin.discovery.consul_addr == "http://127.0.0.1:8500"
    assert config.server.access_token.get_secret_value() == ACCESS_TOKEN


def test_cluster_services_over_https_alone_ship_the_ca_to_the_app(tmp_path):
    # Consul and Nomad over plain HTTP; the vision service (twin_tls) over HTTPS.
    _, job = render(consul_tls_enable=False, nomad_tls_enable=False)
    assert "secrets/ca.pem" in templates_of(job)
    variables = secrets_variable(tmp_path)
    env = task_env(job, nomad_env(tmp_path), variables)
    write_task_files(job, tmp_path, env, variables=variables)
    config = load_config(tmp_path / "twin-app.toml", environ=env)
    assert config.twin.discovery.consul_addr == "http://127.0.0.1:8500"
    ca = Path(env["NOMAD_SECRETS_DIR"]) / "ca.pem"
    assert config.twin.discovery.ca_file == str(ca)
    assert config.twin.discovery.service_tls("the vision service").ca_file == str(ca)
    assert ca.read_text().strip() == variables[VARIABLE]["ca_cert"].strip()


def test_own_certificate_without_cluster_tls_ships_no_ca(tmp_path):
    _, job = render(
        consul_tls_enable=False,
        nomad_tls_enable=False,
        pipecat_app_services_tls=False,
        pipecat_app_tls_cert_file="/srv/tls/assistant.pem",
        pipecat_app_tls_key_file="/srv/tls/assistant.key",
    )
    assert set(templates_of(job)) >= {"secrets/tls.pem", "secrets/tls.key"}
    assert "secrets/ca.pem" not in templates_of(job)
    assert (
        evaluate("{{ _pipecat_app_tls_issue }}", role_vars(pipecat_app_tls_cert_file="/x")) is False
    )


def test_metrics_access_reaches_the_app_config(tmp_path):
    _, job = render(**plain(pipecat_app_metrics_access="open"))
    write_task_files(job, tmp_path, task_env(job, nomad_env(tmp_path)))
    assert load_config(tmp_path / "twin-app.toml", environ={}).server.metrics_access == "open"


def test_certificate_names_every_host_of_the_group_by_name_and_address():
    hostvars = {
        "node1": {
            "ansible_host": "192.168.1.11",
            "ansible_facts": {
                "fqdn": "node1.home.arpa",
                "hostname": "mini-pc-1",
                "default_ipv4": {"address": "192.168.1.11"},
            },
        },
        "10.0.0.7": {},  # an inventory name that is an address
        "node3": {"ansible_host": "fd00::3"},
    }
    sans = evaluate(
        "{{ _pipecat_app_tls_sans }}",
        role_vars(hostvars, pipecat_app_tls_extra_sans=["DNS:assistant.home.arpa"]),
    )
    assert sorted(sans) == sorted(
        [
            "DNS:localhost",
            "IP:127.0.0.1",
            "DNS:twin-assistant.service.consul",
            "DNS:node1",
            "IP:192.168.1.11",
            "DNS:node1.home.arpa",
            "DNS:mini-pc-1",
            "IP:10.0.0.7",
            "DNS:node3",
            "IP:fd00::3",
            "DNS:assistant.home.arpa",
        ]
    )


def test_consul_policy_reads_only_the_expert_and_vision_services_nodes_and_the_prompt_key():
    rules = parse_hcl(
        evaluate(
            "{{ _pipecat_app_consul_rules }}",
            role_vars(pipecat_app_vision_service="eyes", pipecat_app_prompt_key="lab/prompt"),
        )
    )
    assert rules == {
        "service": [{"llm-expert": {"policy": "read"}}, {"eyes": {"policy": "read"}}],
        "node_prefix": [{"": {"policy": "read"}}],
        "key": [{"lab/prompt": {"policy": "read"}}],
    }


# The role's own checks, through the real ansible-playbook.


def test_validate_passes_the_defaults(tmp_path):
    # The consul role's bootstrap token, next to the inventory (tmp_path).
    (tmp_path / ".credentials").mkdir()
    (tmp_path / ".credentials" / "consul-bootstrap.token").write_text("e1a2b3c4\n")
    result = run_validate(tmp_path, {"pipecat_app_hosts": ["node1"]})
    assert result.returncode == 0, result.output


@pytest.mark.parametrize(
    ("groups", "role_vars_", "message"),
    [
        pytest.param({"cluster": ["node1"]}, {}, "pipecat_app_hosts_group", id="empty-group"),
        pytest.param(
            {"pipecat_app_hosts": ["node1"]},
            {"pipecat_app_system_prompt": "Say ${NAME} aloud."},
            "pipecat_app_system_prompt",
            id="template-syntax-in-prompt",
        ),
        pytest.param(
            {"pipecat_app_hosts": ["node1"]},
            {"pipecat_app_discovery_mode": "static"},
            "pipecat_app_static_experts",
            id="static-without-experts",
        ),
        pytest.param(
            {"pipecat_app_hosts": ["node1"]},
            {"pipecat_app_stt": {"provider": "openai"}},
            "base_url",
            id="openai-stt-without-url",
        ),
        pytest.param(
            {"pipecat_app_hosts": ["node1"]},
            {},  # no consul-bootstrap.token next to the inventory
            "pipecat_app_consul_management_token_file",
            id="consul-acl-without-management-token",
        ),
        pytest.param(
            {"pipecat_app_hosts": ["node1"]},
            {"pipecat_app_consul_acl": False, "pipecat_app_tls_cert_file": "/srv/tls/a.pem"},
            "pipecat_app_tls_key_file",
            id="own-certificate-without-key",
        ),
        pytest.param(
            {"pipecat_app_hosts": ["node1"]},
            {
                "pipecat_app_consul_acl": False,
                "pipecat_app_metrics_access": "token",
                "pipecat_app_access_token_enable": False,
            },
            "no token to check",
            id="metrics-behind-a-token-that-is-off",
        ),
        pytest.param(
            {"pipecat_app_hosts": ["node1"]},
            {
                "pipecat_app_user": "twin",
                "nomad_host_volumes": [
                    {"name": "assistant-memory", "path": "/m", "owner": "nomad"}
                ],
            },
            "set the volume's owner to twin",
            id="user-cannot-write-volume",
        ),
    ],
)
def test_validate_rejects_settings_with_a_message_naming_the_fix(
    tmp_path, groups, role_vars_, message
):
    result = run_validate(tmp_path, groups, **role_vars_)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]


def readme_section() -> str:
    readme = (ROOT / "jobs" / "README.md").read_text()
    return readme[readme.index("## pipecat-app.nomad.hcl.j2") :]


def test_every_field_of_the_template_input_is_documented_in_the_jobs_readme():
    assistant = job_input()
    fields = [*assistant, *assistant["config"], *assistant["config"]["twin"]]
    rows = re.findall(r"^\| `(\w+)` \|", readme_section(), re.MULTILINE)
    assert [f for f in fields if f not in rows] == []


def test_the_readmes_hand_written_input_has_the_roles_fields_and_renders(tmp_path):
    [example] = re.findall(r"```yaml\n(# assistant\.yml\n.*?)```", readme_section(), re.DOTALL)
    assistant = yaml.safe_load(example)["assistant"]
    computed = job_input()
    assert sorted(assistant) == sorted(computed)
    assert sorted(assistant["config"]) == sorted(computed["config"])
    assert sorted(assistant["config"]["twin"]) == sorted(computed["config"]["twin"])
    job = parse_job(render_job(TEMPLATE, {"assistant": assistant}))
    assert job.id == "pipecat-app"
    variables = secrets_variable(tmp_path)
    env = task_env(job, nomad_env(tmp_path), variables)
    write_task_files(job, tmp_path, env, variables=variables)
    config = load_config(tmp_path / "twin-app.toml", environ=env)
    assert config.twin.discovery.service == "llm-expert"
    assert config.server.access_token.get_secret_value() == ACCESS_TOKEN


# The role's job tasks against Consul's and Nomad's APIs (hand-written
# fixtures) behind HTTPS with a CA of the test's own: the requests get through
# only with the role's CA paths. The inventory folder is tmp_path, so the
# role's .credentials (access token, collection CA, issued certificate) land
# there.

NOMAD_TOKEN = "0b7e4c2d-6a1f-4e8b-9d3c-2f5a6b7c8d9e"
CONSUL_BOOTSTRAP = "e1a2b3c4-d5e6-4f70-8192-a3b4c5d6e7f8"
APP_ACCESSOR = "e42e4a7d-05bc-51de-ba68-14382abaf429"  # uuid5 of "apps/pipecat-app"
NOMAD_FIXTURES = [
    "pipecat_app_parse",
    "pipecat_app_plan_added",
    "jobs_register",
    "var_pipecat_app_read",
    "var_pipecat_app_write",
]
CONSUL_FIXTURES = [
    "acl_policy_read_job_pipecat_app",
    "acl_policy_create_job_pipecat_app",
    "acl_token_read_job_pipecat_app",
    "acl_token_create_job_pipecat_app",
]
APP_RULES = """service "llm-expert" {
  policy = "read"
}
service "vision" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
key "twin/prompts/system" {
  policy = "read"
}
"""


def run_job_tasks(tmp_path: Path, nomad_url: str, consul_url: str, ca: Path) -> PlayResult:
    """Run the role's job.yml on localhost for one assistant host, node1 at 192.168.1.11."""
    credentials = tmp_path / ".credentials"
    credentials.mkdir(exist_ok=True)
    (credentials / "consul-bootstrap.token").write_text(CONSUL_BOOTSTRAP + "\n")
    play = [
        {
            "name": "Render and submit the pipecat-app job.",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {
                "pipecat_app_jobs_dir": str(tmp_path / "rendered"),
                "pipecat_app_nomad_host": "localhost",
                "pipecat_app_nomad_addr": nomad_url,
                "pipecat_app_nomad_token": NOMAD_TOKEN,
                "pipecat_app_nomad_ca_path": str(ca),
                "pipecat_app_consul_api_addr": consul_url,
                "pipecat_app_consul_ca_path": str(ca),
                # The prompt-evolve job's own token and submission:
                # tests/test_prompt_evolve_job.py.
                "pipecat_app_prompt_evolve": False,
                # As after the wheelhouse step.
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
    node1 = {"ansible_host": "192.168.1.11", "_pipecat_app_ids": OWNER}
    hosts = inventory({"pipecat_app_hosts": ["node1"]}, hosts={"node1": node1}, local=["localhost"])
    return run_playbook(play, hosts, workdir=tmp_path)


def test_role_gives_the_job_its_token_certificate_and_consul_token_then_submits_it(tmp_path):
    certs_dir = tmp_path / "api-tls"
    certs_dir.mkdir()
    certs = make_ca(certs_dir)
    with (
        FixtureAPI("nomad_jobs", NOMAD_FIXTURES) as nomad,
        FixtureAPI("consul", CONSUL_FIXTURES) as consul_api,
        tls_front(nomad.url, certs) as nomad_url,
        tls_front(consul_api.url, certs) as consul_url,
    ):
        proc = run_job_tasks(tmp_path, nomad_url, consul_url, certs.ca)
    assert proc.returncode == 0, proc.output
    assert nomad.unmatched == []
    assert consul_api.unmatched == []

    # 16: the access token, generated once into the inventory's .credentials.
    token_file = tmp_path / ".credentials" / "pipecat-app.token"
    token = token_file.read_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9]{43}", token)
    assert token_file.stat().st_mode & 0o777 == 0o600

    # 18: the app's least-privilege policy and a token linked to it.
    [policy] = consul_api.requests_to("PUT", "/v1/acl/policy")
    assert policy.json()["Name"] == "nomad-job-apps-pipecat-app"
    assert policy.json()["Rules"] == APP_RULES
    [created] = consul_api.requests_to("PUT", "/v1/acl/token")
    assert created.json()["AccessorID"] == APP_ACCESSOR
    assert created.json()["Policies"] == [{"Name": "nomad-job-apps-pipecat-app"}]
    assert "SecretID" not in created.json()  # Consul chooses it
    assert {r.header("X-Consul-Token") for r in consul_api.requests} == {CONSUL_BOOTSTRAP}

    # The job's Nomad Variable, written once before the job, with every secret.
    [put] = nomad.requests_to("PUT", "/v1/var/nomad/jobs/pipecat-app")
    assert put.query == {"namespace": ["apps"], "cas": ["0"]}
    items = put.json()["Items"]
    assert sorted(items) == [
        "access_token",
        "ca_cert",
        "consul_token",
        "tls_cert",
        "tls_key",
        "vision_token",
    ]
    assert items["access_token"] == token
    # The vision service's token: the file the vision role generates, made
    # here first (the assistant's play runs before the vision role's).
    vision_token_file = tmp_path / ".credentials" / "vision.token"
    assert items["vision_token"] == vision_token_file.read_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9]{43}", items["vision_token"])
    assert items["vision_token"] != token
    assert vision_token_file.stat().st_mode & 0o777 == 0o600
    assert items["consul_token"] == CONSUL_TOKEN  # the SecretID Consul answered with
    ca = tmp_path / ".credentials" / "ca" / "ca.pem"
    assert items["ca_cert"].strip() == ca.read_text().strip()
    # 15: the certificate names the host and is signed by the collection CA.
    cert = x509.load_pem_x509_certificate(items["tls_cert"].encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "localhost",
        "node1",
        "twin-assistant.service.consul",
    }
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "192.168.1.11",
    }
    ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    assert "PRIVATE KEY" in items["tls_key"]
    paths = [(r.method, r.path) for r in nomad.requests]
    assert paths.index(("PUT", "/v1/var/nomad/jobs/pipecat-app")) < paths.index(
        ("POST", "/v1/jobs")
    )

    # 17: the submission over HTTPS with the role's CA path, and the job itself.
    assert {r.header("X-Nomad-Token") for r in nomad.requests} == {NOMAD_TOKEN}
    [parse] = nomad.requests_to("POST", "/v1/jobs/parse")
    rendered = (tmp_path / "rendered" / "pipecat-app.nomad.hcl").read_text()
    assert parse.json()["JobHCL"].strip() == rendered.strip()
    job = parse_job(rendered)
    assert task_of(job).block("env")["TWIN_SECRETS_VARIABLE"] == "nomad/jobs/pipecat-app"
    assert len(nomad.requests_to("POST", "/v1/jobs")) == 1

    # No secret in the output or the job file; the play names the HTTPS URL.
    for secret in (token, CONSUL_TOKEN, CONSUL_BOOTSTRAP, NOMAD_TOKEN):
        assert secret not in proc.output
        assert secret not in rendered
    assert "The assistant answers at https://192.168.1.11:7860/" in proc.output


def test_job_tasks_stop_when_hosts_give_the_user_different_ids(tmp_path):
    play = [
        {
            "name": "Render the pipecat-app job.",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {"pipecat_app_submit_job": False, "_pipecat_app_source_hash": SOURCE_HASH},
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
    hosts = inventory(
        {"pipecat_app_hosts": ["node1", "node2"]},
        hosts={
            "node1": {"_pipecat_app_ids": OWNER},
            "node2": {"_pipecat_app_ids": {"uid": 7, "gid": 7}},
        },
        local=["localhost"],
    )
    proc = run_playbook(play, hosts, workdir=tmp_path)
    assert proc.returncode != 0
    assert "Give twin-assistant the same uid and gid on every machine" in proc.stdout


# The rendered task, run here the way the expert jobs' tests run theirs.


@pytest.fixture
def llama_server(tmp_path) -> Iterator[str]:
    """A real llama-server with SmolLM2; yields its OpenAI-compatible base URL."""
    log = tmp_path / "llama-server.log"
    with smollm2_server_or_skip(jinja=False, extra_args=["--metrics"], log=log) as server:
        yield server.base_url


@pytest.mark.slow
def test_rendered_task_comes_up_healthy_and_answers_a_text_turn(tmp_path, llama_server):
    # The release directory the job names holds this checkout's environment,
    # where the app is installed (what the role's venv holds on a node).
    install_dir = tmp_path / "install"
    (install_dir / RELEASE).mkdir(parents=True)
    (install_dir / RELEASE / "venv").symlink_to(ROOT / ".venv")
    memory = tmp_path / "assistant-memory"
    memory.mkdir()
    # Plain HTTP and no tokens: LocalTask's check speaks plain HTTP; the
    # secrets' wiring is checked above, the app's HTTPS and token by its tests.
    _, job = render(
        **plain(),
        pipecat_app_install_dir=str(install_dir),
        pipecat_app_driver="raw_exec",  # a host process, as here; no chroot
        pipecat_app_memory_host_path=str(memory),
        pipecat_app_http_port=0,
        pipecat_app_discovery_mode="static",
        pipecat_app_static_experts=[
            {"name": "general", "base_url": llama_server, "model": "smollm2-135m"}
        ],
        pipecat_app_max_sessions=2,
        pipecat_app_max_text_sessions=3,
    )
    spec = TaskSpec.from_job(job, "assistant", "twin-app")
    assert spec.command == f"{install_dir}/{RELEASE}/venv/bin/twin-app"
    task = LocalTask(spec)
    task.prepare()
    # Nomad renders the templates before it starts the task; there is no
    # Consul here, so the prompt key is absent and the role's default is used.
    write_task_files(job, Path(task.env["NOMAD_TASK_DIR"]), task.env, kv={})
    with task:
        task.wait_healthy(timeout=180)
        caps = httpx.get(task.url("http") + "/health", timeout=10).json()["sessions"]
        assert (caps["max"], caps["max_text"]) == (2, 3)  # the role's caps reached the app
        response = httpx.post(
            task.url("http") + "/api/chat",
            json={"text": "Hello! Please answer with one short friendly sentence."},
            timeout=180,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["session_id"]
        assert answer["text"].strip(), f"empty answer; task log:\n{task.log()[-3000:]}"
        # The app answers with an apology when no expert can be reached; the
        # words must have come from the model.
        assert tokens_predicted(llama_server) > 0, f"llama-server generated nothing: {answer}"
        assert (memory / "memory.sqlite3").is_file(), "memory not on the volume's host path"
        assert task.stop() == 0, f"unclean stop on SIGTERM; log:\n{task.log()[-3000:]}"
