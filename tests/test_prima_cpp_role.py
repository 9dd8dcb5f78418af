"""The prima_cpp role run by the real ansible-playbook on the controller.

The play targets only localhost, which runs no rank, so nothing is built or
downloaded: these tests cover what happens on the controller, the checks of
tasks/validate.yml and the rendering of the collection's expert job template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from helpers.ansible import PlayResult, inventory, run_playbook
from helpers.fixture_api import FixtureAPI
from helpers.jobs import parse_job

ROOT = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef" * 4

# node1-3 and gpu1 are only names the experts point at; localhost runs the play.
INVENTORY = inventory(
    hosts={
        "node1": {"ansible_host": "192.168.10.11"},
        "node2": {"ansible_host": "192.168.10.12"},
        "node3": {"ansible_host": "192.168.10.13"},
        "gpu1": {"ansible_host": "192.168.10.21", "nomad_nvidia_enable": True},
    },
    local=["localhost"],
)


def general(**extra: Any) -> dict[str, Any]:
    return {
        "name": "general",
        "domain": "general",
        "description": "Everyday questions.",
        "model_url": "https://models.example/qwen2.5-7b-instruct-q4_k_m.gguf",
        "model_sha256": SHA,
        "nodes": ["node1", "node2", "node3"],
        **extra,
    }


def coder(**extra: Any) -> dict[str, Any]:
    return {
        "name": "coder",
        "domain": "coding",
        "model_url": "https://models.example/coder.gguf",
        "model_sha256": SHA,
        "nodes": ["gpu1"],
        "gpu": True,
        "gpu_layers": 99,
        **extra,
    }


def run_role(tmp_path: Path, experts: list[dict[str, Any]], **role_vars: Any) -> PlayResult:
    """Run the role on localhost with ``experts`` and ``role_vars`` as play vars.

    Play vars, not extra vars, so the role's own vars keep their precedence.
    The play and inventory are written to ``tmp_path``: it is ``inventory_dir``,
    where the role looks for the saved token (``.credentials``).
    """
    play = [
        {
            "name": "Run the prima_cpp role on the controller only.",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {
                "prima_cpp_experts": experts,
                "prima_cpp_submit_jobs": False,
                "prima_cpp_jobs_dir": str(tmp_path / "rendered"),
                **role_vars,
            },
            "roles": [{"role": "twin.cluster.prima_cpp"}],
        }
    ]
    return run_playbook(play, INVENTORY, workdir=tmp_path)


@pytest.mark.parametrize(
    ("experts", "role_vars", "expected"),
    [
        pytest.param(
            [general(), general(nodes=["node1"])],
            {},
            "expert names general are used more than once",
            id="duplicate-names",
        ),
        pytest.param(
            [general(world=4)],
            {},
            "expert general has world 4 but lists 3 nodes",
            id="world-larger-than-nodes",
        ),
        pytest.param(
            [general(nodes=["node1", "node9"])],
            {},
            "expert general lists nodes node9 that are not in the inventory",
            id="node-not-in-inventory",
        ),
        pytest.param(
            [{k: v for k, v in general().items() if k != "model_sha256"}],
            {},
            "expert general needs model_url",
            id="missing-checksum",
        ),
        pytest.param(
            [general(model_sha256="abc")],
            {},
            "model_sha256 (its 64 hex digit SHA-256, got abc)",
            id="short-checksum",
        ),
        pytest.param(
            [general(domian="general")],
            {},
            "domian",
            id="unknown-field",
        ),
        pytest.param(
            [general(domain="")],
            {},
            "expert general has domain",
            id="empty-domain",
        ),
        pytest.param(
            [coder()],
            {"prima_cpp_allowed_domains": ["general", "math"]},
            "set domain to one of general, math",
            id="domain-not-allowed",
        ),
        pytest.param(
            [coder(nodes=["gpu1", "node2"])],
            {},
            "expert coder asks for a GPU but node2 have no NVIDIA GPU",
            id="gpu-expert-on-cpu-node",
        ),
        pytest.param(
            [general(layer_window=[16, 16])],
            {},
            "expert general sets layer_window or gpu_mem with a length other than its 3 ranks",
            id="layer-window-length",
        ),
        pytest.param(
            [general(name="General_1")],
            {},
            "expert General_1 needs a name of lower-case",
            id="bad-name",
        ),
        pytest.param(
            [general(tool_calls=True), coder(tool_calls=True)],
            {},
            "expert general has engine prima.cpp and sets tool_calls true, but prima.cpp's "
            "llama-server rejects the `tools` and `tool_choice` of native tool calls; set engine "
            "llama.cpp (one node) or remove tool_calls",
            id="native-tool-calls-on-prima-cpp",
        ),
        pytest.param(
            [coder(engine="prima.cpp", tool_calls=True)],
            {},
            "expert coder has engine prima.cpp and sets tool_calls true",
            id="native-tool-calls-on-one-node-prima-cpp",
        ),
        pytest.param(
            [general(engine="llama.cpp")],
            {},
            "expert general has engine llama.cpp but lists 3 nodes; llama.cpp runs on one node: "
            "list one node, or set engine prima.cpp for a ring",
            id="llama-cpp-ring",
        ),
        pytest.param(
            [general(mmproj_url="https://models.example/mmproj.gguf", mmproj_sha256=SHA)],
            {},
            "expert general has engine prima.cpp and sets mmproj_url, but prima.cpp serves no "
            "multimodal projector",
            id="projector-on-prima-cpp",
        ),
        pytest.param(
            [coder(mmproj_url="https://models.example/mmproj.gguf")],
            {},
            "expert coder needs mmproj_url (http, https, ftp or file URL of the projector GGUF, "
            "got https://models.example/mmproj.gguf) and mmproj_sha256",
            id="projector-without-checksum",
        ),
        pytest.param(
            [general(nodes=[], world=0)],
            {},
            "expert general has world 0 with 0 nodes listed; an expert needs at least one rank",
            id="world-0-no-nodes",
        ),
        pytest.param(
            [general(world=0)],
            {},
            "expert general has world 0 with 3 nodes listed; an expert needs at least one rank",
            id="world-0-with-nodes",
        ),
        pytest.param(
            [general(examples=[f"question {n}" for n in range(17)])],
            {},
            "expert general has a description of 19 characters and 17 examples",
            id="too-many-examples",
        ),
        pytest.param(
            [coder(examples=["Sort a list in Python", "w" * 513])],
            {},
            "expert coder has a description of 0 characters and 2 examples (21, 513 characters); "
            "Consul service meta holds at most 512 characters per value",
            id="example-too-long",
        ),
        pytest.param(
            [general(), general(name="coder", nodes=["node3", "node2"])],
            {},
            "prima_cpp_experts: expert general (rank 1, data port) and expert coder (rank 1, data "
            "port) both take port 9001 on node node2; expert general (rank 1, signal port) and "
            "expert coder (rank 1, signal port) both take port 10001 on node node2; give one of "
            "them other port bases",
            id="two-rings-one-port",
        ),
    ],
)
def test_bad_expert_definitions_fail_before_anything_runs(tmp_path, experts, role_vars, expected):
    proc = run_role(tmp_path, experts, **role_vars)
    out = " ".join(proc.output.split())
    assert proc.returncode != 0, out
    assert expected in out, out
    assert not (tmp_path / "rendered").exists()


def test_missing_job_template_is_named(tmp_path):
    proc = run_role(tmp_path, [general()], prima_cpp_jobs_template=str(tmp_path / "nope.j2"))
    out = " ".join(proc.output.split())
    assert proc.returncode != 0
    assert f"prima_cpp_jobs_template {tmp_path / 'nope.j2'} does not exist" in out


def load_job(path: Path) -> tuple[str, dict[str, Any]]:
    with path.open() as handle:
        doc = hcl2.load(handle)
    [job] = doc["job"]
    [(job_id, body)] = job.items()
    return job_id.strip('"'), body


def test_ring_and_gpu_expert_render_to_one_parseable_job_each(tmp_path):
    proc = run_role(
        tmp_path,
        [general(namespace="brains", prefetch=True, healthy_deadline="30m"), coder(http_port=8081)],
    )
    assert proc.returncode == 0, proc.output
    rendered = sorted(p.name for p in (tmp_path / "rendered").iterdir())
    assert rendered == ["expert-coder.nomad.hcl", "expert-general.nomad.hcl"]

    job_id, ring = load_job(tmp_path / "rendered" / "expert-general.nomad.hcl")
    assert job_id == "expert-general"
    assert ring["namespace"].strip('"') == "brains"
    assert len(ring["group"]) == 3
    text = (tmp_path / "rendered" / "expert-general.nomad.hcl").read_text()
    for node in ("node1", "node2", "node3"):
        assert node in text
    assert "/opt/prima.cpp/current/bin/llama-server" in text
    assert "/opt/prima.cpp/current/bin/llama-cli" in text
    assert "qwen2.5-7b-instruct-q4_k_m.gguf" in text
    assert 'healthy_deadline  = "30m"' in text

    job_id, single = load_job(tmp_path / "rendered" / "expert-coder.nomad.hcl")
    assert job_id == "expert-coder"
    assert single["namespace"].strip('"') == "llm"
    assert len(single["group"]) == 1
    assert "nvidia/gpu" in json.dumps(single)
    # One node: upstream llama-server with native tool calls.
    text = (tmp_path / "rendered" / "expert-coder.nomad.hcl").read_text()
    assert "/opt/llama.cpp/current/bin/llama-server" in text
    assert '"--jinja"' in text


def test_rings_on_one_node_with_their_own_port_bases_and_examples_render(tmp_path):
    examples = ["Plan a weekend in Lisbon", "What's a good name for a puppy?"]
    proc = run_role(
        tmp_path,
        [
            general(examples=examples),
            general(
                name="big", nodes=["node2", "node3"], data_port_base=9100, signal_port_base=9200
            ),
        ],
    )
    assert proc.returncode == 0, proc.output
    job = parse_job((tmp_path / "rendered" / "expert-general.nomad.hcl").read_text())
    meta = job.group("rank-0").block("service").block("meta").body
    assert (meta["example_1"], meta["example_2"], meta["engine"]) == (*examples, "prima.cpp")
    assert "example_3" not in meta


def test_second_run_renders_nothing_new(tmp_path):
    first = run_role(tmp_path, [general()])
    assert first.returncode == 0, first.output
    second = run_role(tmp_path, [general()])
    assert second.returncode == 0, second.output
    assert second.changed == 0, second.output


def test_purge_removed_deletes_rendered_files_of_dropped_experts(tmp_path):
    first = run_role(tmp_path, [general(), coder()])
    assert first.returncode == 0, first.output
    second = run_role(tmp_path, [general()], prima_cpp_purge_removed=True)
    assert second.returncode == 0, second.output
    assert sorted(p.name for p in (tmp_path / "rendered").iterdir()) == ["expert-general.nomad.hcl"]


def test_role_submits_with_the_saved_token_and_purges_dropped_experts(tmp_path):
    """Submission goes through twin.cluster.nomad_job with the nomad role's saved token."""
    token = "9d1c0f4e-7b2a-4c55-8e11-5a3b2c1d0e9f"
    (tmp_path / ".credentials").mkdir()
    (tmp_path / ".credentials" / "nomad-bootstrap.token").write_text(token + "\n")
    fixtures = [
        "expert_general_parse",
        "expert_general_plan_added",
        "jobs_register",
        "jobs_list_experts",
        "expert_old_read",
        "expert_old_deregister",
        "expert_general_lab_read",
        "expert_general_lab_deregister",
    ]
    with FixtureAPI("nomad_jobs", fixtures) as api:
        proc = run_role(
            tmp_path,
            [general(nodes=["node1"])],
            prima_cpp_submit_jobs=True,
            prima_cpp_purge_removed=True,
            prima_cpp_nomad_addr=api.url,
        )
    assert proc.returncode == 0, proc.output
    assert token not in proc.output
    assert api.unmatched == []
    assert {r.header("X-Nomad-Token") for r in api.requests} == {token}
    [parse] = api.requests_to("POST", "/v1/jobs/parse")
    rendered = (tmp_path / "rendered" / "expert-general.nomad.hcl").read_text()
    assert parse.json()["JobHCL"].strip() == rendered.strip()
    assert len(api.requests_to("POST", "/v1/jobs")) == 1
    [listing] = api.requests_to("GET", "/v1/jobs")
    assert listing.query == {"prefix": ["expert-"], "namespace": ["*"]}
    [old] = api.requests_to("DELETE", "/v1/job/expert-old")
    assert old.query == {"namespace": ["llm"], "purge": ["true"]}
    [moved] = api.requests_to("DELETE", "/v1/job/expert-general")
    assert moved.query == {"namespace": ["lab"], "purge": ["true"]}


def test_every_default_is_in_the_argument_spec_and_the_readme():
    role = ROOT / "roles" / "prima_cpp"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    readme = (role / "README.md").read_text()
    assert set(defaults) == set(options)
    assert [name for name in defaults if f"`{name}`" not in readme] == []
