"""jobs/expert.nomad.hcl.j2 renders valid HCL2 whose structure is the expert it was given.

A matrix of experts (world 1 on either engine, 2 and 4 on prima.cpp; CPU and
GPU; default and custom namespace and ports; API key on and off) is rendered
through Ansible's own template machinery, parsed with python-hcl2 and checked
block by block.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from helpers.experts import (
    LLAMA_SERVER_BIN,
    SERVER_BIN,
    WORKER_BIN,
    flag,
    has_flag,
    job_vars,
    make_expert,
)
from helpers.jobs import Job, parse_job, render_job
from helpers.nomad_task import TaskSpec, interpolate

TEMPLATE = "expert.nomad.hcl.j2"
MODELS_MOUNT = "/models"

CASES = [
    pytest.param(
        {
            "world": world,
            "engine": engine,
            "gpu": gpu,
            "namespace": "llm" if not custom else "ai-lab",
            "http_port": None if not custom else 18080,
            "data_port_base": 9000 if not custom else 19000,
            "signal_port_base": 10000 if not custom else 20000,
            "api_key_variable": "nomad/jobs/expert-general" if api_key else None,
        },
        id=f"world{world}-{engine}-{'gpu' if gpu else 'cpu'}-{'custom' if custom else 'default'}"
        f"-{'key' if api_key else 'nokey'}",
    )
    for (world, engine), gpu, custom, api_key in itertools.product(
        ((1, "llama.cpp"), (1, "prima.cpp"), (2, "prima.cpp"), (4, "prima.cpp")),
        (False, True),
        (False, True),
        (False, True),
    )
]


def render(expert: dict[str, Any], **extra: Any) -> tuple[str, Job]:
    text = render_job(TEMPLATE, job_vars(expert, **extra))
    return text, parse_job(text)


def args_of(job: Job, group: str) -> list[str]:
    [task] = job.group(group).labelled("task").values()
    return list(task.block("config")["args"])


_RENDERED: dict[str, tuple[dict[str, Any], str, Job]] = {}


@pytest.fixture(params=CASES)
def case(request) -> tuple[dict[str, Any], str, Job]:
    """(expert, rendered text, parsed job); each case is rendered once per session."""
    key = json.dumps(request.param, sort_keys=True)
    if key not in _RENDERED:
        expert = make_expert(**request.param)
        _RENDERED[key] = (expert, *render(expert))
    return _RENDERED[key]


def test_job_identity_namespace_and_datacenters(case):
    expert, text, job = case
    assert text.startswith("#\n# Ansible managed\n#\n")
    assert job.id == f"expert-{expert['name']}"
    assert job["namespace"] == expert["namespace"]
    assert job["region"] == "global"
    assert job["datacenters"] == ["dc1"]
    assert job["type"] == "service"
    update = job.block("update")
    assert update["health_check"] == "checks"
    assert update["auto_revert"] is True


def test_one_group_per_rank_pinned_to_its_node(case):
    expert, _, job = case
    groups = job.groups()
    assert list(groups) == [f"rank-{r}" for r in range(expert["world"])]
    for rank in expert["ranks"]:
        group = groups[f"rank-{rank['rank']}"]
        assert group["count"] == 1
        [constraint] = group.blocks("constraint")
        assert constraint["attribute"] == "${node.unique.name}"
        assert constraint["value"] == rank["node"]
        assert group.block("restart")["attempts"] >= 1


def test_ports_http_on_rank0_and_static_ring_ports_per_rank(case):
    expert, _, job = case
    ring = expert["world"] > 1
    for rank in expert["ranks"]:
        ports = job.group(f"rank-{rank['rank']}").block("network").labelled("port")
        expected = {"http"} if rank["rank"] == 0 else set()
        if ring:
            expected |= {"data", "signal"}
            assert ports["data"]["static"] == rank["data_port"]
            assert ports["signal"]["static"] == rank["signal_port"]
        assert set(ports) == expected
        if rank["rank"] == 0:
            assert ports["http"].get("static") == expert["http_port"]


def test_rank0_runs_llama_server_with_the_expert_settings(case):
    expert, _, job = case
    group = job.group("rank-0")
    task = group.labelled("task")["server"]
    config = task.block("config")
    args = list(config["args"])
    llama = expert["engine"] == "llama.cpp"
    # Upstream llama-server with the model's own chat template (native tool
    # calls), or prima.cpp's, which has neither.
    assert config["command"] == (LLAMA_SERVER_BIN if llama else SERVER_BIN)
    assert has_flag(args, "--jinja") == llama
    assert flag(args, "-m") == f"{MODELS_MOUNT}/{expert['model_file']}"
    assert flag(args, "-c") == str(expert["context"])
    assert flag(args, "-ngl") == str(expert["gpu_layers"])
    assert flag(args, "--host") == "0.0.0.0"
    assert flag(args, "--port") == "${NOMAD_PORT_http}"
    assert has_flag(args, "--metrics")
    assert flag(args, "--alias") == expert["model_name"]
    # The model comes from the models host volume, read-only.
    volume = group.labelled("volume")["models"]
    assert (volume["type"], volume["source"], volume["read_only"]) == ("host", "models", True)
    mount = task.block("volume_mount")
    assert (mount["volume"], mount["destination"], mount["read_only"]) == (
        "models",
        MODELS_MOUNT,
        True,
    )


def test_resources_and_gpu_device_only_when_asked(case):
    expert, _, job = case
    for _, _, task in job.tasks():
        resources = task.block("resources")
        assert resources["cpu"] == expert["resources"]["cpu"]
        assert resources["memory"] == expert["resources"]["memory"]
        devices = resources.labelled("device")
        if expert["gpu"]:
            assert devices["nvidia/gpu"]["count"] == expert["gpu_count"]
        else:
            assert devices == {}


def test_consul_service_on_rank0_with_tags_meta_and_health_check(case):
    expert, _, job = case
    for name, group in job.groups().items():
        assert bool(group.blocks("service")) == (name == "rank-0")
    service = job.group("rank-0").block("service")
    assert service["name"] == "llm-expert"
    assert service["port"] == "http"
    assert service["provider"] == "consul"
    assert service["tags"] == expert["tags"]
    assert {"expert", expert["domain"]} <= set(service["tags"])
    meta = service.block("meta").body
    assert meta["domain"] == expert["domain"]
    assert meta["description"] == expert["description"]
    assert meta["model"] == expert["model_name"]
    assert meta["context_length"] == str(expert["context"])
    assert meta["engine"] == expert["engine"]
    assert meta["tool_calls"] == ("true" if expert["engine"] == "llama.cpp" else "false")
    assert meta["world"] == str(expert["world"])
    # The examples, in order, one meta key each.
    examples = {k: v for k, v in meta.items() if k.startswith("example_")}
    assert examples == {f"example_{n}": e for n, e in enumerate(expert["examples"], start=1)}
    check = service.block("check")
    assert (check["type"], check["path"]) == ("http", "/health")
    assert check.block("check_restart")["limit"] >= 1


def test_ring_commands_form_a_closed_ring(case):
    expert, _, job = case
    world = expert["world"]
    if world == 1:
        args = args_of(job, "rank-0")
        for ring_flag in ("--world", "--rank", "--master", "--next", "--data-port", "-lw"):
            assert not has_flag(args, ring_flag), ring_flag
        return
    by_address = {r["address"]: r["rank"] for r in expert["ranks"]}
    rank0 = expert["ranks"][0]
    argv = {r["rank"]: args_of(job, f"rank-{r['rank']}") for r in expert["ranks"]}
    for rank, args in argv.items():
        task_name = "server" if rank == 0 else "worker"
        task = job.group(f"rank-{rank}").labelled("task")[task_name]
        assert task.block("config")["command"] == (SERVER_BIN if rank == 0 else WORKER_BIN)
        assert flag(args, "--world") == str(world)
        assert flag(args, "--rank") == str(rank)
        assert flag(args, "--master") == rank0["address"]
        assert flag(args, "-m") == f"{MODELS_MOUNT}/{expert['model_file']}"
        assert has_flag(args, "--prefetch") == expert["prefetch"]
        # Every rank gets the same base ports; prima.cpp listens on base + rank,
        # which must be the static ports Nomad reserved for that rank.
        data_base, signal_base = int(flag(args, "--data-port")), int(flag(args, "--signal-port"))
        ports = job.group(f"rank-{rank}").block("network").labelled("port")
        assert data_base + rank == ports["data"]["static"]
        assert signal_base + rank == ports["signal"]["static"]
    # Follow --next from rank 0: every rank once, then back to rank 0.
    seen, current = [], 0
    for _ in range(world):
        seen.append(current)
        current = by_address[flag(argv[current], "--next")]
    assert current == 0
    assert sorted(seen) == list(range(world))


def test_api_key_comes_from_a_nomad_variable_template_not_the_command_line(case):
    expert, _, job = case
    task = job.group("rank-0").labelled("task")["server"]
    args = list(task.block("config")["args"])
    assert not has_flag(args, "--api-key")
    templates = task.blocks("template")
    if expert["api_key_variable"] is None:
        assert templates == []
        assert task.blocks("env") == []
        return
    [template] = templates
    assert template["env"] is True
    assert template["destination"].startswith("${NOMAD_SECRETS_DIR}/")
    assert 'nomadVar (env "TWIN_API_KEY_VARIABLE")' in template["data"]
    assert "LLAMA_API_KEY={{ .api_key }}" in template["data"]
    assert task.block("env")["TWIN_API_KEY_VARIABLE"] == expert["api_key_variable"]
    spec = TaskSpec.from_job(job, "rank-0", "server")
    assert len(spec.env_templates) == 1


def test_workers_are_not_restarted_forever_when_prima_drops_them(case):
    expert, _, job = case
    for rank in expert["ranks"][1:]:
        group = job.group(f"rank-{rank['rank']}")
        assert group.block("restart")["mode"] == "fail"
        reschedule = group.block("reschedule")
        assert reschedule["unlimited"] is False
        assert reschedule["attempts"] <= 1
    rank0 = job.group("rank-0")
    assert rank0.block("restart")["mode"] == "delay"


def test_rendered_file_is_laid_out_like_nomad_fmt(case):
    _, text, _ = case
    lines = text.splitlines()
    assert "\t" not in text
    assert not any(line != line.rstrip() for line in lines), "trailing whitespace"
    assert "\n\n\n" not in text, "double blank line"
    body = [line for line in lines if line and not line.startswith("#")]
    assert all((len(line) - len(line.lstrip(" "))) % 2 == 0 for line in body)
    # Consecutive one-line attributes at one indent have their `=` aligned.
    run: list[str] = []
    for line in [*lines, ""]:
        match = re.match(r"^( *)([A-Za-z_][\w-]*)( +)= ", line)
        if match and (not run or _indent(run[0]) == len(match.group(1))):
            run.append(line)
            continue
        columns = {item.index("=") for item in run}
        assert len(columns) <= 1, "unaligned `=` in:\n" + "\n".join(run)
        run = [line] if match else []


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def test_layer_windows_go_to_rank0_only_when_every_rank_has_one():
    expert = make_expert(world=2, layer_window=[15, 15])
    _, job = render(expert)
    assert flag(args_of(job, "rank-0"), "-lw") == "15,15"
    assert not has_flag(args_of(job, "rank-1"), "-lw")
    # One window missing: prima.cpp assigns the layers itself (HiGHS on rank 0).
    _, job = render(make_expert(world=2, layer_window=[15, None]))
    assert not has_flag(args_of(job, "rank-0"), "-lw")


def test_gpu_mem_threads_and_extra_args_reach_the_right_ranks():
    expert = make_expert(
        world=2, gpu=True, gpu_mem=[None, 8], threads=4, extra_args=["-np", "4", "--cont-batching"]
    )
    _, job = render(expert)
    rank0, rank1 = args_of(job, "rank-0"), args_of(job, "rank-1")
    assert not has_flag(rank0, "--gpu-mem")
    assert flag(rank1, "--gpu-mem") == "8"
    assert flag(rank0, "-t") == flag(rank1, "-t") == "4"
    assert rank0[-3:] == ["-np", "4", "--cont-batching"]
    assert not has_flag(rank1, "--cont-batching")


def test_raw_exec_driver_uses_the_host_model_path_without_a_mount():
    expert = make_expert()
    _, job = render(expert, prima_cpp_task_driver="raw_exec")
    task = job.group("rank-0").labelled("task")["server"]
    assert task["driver"] == "raw_exec"
    assert task.blocks("volume_mount") == []
    assert flag(args_of(job, "rank-0"), "-m") == expert["model_path"]


def test_free_text_cannot_inject_nomad_interpolation():
    expert = make_expert(description='Knows ${attr.cpu} and %{ if } "quotes"')
    _, job = render(expert)
    meta = job.group("rank-0").block("service").block("meta").body
    # HCL escapes: Nomad reads the literal text back.
    assert interpolate(meta["description"], {}) == 'Knows ${attr.cpu} and %%{ if } "quotes"'


def test_llama_cpp_expert_serves_a_vision_model_with_its_projector_and_extra_args_last():
    expert = make_expert(
        engine="llama.cpp",
        mmproj_file="mmproj-SmolVLM-256M.gguf",
        mmproj_path="/opt/nomad/volumes/models/mmproj-SmolVLM-256M.gguf",
        extra_args=["-np", "2"],
    )
    _, job = render(expert)
    args = args_of(job, "rank-0")
    assert flag(args, "--mmproj") == f"{MODELS_MOUNT}/mmproj-SmolVLM-256M.gguf"
    assert args[-2:] == ["-np", "2"]
    _, job = render(expert, prima_cpp_task_driver="raw_exec")
    assert flag(args_of(job, "rank-0"), "--mmproj") == expert["mmproj_path"]
    _, job = render(make_expert(engine="llama.cpp"))
    assert not has_flag(args_of(job, "rank-0"), "--mmproj")


def test_sixteen_long_examples_fit_in_consul_meta():
    # Consul: at most 64 meta keys, 512 characters per value.
    examples = [f"{n:02d} " + "x" * 509 for n in range(16)]
    expert = make_expert(examples=examples, description="d" * 512)
    _, job = render(expert)
    meta = job.group("rank-0").block("service").block("meta").body
    assert len(meta) <= 64
    assert max(len(v) for v in meta.values()) == 512
    assert [meta[f"example_{n}"] for n in range(1, 17)] == examples
