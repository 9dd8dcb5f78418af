"""jobs/vision.nomad.hcl.j2 rendered from what the vision role computes, and its task run here.

The template's one input, ``vision``, is the role's ``_vision_job`` from its
defaults and vars as Ansible loads them (``helpers.jobs``); the config file
the role writes on the nodes is the role's own ``_vision_config``, fed to the
service's real config loader. The task is then run locally from the parsed
HCL (``helpers.nomad_task.LocalTask``): it comes up healthy on its Consul
check and describes an uploaded photo.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.jobs import Job, evaluate, parse_job, render_job
from helpers.jobs import role_vars as helpers_role_vars
from helpers.nomad_task import LocalTask, TaskSpec
from helpers.vision import photo
from vision.config import load_config

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "apps" / "vision" / "pyproject.toml").read_text())["project"][
    "version"
]
SOURCE_HASH = "fedcba9876543210" * 4
RELEASE = f"{VERSION}-{SOURCE_HASH[:12]}"


TOKEN = "token-the-password-lookup-made-0123456789"
CONFIG_TEMPLATE = ROOT / "roles" / "vision" / "templates" / "vision.toml.j2"


def role_vars(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """The role's variables after the wheelhouse step, with an inventory in ``tmp_path``.

    What lookups give in a play is given: the version (a file lookup), the
    token (the password lookup; molecule runs the real one) and the config
    file (the template lookup; rendered here from the role's template).
    """
    hostvars = {"cam1": {"nomad_node_meta": {"camera": "/dev/video0"}}, "cam2": {}}
    defaults: dict[str, Any] = {
        "playbook_dir": str(tmp_path / "playbooks"),
        "inventory_dir": str(tmp_path / "inventory"),
        "groups": {"vision_hosts": list(hostvars)},
        "hostvars": hostvars,
        "ansible_managed": "Ansible managed",
        "_vision_source_hash": SOURCE_HASH,
        "_vision_version": VERSION,
        "_vision_access_token": TOKEN,
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


def test_consul_service_vision_with_an_http_check_on_health(tmp_path):
    _, job = render(tmp_path)
    group = job.group("vision")
    (service,) = group.blocks("service")
    assert service["name"] == "vision"
    assert service["provider"] == "consul"
    assert "vision" in service["tags"]
    (check,) = service.blocks("check")
    assert (check["type"], check["path"], check["protocol"]) == ("http", "/health", "http")
    assert group.blocks("network")[0].labelled("port")["http"]["static"] == 8090


def test_task_runs_the_release_with_the_nodes_config_and_its_camera(tmp_path):
    _, job = render(tmp_path)
    spec = TaskSpec.from_job(job, "vision", "vision")
    assert spec.driver == "raw_exec"
    assert spec.command == f"/usr/local/lib/twin-vision/{RELEASE}/venv/bin/twin-vision"
    assert spec.args == ("serve", "--config", "/etc/twin/vision/vision.toml")
    assert spec.env["TWIN_VISION__CAMERA__SOURCE"] == "${meta.camera}"
    task = job.group("vision").labelled("task")["vision"]
    assert task["user"] == "twin-vision"


def test_config_file_holds_the_token_not_the_job(tmp_path):
    variables, job = render(tmp_path)
    path = tmp_path / "vision.toml"
    path.write_text(variables["_vision_config"])
    config = load_config(path, environ={})
    assert config.server.access_token.get_secret_value() == TOKEN
    assert config.server.metrics_access == "local"
    assert config.server.tls_cert_file is None
    assert config.vlm.consul_addr == "http://127.0.0.1:8500"
    assert config.vlm.consul_tag == "vision"
    rendered = render_job(
        "vision.nomad.hcl.j2", {"vision": evaluate("{{ _vision_job }}", variables)}
    )
    assert TOKEN not in rendered
    # A changed config file changes the job, so Nomad rolls it out.
    meta = job.group("vision").labelled("task")["vision"].blocks("meta")[0]
    _, other = render(tmp_path, vision_camera_fps=5)
    other_meta = other.group("vision").labelled("task")["vision"].blocks("meta")[0]
    assert meta["config_sha256"] != other_meta["config_sha256"]


def test_tls_makes_the_check_https_and_the_config_point_at_the_node_files(tmp_path):
    variables, job = render(
        tmp_path, vision_tls_cert_file="/ctl/cert.pem", vision_tls_key_file="/ctl/key.pem"
    )
    (check,) = job.group("vision").blocks("service")[0].blocks("check")
    assert check["protocol"] == "https"
    assert check["tls_skip_verify"] is True
    config = tomllib.loads(variables["_vision_config"])
    assert config["server"]["tls_cert_file"] == "/etc/twin/vision/tls/cert.pem"
    assert config["server"]["tls_key_file"] == "/etc/twin/vision/tls/key.pem"


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
    )
    (config_dir / "vision.toml").write_text(variables["_vision_config"])
    spec = TaskSpec.from_job(job, "vision", "vision")
    # A node with no camera source in its meta would not get the job; an
    # empty source here is "no camera", so only uploads are described.
    task = LocalTask(spec, node_meta={"camera": ""})
    task.prepare()
    with task:
        task.wait_healthy(timeout=120)
        health = httpx.get(task.url("http") + "/health", timeout=10).json()
        # No Consul here to find a VLM in: degraded for that reason alone (still 200).
        assert health["camera"] is None
        assert health["reasons"]
        assert all("Consul at http://127.0.0.1:8500" in reason for reason in health["reasons"])
        denied = httpx.post(task.url("http") + "/describe", content=photo("astronaut"))
        assert denied.status_code == 401  # the role's token guards it
        response = httpx.post(
            task.url("http") + "/describe",
            files={"image": ("astronaut.jpg", photo("astronaut"), "image/jpeg")},
            data={"ocr": "false"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
        assert response.status_code == 200, f"{response.text}\n{task.log()[-3000:]}"
        assert response.json()["description"].startswith("One person, facing the camera.")
        assert task.stop() == 0, f"unclean stop on SIGTERM; log:\n{task.log()[-3000:]}"
