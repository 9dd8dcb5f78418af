"""The prima_cpp filters turn user expert definitions into the values the expert jobs lay out.

The filter's EXPERT_OPTIONS is the one definition of an expert's fields; the
role's argument spec and the defaults it hands the filter are held to it here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".cache" / "collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.twin.cluster.plugins.filter.prima_cpp import (  # noqa: E402
    EXPERT_OPTIONS,
    SETTINGS,
    FilterModule,
    Option,
    prima_cpp_experts,
    prima_cpp_node_needs,
    prima_cpp_port_clashes,
    prima_cpp_without_gpu,
)

SHA = "a" * 64
DEFAULTS = {
    "namespace": "llm",
    "datacenters": ["dc1"],
    "region": "global",
    "context": 4096,
    "gpu_layers": 0,
    "prefetch": False,
    "resources": {"cpu": 2000, "memory": 4096},
    "service_name": "llm-expert",
    "data_port_base": 9000,
    "signal_port_base": 10000,
}
SERVER_BIN = "/opt/prima.cpp/current/bin/llama-server"
WORKER_BIN = "/opt/prima.cpp/current/bin/llama-cli"
LLAMA_SERVER_BIN = "/opt/llama.cpp/current/bin/llama-server"
JOB_SETTINGS = {
    "models_dir": "/srv/nomad/models",
    "models_volume": "models",
    "models_mount": "/models",
    "task_driver": "exec",
    "server_bin": SERVER_BIN,
    "worker_bin": WORKER_BIN,
    "llama_server_bin": LLAMA_SERVER_BIN,
}
HOSTVARS = {
    "node1": {"ansible_host": "192.168.10.11"},
    "node2": {"ansible_default_ipv4": {"address": "192.168.10.12"}, "ansible_host": "n2"},
    "node3": {"prima_cpp_address": "10.9.9.13", "ansible_host": "192.168.10.13"},
    "gpu1": {"ansible_host": "192.168.10.21", "nomad_nvidia_enable": True},
    "gpu2": {"prima_cpp_cuda": "true"},
    "bare": {},
}


def ring(**extra):
    return {
        "name": "general",
        "domain": "general",
        "model_url": "https://models.example/qwen2.5-7b-instruct-q4_k_m.gguf?download=1",
        "model_sha256": SHA.upper(),
        "nodes": ["node1", "node2", "node3"],
        **extra,
    }


def test_three_node_ring_gets_ranks_in_node_order_with_ports_base_plus_rank():
    [expert] = prima_cpp_experts([ring()], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    assert expert["world"] == 3
    assert [(r["rank"], r["node"], r["address"]) for r in expert["ranks"]] == [
        (0, "node1", "192.168.10.11"),
        (1, "node2", "192.168.10.12"),
        (2, "node3", "10.9.9.13"),
    ]
    assert [(r["data_port"], r["signal_port"]) for r in expert["ranks"]] == [
        (9000, 10000),
        (9001, 10001),
        (9002, 10002),
    ]
    assert all(r["layer_window"] is None and r["gpu_mem"] is None for r in expert["ranks"])


def test_defaults_fill_every_contract_field():
    [expert] = prima_cpp_experts([ring()], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    assert expert["namespace"] == "llm"
    assert expert["datacenters"] == ["dc1"]
    assert expert["region"] == "global"
    assert expert["model_path"] == "/srv/nomad/models/qwen2.5-7b-instruct-q4_k_m.gguf"
    assert expert["model_name"] == "qwen2.5-7b-instruct-q4_k_m"
    assert expert["model_sha256"] == SHA
    assert expert["description"] == "general expert"
    assert expert["examples"] == []
    assert (expert["engine"], expert["tool_calls"]) == ("prima.cpp", False)
    assert (expert["mmproj_url"], expert["mmproj_file"], expert["mmproj_path"]) == (None,) * 3
    assert (expert["context"], expert["gpu_layers"]) == (4096, 0)
    assert (expert["gpu"], expert["gpu_count"]) == (False, 1)
    assert (expert["http_port"], expert["threads"]) == (None, None)
    assert expert["prefetch"] is False
    assert expert["extra_args"] == []
    assert expert["resources"] == {"cpu": 2000, "memory": 4096}
    assert expert["api_key_variable"] is None
    assert expert["service_name"] == "llm-expert"
    assert expert["tags"] == ["expert", "general"]


def test_single_gpu_expert_keeps_its_own_settings():
    coder = {
        "name": "coder",
        "domain": "coding",
        "description": "Writes and reviews code.",
        "tool_calls": True,
        "model_url": "https://models.example/coder.gguf",
        "model_sha256": SHA,
        "model_file": "qwen-coder-7b.gguf",
        "model_name": "qwen2.5-coder-7b",
        "nodes": ["gpu1"],
        "gpu": True,
        "gpu_layers": 99,
        "context": 16384,
        "namespace": "code",
        "http_port": 8081,
        "threads": 8,
        "resources": {"memory": 12000},
        "api_key_variable": "nomad/jobs/expert-coder",
        "tags": ["coding", "fast"],
        "extra_args": ["-np", "2"],
    }
    [expert] = prima_cpp_experts([coder], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    assert expert["world"] == 1
    assert expert["ranks"] == [
        {
            "rank": 0,
            "node": "gpu1",
            "address": "192.168.10.21",
            "data_port": 9000,
            "signal_port": 10000,
            "layer_window": None,
            "gpu_mem": None,
            "task": "server",
            "command": LLAMA_SERVER_BIN,
            "args": [
                ["-m", "/models/qwen-coder-7b.gguf"],
                ["-c", "16384"],
                ["-ngl", "99"],
                ["-t", "8"],
                ["--host", "0.0.0.0", "--port", "${NOMAD_PORT_http}"],
                ["--metrics"],
                ["--alias", "qwen2.5-coder-7b"],
                ["--jinja"],
                ["-np", "2"],
            ],
        }
    ]
    assert expert["model_path"] == "/srv/nomad/models/qwen-coder-7b.gguf"
    assert expert["model_name"] == "qwen2.5-coder-7b"
    assert expert["resources"] == {"cpu": 2000, "memory": 12000}
    assert expert["tags"] == ["expert", "coding", "fast"]
    assert (expert["gpu"], expert["gpu_layers"], expert["http_port"]) == (True, 99, 8081)
    assert expert["api_key_variable"] == "nomad/jobs/expert-coder"
    assert expert["extra_args"] == ["-np", "2"]
    assert (expert["engine"], expert["tool_calls"]) == ("llama.cpp", True)


def test_update_deadlines_default_unless_set():
    [plain, slow] = prima_cpp_experts(
        [ring(), ring(name="big", healthy_deadline="30m", health_grace="900s")],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    deadlines = ("healthy_deadline", "progress_deadline", "health_grace")
    assert [plain[k] for k in deadlines] == ["10m", "15m", "300s"]
    assert [slow[k] for k in deadlines] == ["30m", "15m", "900s"]


def test_custom_port_bases_and_per_rank_windows():
    [expert] = prima_cpp_experts(
        [
            ring(
                data_port_base=7000,
                signal_port_base=7100,
                layer_window=[10, 12, 6],
                gpu_mem=[0, 8, 11.5],
            )
        ],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    assert [(r["data_port"], r["signal_port"]) for r in expert["ranks"]] == [
        (7000, 7100),
        (7001, 7101),
        (7002, 7102),
    ]
    assert [r["layer_window"] for r in expert["ranks"]] == [10, 12, 6]
    assert [r["gpu_mem"] for r in expert["ranks"]] == [0, 8, 11.5]


def test_a_node_may_host_two_ranks_on_different_ports():
    [expert] = prima_cpp_experts([ring(nodes=["node1", "node1"])], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    assert [(r["node"], r["data_port"]) for r in expert["ranks"]] == [
        ("node1", 9000),
        ("node1", 9001),
    ]


def test_address_falls_back_to_the_inventory_name():
    [expert] = prima_cpp_experts([ring(nodes=["bare"])], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    assert expert["ranks"][0]["address"] == "bare"


def test_world_other_than_node_count_is_refused():
    with pytest.raises(AnsibleFilterError, match="world 4 but 3 nodes"):
        prima_cpp_experts([ring(world=4)], HOSTVARS, DEFAULTS, JOB_SETTINGS)


def test_unknown_field_is_refused():
    with pytest.raises(AnsibleFilterError, match="unknown fields"):
        prima_cpp_experts([ring(domian="general")], HOSTVARS, DEFAULTS, JOB_SETTINGS)


def test_rank_zero_of_an_auto_assigned_ring_needs_highs_and_others_do_not():
    experts = prima_cpp_experts([ring()], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    needs = {n: prima_cpp_node_needs(experts, n) for n in ("node1", "node2", "gpu1")}
    assert needs["node1"]["prima_cpp"]
    assert needs["node1"]["highs"]
    assert needs["node2"]["prima_cpp"]
    assert not needs["node2"]["highs"]
    assert not needs["node1"]["llama_cpp"]
    assert needs["gpu1"] == {"prima_cpp": False, "llama_cpp": False, "highs": False, "models": []}


def test_ring_with_every_layer_window_needs_no_highs():
    experts = prima_cpp_experts([ring(layer_window=[10, 10, 12])], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    assert not prima_cpp_node_needs(experts, "node1")["highs"]


def test_single_node_expert_needs_no_highs():
    experts = prima_cpp_experts(
        [ring(nodes=["node1"], engine="prima.cpp")], HOSTVARS, DEFAULTS, JOB_SETTINGS
    )
    needs = prima_cpp_node_needs(experts, "node1")
    assert (needs["prima_cpp"], needs["highs"], needs["llama_cpp"]) == (True, False, False)


def test_hosts_of_llama_cpp_experts_build_llama_server_and_not_prima_cpp():
    experts = prima_cpp_experts(
        [ring(), ring(name="coder", nodes=["gpu1"]), ring(name="chat", nodes=["node2"])],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    gpu1 = prima_cpp_node_needs(experts, "gpu1")
    node2 = prima_cpp_node_needs(experts, "node2")
    assert (gpu1["llama_cpp"], gpu1["prima_cpp"], gpu1["highs"]) == (True, False, False)
    assert (node2["llama_cpp"], node2["prima_cpp"]) == (True, True)


def test_models_go_only_to_the_nodes_of_their_expert_and_once_each():
    experts = prima_cpp_experts(
        [
            ring(),
            ring(name="general-2", nodes=["node1"]),
            ring(name="coder", model_url="https://m.example/c.gguf", nodes=["node3"]),
        ],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    node1 = prima_cpp_node_needs(experts, "node1")["models"]
    node3 = prima_cpp_node_needs(experts, "node3")["models"]
    assert [m["path"] for m in node1] == ["/srv/nomad/models/qwen2.5-7b-instruct-q4_k_m.gguf"]
    assert node1[0]["expert"] == "general"
    assert sorted(m["path"] for m in node3) == [
        "/srv/nomad/models/c.gguf",
        "/srv/nomad/models/qwen2.5-7b-instruct-q4_k_m.gguf",
    ]


def test_two_experts_claiming_one_file_with_different_checksums_is_refused():
    experts = prima_cpp_experts(
        [ring(), ring(name="other", model_sha256="b" * 64, nodes=["node1"])],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    with pytest.raises(AnsibleFilterError, match="different checksums"):
        prima_cpp_node_needs(experts, "node1")


def test_gpu_hosts_come_from_prima_cpp_cuda_or_nomad_nvidia_enable():
    assert prima_cpp_without_gpu(["gpu1", "gpu2", "node1", "node1"], HOSTVARS) == ["node1"]


def test_filters_are_registered_under_their_names():
    assert set(FilterModule().filters()) == {
        "prima_cpp_experts",
        "prima_cpp_node_needs",
        "prima_cpp_port_clashes",
        "prima_cpp_without_gpu",
    }


def test_ring_ranks_run_the_server_or_the_worker_in_a_closed_ring():
    [expert] = prima_cpp_experts(
        [ring(layer_window=[10, 12, 6], gpu_mem=[None, 8, 11.5], prefetch=True, threads=2)],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    ranks = expert["ranks"]
    assert [(r["task"], r["command"]) for r in ranks] == [
        ("server", SERVER_BIN),
        ("worker", WORKER_BIN),
        ("worker", WORKER_BIN),
    ]
    common = [
        ["-m", "/models/qwen2.5-7b-instruct-q4_k_m.gguf"],
        ["-c", "4096"],
        ["-ngl", "0"],
        ["-t", "2"],
    ]
    assert ranks[0]["args"] == [
        *common,
        ["--world", "3", "--rank", "0"],
        ["--master", "192.168.10.11", "--next", "192.168.10.12"],
        ["--data-port", "9000", "--signal-port", "10000"],
        ["--prefetch"],
        ["--host", "0.0.0.0", "--port", "${NOMAD_PORT_http}"],
        ["--metrics"],
        ["--alias", "qwen2.5-7b-instruct-q4_k_m"],
        ["-lw", "10,12,6"],
    ]
    # The last rank closes the ring on rank 0; every rank gets rank 0's ports as
    # the base; prima.cpp takes whole GiB.
    assert ranks[2]["args"] == [
        *common,
        ["--world", "3", "--rank", "2"],
        ["--master", "192.168.10.11", "--next", "192.168.10.11"],
        ["--data-port", "9000", "--signal-port", "10000"],
        ["--prefetch"],
        ["--gpu-mem", "11"],
    ]


def test_layer_windows_go_to_rank0_only_when_every_rank_has_one():
    [expert] = prima_cpp_experts([ring()], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    assert not any(line[0] == "-lw" for r in expert["ranks"] for line in r["args"])


def test_service_meta_is_strings_the_app_reads():
    [expert] = prima_cpp_experts([ring(context=8192)], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    assert expert["service_meta"] == {
        "expert": "general",
        "domain": "general",
        "description": "general expert",
        "model": "qwen2.5-7b-instruct-q4_k_m",
        "context_length": "8192",
        "engine": "prima.cpp",
        "tool_calls": "false",
        "world": "3",
    }


def test_exec_tasks_read_the_model_through_the_mount_raw_exec_on_the_host():
    [mounted] = prima_cpp_experts([ring(nodes=["node1"])], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    assert (mounted["task_driver"], mounted["models_volume"]) == ("exec", "models")
    assert mounted["models_mount"] == "/models"
    assert mounted["ranks"][0]["args"][0] == ["-m", "/models/qwen2.5-7b-instruct-q4_k_m.gguf"]
    raw_settings = {**JOB_SETTINGS, "task_driver": "raw_exec"}
    [raw] = prima_cpp_experts([ring(nodes=["node1"])], HOSTVARS, DEFAULTS, raw_settings)
    assert raw["models_mount"] is None
    assert raw["ranks"][0]["args"][0] == ["-m", raw["model_path"]]


def test_fields_take_their_declared_types():
    [expert] = prima_cpp_experts(
        [ring(context="8192", gpu="false", prefetch="yes", http_port="8080")],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    assert (expert["context"], expert["gpu"], expert["prefetch"]) == (8192, False, True)
    assert expert["http_port"] == 8080
    with pytest.raises(AnsibleFilterError, match="expert general: context must be int"):
        prima_cpp_experts([ring(context="big")], HOSTVARS, DEFAULTS, JOB_SETTINGS)


def test_empty_values_take_the_default_zero_and_false_do_not():
    [expert] = prima_cpp_experts(
        [ring(namespace="", description=None, tags=[], gpu_layers=0, prefetch=False)],
        HOSTVARS,
        {**DEFAULTS, "gpu_layers": 33, "prefetch": True},
        JOB_SETTINGS,
    )
    assert (expert["namespace"], expert["description"], expert["tags"]) == (
        "llm",
        "general expert",
        ["expert", "general"],
    )
    assert (expert["gpu_layers"], expert["prefetch"]) == (0, False)


def test_missing_required_field_is_refused():
    entry = {k: v for k, v in ring().items() if k != "model_sha256"}
    with pytest.raises(AnsibleFilterError, match=r"missing required fields \['model_sha256'\]"):
        prima_cpp_experts([entry], HOSTVARS, DEFAULTS, JOB_SETTINGS)


@pytest.mark.parametrize(
    ("defaults", "settings", "expected"),
    [
        pytest.param(
            {**DEFAULTS, "models_dir": "/srv"}, JOB_SETTINGS, "unknown ['models_dir']", id="extra"
        ),
        pytest.param(
            DEFAULTS,
            {k: v for k, v in JOB_SETTINGS.items() if k != "worker_bin"},
            "missing ['worker_bin']",
            id="missing",
        ),
    ],
)
def test_defaults_and_settings_hold_exactly_the_filters_keys(defaults, settings, expected):
    with pytest.raises(AnsibleFilterError, match=re.escape(expected)):
        prima_cpp_experts([ring()], HOSTVARS, defaults, settings)


def test_engine_defaults_to_llama_cpp_on_one_node_with_native_tools_prima_cpp_for_a_ring():
    one, prima_one, ring3 = prima_cpp_experts(
        [
            ring(name="one", nodes=["node1"]),
            ring(name="prima-one", nodes=["node1"], engine="prima.cpp", http_port=8088),
            ring(),
        ],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    assert (one["engine"], one["tool_calls"], one["service_meta"]["tool_calls"]) == (
        "llama.cpp",
        True,
        "true",
    )
    assert one["service_meta"]["engine"] == "llama.cpp"
    assert one["ranks"][0]["command"] == LLAMA_SERVER_BIN
    assert ["--jinja"] in one["ranks"][0]["args"]
    assert (prima_one["engine"], prima_one["tool_calls"]) == ("prima.cpp", False)
    assert prima_one["ranks"][0]["command"] == SERVER_BIN
    assert ["--jinja"] not in prima_one["ranks"][0]["args"]
    assert (ring3["engine"], ring3["service_meta"]["engine"]) == ("prima.cpp", "prima.cpp")
    # A llama.cpp expert may still say its model does not call tools.
    [quiet] = prima_cpp_experts(
        [ring(nodes=["node1"], tool_calls=False)], HOSTVARS, DEFAULTS, JOB_SETTINGS
    )
    assert (quiet["engine"], quiet["service_meta"]["tool_calls"]) == ("llama.cpp", "false")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            ring(engine="llama.cpp"), "engine llama.cpp runs on one node", id="llama-ring"
        ),
        pytest.param(ring(engine="vllm", nodes=["node1"]), "engine vllm is not one of", id="bad"),
        pytest.param(ring(tool_calls=True), "tool_calls true with engine prima.cpp", id="tools"),
        pytest.param(
            ring(mmproj_url="https://m.example/p.gguf", mmproj_sha256=SHA),
            "mmproj_url with engine prima.cpp",
            id="prima-projector",
        ),
        pytest.param(
            ring(nodes=["node1"], mmproj_url="https://m.example/p.gguf"),
            "mmproj_url and mmproj_sha256 go together",
            id="projector-without-checksum",
        ),
        pytest.param(
            ring(examples=[f"turn {n}" for n in range(17)]),
            "expert general: 17 examples; at most 16",
            id="too-many-examples",
        ),
        pytest.param(
            ring(examples=["fine", "y" * 513]),
            "expert general: example 2 has 513 characters",
            id="long-example",
        ),
        pytest.param(ring(examples=["fine", "  "]), "example 2 has 0 characters", id="blank"),
        pytest.param(ring(description="z" * 513), "description has 513 characters", id="desc"),
    ],
)
def test_what_an_engine_or_consul_meta_cannot_hold_is_refused_naming_the_expert(entry, expected):
    with pytest.raises(AnsibleFilterError, match=re.escape(expected)):
        prima_cpp_experts([entry], HOSTVARS, DEFAULTS, JOB_SETTINGS)


def test_examples_become_numbered_meta_keys_in_order():
    examples = ["Write a Python function", "  Why does my loop never end?  ", "x" * 512]
    [expert] = prima_cpp_experts([ring(examples=examples)], HOSTVARS, DEFAULTS, JOB_SETTINGS)
    meta = expert["service_meta"]
    assert [k for k in meta if k.startswith("example_")] == ["example_1", "example_2", "example_3"]
    assert [meta["example_1"], meta["example_2"], meta["example_3"]] == [
        "Write a Python function",
        "Why does my loop never end?",
        "x" * 512,
    ]


def test_vision_expert_downloads_its_projector_next_to_the_model():
    [expert] = prima_cpp_experts(
        [
            ring(
                name="vision",
                domain="vision",
                nodes=["gpu1"],
                model_url="https://m.example/SmolVLM-256M-Instruct-Q8_0.gguf",
                mmproj_url="https://m.example/mmproj-SmolVLM-256M-Instruct-Q8_0.gguf",
                mmproj_sha256="B" * 64,
            )
        ],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    assert expert["mmproj_path"] == "/srv/nomad/models/mmproj-SmolVLM-256M-Instruct-Q8_0.gguf"
    assert ["--mmproj", "/models/mmproj-SmolVLM-256M-Instruct-Q8_0.gguf"] in expert["ranks"][0][
        "args"
    ]
    models = prima_cpp_node_needs([expert], "gpu1")["models"]
    assert [(m["path"].rsplit("/", 1)[-1], m["sha256"]) for m in models] == [
        ("SmolVLM-256M-Instruct-Q8_0.gguf", SHA),
        ("mmproj-SmolVLM-256M-Instruct-Q8_0.gguf", "b" * 64),
    ]


def test_two_rings_on_one_node_with_the_same_port_bases_clash_naming_both():
    experts = prima_cpp_experts(
        [ring(), ring(name="coder", nodes=["node3", "node2"])], HOSTVARS, DEFAULTS, JOB_SETTINGS
    )
    assert prima_cpp_port_clashes(experts) == [
        "expert general (rank 1, data port) and expert coder (rank 1, data port) "
        "both take port 9001 on node node2",
        "expert general (rank 1, signal port) and expert coder (rank 1, signal port) "
        "both take port 10001 on node node2",
    ]


def test_rings_with_their_own_port_bases_and_one_node_experts_do_not_clash():
    experts = prima_cpp_experts(
        [
            ring(),
            ring(
                name="coder", nodes=["node2", "node3"], data_port_base=9100, signal_port_base=9200
            ),
            # One node: no ring ports, dynamic http.
            ring(name="chat", nodes=["node1"]),
            ring(name="chat-2", nodes=["node1"]),
        ],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    assert prima_cpp_port_clashes(experts) == []


def test_a_static_http_port_clashes_with_a_ring_port_and_within_one_ring():
    experts = prima_cpp_experts(
        [ring(), ring(name="chat", nodes=["node2"], http_port=10001)],
        HOSTVARS,
        DEFAULTS,
        JOB_SETTINGS,
    )
    assert prima_cpp_port_clashes(experts) == [
        "expert general (rank 1, signal port) and expert chat (rank 0, http port) "
        "both take port 10001 on node node2"
    ]
    [tight] = prima_cpp_experts(
        [ring(nodes=["node1", "node1"], signal_port_base=9001)], HOSTVARS, DEFAULTS, JOB_SETTINGS
    )
    assert prima_cpp_port_clashes([tight]) == [
        "expert general (rank 0, signal port) and expert general (rank 1, data port) "
        "both take port 9001 on node node1"
    ]


# The role's argument spec shows the fields the filter defines: same names,
# types, elements, choices, literal defaults and required fields. The spec
# says "Required." in the description rather than `required: true`, which
# would stop the play at the argument check with a message that names no
# expert, before tasks/validate.yml's.
ROLE = ROOT / "roles" / "prima_cpp"


def role_options() -> dict[str, Any]:
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    return spec["argument_specs"]["main"]["options"]


def _description(spec: dict[str, Any]) -> str:
    description = spec.get("description", "")
    return " ".join(description) if isinstance(description, list) else description


def _as_the_filter_defines(option: Option) -> dict[str, Any]:
    out: dict[str, Any] = {"type": option.type, "required": option.required}
    if option.elements:
        out["elements"] = option.elements
    if option.choices:
        out["choices"] = list(option.choices)
    if option.default is not None:
        out["default"] = option.default
    if option.options is not None:
        out["options"] = {k: _as_the_filter_defines(o) for k, o in option.options.items()}
    return out


def _as_the_spec_declares(spec: dict[str, Any]) -> dict[str, Any]:
    required = bool(spec.get("required")) or _description(spec).startswith("Required.")
    out: dict[str, Any] = {"type": spec.get("type", "str"), "required": required}
    for key in ("elements", "choices", "default"):
        if key in spec:
            out[key] = spec[key]
    if "options" in spec:
        out["options"] = {k: _as_the_spec_declares(o) for k, o in spec["options"].items()}
    return out


def test_argument_spec_declares_the_expert_fields_the_filter_defines():
    spec = role_options()["prima_cpp_experts"]["options"]
    declared = {name: _as_the_spec_declares(option) for name, option in spec.items()}
    defined = {name: _as_the_filter_defines(option) for name, option in EXPERT_OPTIONS.items()}
    assert declared == defined


def test_argument_spec_names_the_role_variable_behind_each_role_default():
    options = role_options()
    spec = options["prima_cpp_experts"]["options"]
    for name, option in EXPERT_OPTIONS.items():
        description = _description(spec[name])
        if option.role_default is None:
            assert "O(prima_cpp_" not in description, name
            continue
        assert f"Default O({option.role_default})." in description, name
        role_variable = options[option.role_default]
        assert role_variable["type"] == option.type, name
        assert role_variable.get("elements") == option.elements, name


def test_role_hands_the_filter_its_variables_under_the_filters_keys():
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    assert role_vars["_prima_cpp_expert_defaults"] == {
        name: f"{{{{ {option.role_default} }}}}"
        for name, option in EXPERT_OPTIONS.items()
        if option.role_default
    }
    assert role_vars["_prima_cpp_job_settings"] == {
        key: f"{{{{ prima_cpp_{key} }}}}" for key in sorted(SETTINGS)
    }
