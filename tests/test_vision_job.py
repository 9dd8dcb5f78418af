"""jobs/vision.nomad.hcl.j2 rendered from what the vision role computes, and its task run here.

The template's one input, ``vision``, is the role's ``_vision_job`` from its
defaults and vars as Ansible loads them (``helpers.jobs``); the config file
the role writes on the nodes is the role's own ``_vision_config``, fed to the
service's real config loader. The secrets (access token, the certificate and
key the collection CA issued, Consul's CA and token) come from the job's
Nomad Variable through its templates, rendered here as Nomad would
(``render_consul_template`` of the assistant's job tests). The task is then
run locally from the parsed HCL (``helpers.nomad_task.LocalTask``): it comes
up healthy over HTTPS on its Consul check and describes an uploaded photo.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.consul_template import render_consul_template
from helpers.jobs import Job, evaluate, parse_job, render_job
from helpers.jobs import role_vars as helpers_role_vars
from helpers.nomad_task import LocalTask, TaskSpec, interpolate
from helpers.pipecat_app_role import ACCESS_TOKEN, CONSUL_TOKEN
from helpers.pipecat_app_role import secrets_variable as assistant_secrets
from helpers.vision import photo
from pipecat_app.twin.discovery import experts_from_health
from vision.config import load_config

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "apps" / "vision" / "pyproject.toml").read_text())["project"][
    "version"
]
SOURCE_HASH = "fedcba9876543210" * 4
RELEASE = f"{VERSION}-{SOURCE_HASH[:12]}"


TOKEN = ACCESS_TOKEN
VARIABLE = "nomad/jobs/vision"
OWNER = {"uid": 993, "gid": 994}
CONFIG_TEMPLATE = ROOT / "roles" / "vision" / "templates" / "vision.toml.j2"


def role_vars(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """The role's variables after the wheelhouse step, with an inventory in ``tmp_path``.

    What lookups give in a play is given: the version (a file lookup) and the
    config file (the template lookup; rendered here from the role's
    template). The hosts' ids of the service's user are what files.yml found.
    """
    hostvars = {
        "cam1": {"nomad_node_meta": {"camera": "/dev/video0"}, "_vision_ids": OWNER},
        "cam2": {"_vision_ids": OWNER},
    }
    defaults: dict[str, Any] = {
        "playbook_dir": str(tmp_path / "playbooks"),
        "inventory_dir": str(tmp_path / "inventory"),
        "groups": {"vision_hosts": list(hostvars)},
        "hostvars": hostvars,
        "ansible_managed": "Ansible managed",
        "_vision_source_hash": SOURCE_HASH,
        "_vision_version": VERSION,
    }
    variables = helpers_role_vars("vision", **{**defaults, **overrides})
    variables["_vision_config"] = render_job(CONFIG_TEMPLATE, variables)
    return variables


def render(tmp_path: Path, **overrides: Any) -> tuple[dict[str, Any], Job]:
    variables = role_vars(tmp_path, **overrides)
    job_input = evaluate("{{ _vision_job }}", variables)
    return variables, parse_job(render_job("vision.nomad.hcl.j2", {"vision": job_input}))


def test_system_job_in_namespace_apps_on_installed_hosts_with_a_camera(tmp_path):
    _, job = render(tmp_path)
    assert job.id == "vision"
    assert job["namespace"] == "apps"
    assert job["type"] == "system"
    constraints = {c["attribute"]: c for c in job.blocks("constraint")}
    assert constraints["${attr.unique.hostname}"]["operator"] == "set_contains_any"
    assert constraints["${attr.unique.hostname}"]["value"] == "cam1,cam2"
    assert constraints["${meta.camera}"]["operator"] == "is_set"


def test_consul_service_vision_with_an_https_check_on_health(tmp_path):
    _, job = render(tmp_path)
    group = job.group("vision")
    (service,) = group.blocks("service")
    assert service["name"] == "vision"
    assert service["provider"] == "consul"
    assert "vision" in service["tags"]
    (check,) = service.blocks("check")
    assert (check["type"], check["path"], check["protocol"]) == ("http", "/health", "https")
    assert group.blocks("network")[0].labelled("port")["http"]["static"] == 8090
    # The meta says so, and the app's discovery calls it over https.
    meta = service.block("meta").body
    assert meta["scheme"] == "https"
    entry = {"Service": {"ID": "vision", "Address": "10.0.0.5", "Port": 8090, "Meta": meta}}
    [found] = experts_from_health([entry])
    assert found.base_url.startswith("https://10.0.0.5:8090")


def test_task_runs_the_release_with_the_nodes_config_and_its_camera(tmp_path):
    _, job = render(tmp_path)
    spec = TaskSpec.from_job(job, "vision", "vision")
    assert spec.driver == "raw_exec"
    assert spec.command == f"/usr/local/lib/twin-vision/{RELEASE}/venv/bin/twin-vision"
    assert spec.args == ("serve", "--config", "/etc/twin/vision/vision.toml")
    assert spec.env["TWIN_VISION__CAMERA__SOURCE"] == "${meta.camera}"
    task = job.group("vision").labelled("task")["vision"]
    assert task["user"] == "twin-vision"


def secrets_variable(tmp_path: Path) -> dict[str, dict[str, str]]:
    """The job's Nomad Variable as the role writes it: the items of the assistant's job tests
    (the tokens, and a certificate, key and CA of a real test CA) under this job's path."""
    (items,) = assistant_secrets(tmp_path).values()
    return {VARIABLE: items}


def task_env(
    job: Job, runtime: dict[str, str], variables: dict[str, dict[str, str]]
) -> dict[str, str]:
    """Nomad's values, the env block interpolated, then the ``env = true`` template's lines."""
    env = dict(runtime)
    task = job.group("vision").labelled("task")["vision"]
    for name, value in task.block("env").body.items():
        env[name] = interpolate(str(value), runtime)
    for block in task.blocks("template"):
        if block.get("env", False):
            text = render_consul_template(str(block["data"]), env, {}, variables)
            env.update(line.split("=", 1) for line in text.splitlines() if line.strip())
    return env


def write_secret_files(job: Job, env: dict[str, str], variables: dict[str, dict[str, str]]) -> None:
    """The file templates' secrets/ destinations, with their perms, as Nomad writes them."""
    task = job.group("vision").labelled("task")["vision"]
    for block in task.blocks("template"):
        if block.get("env", False):
            continue
        folder, _, name = str(block["destination"]).partition("/")
        assert folder == "secrets", block["destination"]
        path = Path(env["NOMAD_SECRETS_DIR"]) / name
        path.write_text(render_consul_template(str(block["data"]), env, {}, variables))
        path.chmod(int(str(block["perms"]), 8))


def nomad_env(secrets: Path) -> dict[str, str]:
    """Nomad's runtime values the job's env block reads, with ``secrets`` as the secrets dir."""
    return {
        "NOMAD_IP_http": "127.0.0.1",
        "NOMAD_PORT_http": "8090",
        "NOMAD_SECRETS_DIR": str(secrets),
        "NOMAD_TASK_DIR": str(secrets.parent / "local"),
        "meta.camera": "",
    }


def test_secrets_reach_the_task_from_the_jobs_nomad_variable_not_the_node_or_job(tmp_path):
    variables, job = render(tmp_path)
    task = job.group("vision").labelled("task")["vision"]
    assert task.block("env")["TWIN_SECRETS_VARIABLE"] == VARIABLE
    # Tokens as environment variables, from an env template in secrets/.
    [env_template] = [t for t in task.blocks("template") if t.get("env", False)]
    assert env_template["destination"] == "secrets/vision.env"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    variable = secrets_variable(tmp_path)
    env = task_env(job, nomad_env(secrets), variable)
    assert env["TWIN_VISION__SERVER__ACCESS_TOKEN"] == TOKEN
    assert env["TWIN_VISION__VLM__CONSUL_TOKEN"] == CONSUL_TOKEN
    # Certificate, key and CA as files in secrets/, for the task's user only.
    files = {str(t["destination"]): t for t in task.blocks("template") if not t.get("env", False)}
    assert set(files) == {"secrets/tls.pem", "secrets/tls.key", "secrets/ca.pem"}
    for block in files.values():
        assert (block["perms"], block["uid"], block["gid"]) == ("0600", 993, 994)
    write_secret_files(job, env, variable)
    items = variable[VARIABLE]
    for name, item in (("tls.pem", "tls_cert"), ("tls.key", "tls_key"), ("ca.pem", "ca_cert")):
        assert (secrets / name).read_text().strip() == items[item].strip()
        assert (secrets / name).stat().st_mode & 0o777 == 0o600
    # The node's config file and the job's environment give the service all of it.
    path = tmp_path / "vision.toml"
    path.write_text(variables["_vision_config"])
    config = load_config(path, environ=env)
    assert config.server.access_token.get_secret_value() == TOKEN
    assert config.server.tls_cert_file == secrets / "tls.pem"
    assert config.server.tls_key_file == secrets / "tls.key"
    assert config.server.metrics_access == "local"
    assert config.vlm.consul_addr == "https://127.0.0.1:8501"
    assert config.vlm.consul_ca_file == secrets / "ca.pem"
    assert config.vlm.consul_token.get_secret_value() == CONSUL_TOKEN
    assert config.vlm.consul_tag == "vision"
    # The health check asks over HTTPS.
    (check,) = job.group("vision").blocks("service")[0].blocks("check")
    assert (check["protocol"], check["tls_skip_verify"]) == ("https", True)
    # Nothing secret on the node or in the job specification.
    rendered = render_job(
        "vision.nomad.hcl.j2", {"vision": evaluate("{{ _vision_job }}", variables)}
    )
    for secret in (TOKEN, CONSUL_TOKEN, "PRIVATE KEY", "CERTIFICATE"):
        assert secret not in rendered
        assert secret not in variables["_vision_config"]


def test_config_change_rolls_the_job_out(tmp_path):
    _, job = render(tmp_path)
    meta = job.group("vision").labelled("task")["vision"].blocks("meta")[0]
    _, other = render(tmp_path, vision_camera_fps=5)
    other_meta = other.group("vision").labelled("task")["vision"].blocks("meta")[0]
    assert meta["config_sha256"] != other_meta["config_sha256"]


def test_plain_http_without_token_or_consul_acl_has_no_secret_templates(tmp_path):
    variables, job = render(
        tmp_path, twin_tls=False, vision_access_token_enable=False, vision_consul_acl=False
    )
    task = job.group("vision").labelled("task")["vision"]
    assert task.blocks("template") == []
    (check,) = job.group("vision").blocks("service")[0].blocks("check")
    assert check["protocol"] == "http"
    assert job.group("vision").blocks("service")[0].block("meta")["scheme"] == "http"
    env = task.block("env").body
    assert not any(
        name.startswith(("TWIN_VISION__SERVER__TLS", "TWIN_VISION__VLM")) for name in env
    )
    config = tomllib.loads(variables["_vision_config"])
    assert config["vlm"]["consul_addr"] == "http://127.0.0.1:8500"


def test_fixed_vlm_url_needs_no_consul_token_or_ca(tmp_path):
    _, job = render(tmp_path, vision_vlm_url="http://10.0.0.9:8080/v1")
    task = job.group("vision").labelled("task")["vision"]
    destinations = {str(t["destination"]) for t in task.blocks("template")}
    assert destinations == {"secrets/vision.env", "secrets/tls.pem", "secrets/tls.key"}
    [env_template] = [t for t in task.blocks("template") if t.get("env", False)]
    assert "CONSUL_TOKEN" not in str(env_template["data"])


@pytest.mark.slow
def test_rendered_task_comes_up_healthy_and_describes_an_uploaded_image(tmp_path):
    # The release directory the job names holds this checkout's environment,
    # where the service is installed (what the role's venv holds on a node).
    install_dir = tmp_path / "install"
    (install_dir / RELEASE).mkdir(parents=True)
    (install_dir / RELEASE / "venv").symlink_to(ROOT / ".venv")
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    variables, job = render(
        tmp_path,
        vision_install_dir=str(install_dir),
        vision_config_dir=str(config_dir),
        vision_http_port=0,
        # helpers.nomad_task's checks speak plain HTTP; the HTTPS files are
        # checked by the service's own loader in the test above.
        twin_tls=False,
    )
    (config_dir / "vision.toml").write_text(variables["_vision_config"])
    spec = TaskSpec.from_job(job, "vision", "vision")
    variable = secrets_variable(tmp_path)
    # What the env template gives (Nomad renders it before the task starts).
    template_env = {
        name: value
        for name, value in task_env(job, nomad_env(tmp_path), variable).items()
        if name in {"TWIN_VISION__SERVER__ACCESS_TOKEN", "TWIN_VISION__VLM__CONSUL_TOKEN"}
    }
    # A node with no camera source in its meta would not get the job; an
    # empty source here is "no camera", so only uploads are described.
    task = LocalTask(spec, node_meta={"camera": ""}, template_env=template_env)
    task.prepare()
    assert template_env.keys() == {
        "TWIN_VISION__SERVER__ACCESS_TOKEN",
        "TWIN_VISION__VLM__CONSUL_TOKEN",
    }
    url = task.url("http")
    with task:
        task.wait_healthy(timeout=120)
        health = httpx.get(url + "/health", timeout=10).json()
        # No Consul here to find a VLM in: degraded for that reason alone (still 200).
        assert health["camera"] is None
        assert health["reasons"]
        assert all("Consul at http://127.0.0.1:8500" in reason for reason in health["reasons"])
        denied = httpx.post(url + "/describe", content=photo("astronaut"))
        assert denied.status_code == 401  # the token from the job's variable guards it
        response = httpx.post(
            url + "/describe",
            files={"image": ("astronaut.jpg", photo("astronaut"), "image/jpeg")},
            data={"ocr": "false"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
        assert response.status_code == 200, f"{response.text}\n{task.log()[-3000:]}"
        assert response.json()["description"].startswith("One person, facing the camera.")
        assert task.stop() == 0, f"unclean stop on SIGTERM; log:\n{task.log()[-3000:]}"
