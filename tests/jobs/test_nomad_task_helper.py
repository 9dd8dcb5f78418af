"""helpers.nomad_task starts a job's task as a Nomad client would: env, ports, mounts, stop.

Exercised on a small job that runs Python's own HTTP server, so each
behaviour of the helper is checked against a real process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from helpers.jobs import parse_job
from helpers.nomad_task import LocalTask, TaskSpec, in_netns, interpolate, parse_duration

JOB = """
job "web" {
  namespace   = "demo"
  datacenters = ["dc7"]

  group "site" {
    network {
      port "http" {}
    }

    volume "pages" {
      type      = "host"
      source    = "site-pages"
      read_only = true
    }

    service {
      name = "web"
      port = "http"

      check {
        type     = "http"
        path     = "/index.html"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "web" {
      driver = "exec"

      config {
        command = "%(python)s"
        args    = ["-m", "http.server", "${NOMAD_PORT_http}", "--bind", "${NOMAD_IP_http}",
                   "--directory", "/srv/pages"]
      }

      volume_mount {
        volume      = "pages"
        destination = "/srv/pages"
      }

      env {
        WHO     = "${NOMAD_JOB_NAME}/${NOMAD_GROUP_NAME}/${NOMAD_TASK_NAME} on ${node.unique.name}"
        LITERAL = "$${not_interpolated}"
        WHERE   = "${NOMAD_ADDR_http}"
      }

      kill_signal  = "SIGINT"
      kill_timeout = "%(kill_timeout)s"
    }
  }
}
"""


def web_spec(python: str = sys.executable, kill_timeout: str = "3s") -> TaskSpec:
    text = JOB % {"python": python, "kill_timeout": kill_timeout}
    return TaskSpec.from_job(parse_job(text), "site", "web")


@pytest.fixture
def pages(tmp_path: Path) -> Path:
    site = tmp_path / "pages"
    site.mkdir()
    (site / "index.html").write_text("hello from the host volume\n")
    return site


def test_spec_reads_command_ports_mounts_checks_and_durations():
    spec = web_spec(kill_timeout="1m30s")
    assert spec.job_id == "web"
    assert (spec.namespace, spec.datacenter) == ("demo", "dc7")
    assert spec.ports == {"http": None}
    assert [(m.volume, m.source, m.destination) for m in spec.mounts] == [
        ("pages", "site-pages", "/srv/pages")
    ]
    [check] = spec.checks
    assert (check.type, check.port, check.path) == ("http", "http", "/index.html")
    assert spec.kill_signal == "SIGINT"
    assert spec.kill_timeout == 90.0
    assert parse_duration("250ms") == 0.25


def test_task_serves_from_the_mapped_host_volume_on_its_dynamic_port(pages: Path):
    task = LocalTask(web_spec(), host_volumes={"site-pages": pages}, node_name="node9")
    with task:
        port = task.port("http")
        assert task.argv[1:4] == ["-m", "http.server", str(port)]
        assert task.argv[-1] == str(pages)
        task.wait_healthy(timeout=30)
        assert httpx.get(f"{task.url('http')}/index.html").text == "hello from the host volume\n"
        assert task.env["WHO"] == "web/site/web on node9"
        assert task.env["LITERAL"] == "${not_interpolated}"
        assert task.env["WHERE"] == f"127.0.0.1:{port}"
        assert task.env["NOMAD_PORT_http"] == str(port)
        alloc = Path(task.env["NOMAD_ALLOC_DIR"])
        assert Path(task.env["NOMAD_TASK_DIR"]) == alloc.parent / "web" / "local"
        assert Path(task.env["NOMAD_SECRETS_DIR"]).is_dir()
        assert len(task.env["NOMAD_ALLOC_ID"]) == 36
        code = task.stop()
    assert code is not None
    assert not alloc.exists(), "the helper's allocation dir outlives the task"


def test_caller_chosen_port_is_used_for_a_dynamic_port(pages: Path):
    task = LocalTask(web_spec(), host_volumes={"site-pages": pages}, ports={"http": 0})
    task.prepare()  # 0 means "pick one", like Nomad's dynamic range
    assert task.port("http") > 0
    task = LocalTask(web_spec(), host_volumes={"site-pages": pages}, ports={"http": 18765})
    task.prepare()
    assert task.argv[3] == "18765"


def test_unmapped_host_volume_and_unknown_variables_fail_loudly(pages: Path):
    with pytest.raises(KeyError, match="site-pages"):
        LocalTask(web_spec()).prepare()
    with pytest.raises(KeyError, match=r"attr\.cpu\.arch"):
        interpolate("${attr.cpu.arch}", {"NOMAD_PORT_http": "1"})
    assert interpolate('${env["HOME"]}', {"HOME": "/h"}) == "/h"


def test_waiting_for_health_fails_fast_when_the_task_exits(pages: Path):
    spec = web_spec(python=shutil.which("false") or "/bin/false")
    task = LocalTask(spec, host_volumes={"site-pages": pages})
    with task, pytest.raises(RuntimeError, match="exited"):
        task.wait_healthy(timeout=30)


def test_stop_escalates_to_sigkill_after_kill_timeout(tmp_path: Path, pages: Path):
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    spec = web_spec(kill_timeout="1s")
    spec = TaskSpec(**{**spec.__dict__, "args": (str(stubborn),)})
    task = LocalTask(spec, host_volumes={"site-pages": pages})
    with task:
        deadline = time.monotonic() + 20
        while "ready" not in task.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.monotonic()
        code = task.stop()
        took = time.monotonic() - started
    assert code == -9
    assert 0.9 < took < 10


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2")
def test_task_in_a_network_namespace_is_checked_from_inside_it(pages: Path):
    netns = f"twin-h-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        task = LocalTask(
            web_spec(), host_volumes={"site-pages": pages}, netns=netns, ports={"http": 18080}
        )
        with task:
            task.wait_healthy(timeout=30)
            inside = in_netns(netns, lambda: httpx.get("http://127.0.0.1:18080/index.html").text)
            assert inside == "hello from the host volume\n"
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
