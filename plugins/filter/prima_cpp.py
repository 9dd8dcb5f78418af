# Copyright: twin.cluster developers
# Apache License 2.0 (see galaxy.yml)
"""Filters of the prima_cpp role: turn user expert definitions into the job contract.

``prima_cpp_experts`` turns the entries of ``prima_cpp_experts`` (what a user writes
in group_vars) plus the inventory into the normalized ``expert`` dicts that
``jobs/expert.nomad.hcl.j2`` renders. ``prima_cpp_node_needs`` answers, for one
host, what the role must do there: build prima.cpp (with HiGHS? with CUDA?) and
which models to download. The role validates the input first (tasks/validate.yml);
these filters only raise on input that validation lets through by mistake.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlparse

from ansible.errors import AnsibleFilterError

# Every key a user may set in one entry of prima_cpp_experts.
EXPERT_FIELDS = frozenset(
    {
        "name",
        "domain",
        "description",
        "tool_calls",
        "namespace",
        "datacenters",
        "region",
        "model_url",
        "model_sha256",
        "model_file",
        "model_name",
        "context",
        "gpu_layers",
        "gpu",
        "gpu_count",
        "nodes",
        "world",
        "layer_window",
        "gpu_mem",
        "data_port_base",
        "signal_port_base",
        "http_port",
        "threads",
        "prefetch",
        "extra_args",
        "resources",
        "api_key_variable",
        "service_name",
        "tags",
        "healthy_deadline",
        "progress_deadline",
        "health_grace",
    }
)

# Optional contract fields passed through only when a user sets them (the
# job template has its own defaults for them).
PASS_THROUGH_FIELDS = ("healthy_deadline", "progress_deadline", "health_grace")


def model_file_name(expert: Mapping[str, Any]) -> str:
    """The GGUF file name: model_file, else the last part of model_url's path."""
    if expert.get("model_file"):
        return str(expert["model_file"])
    path = unquote(urlparse(str(expert["model_url"])).path)
    name = posixpath.basename(path)
    if not name:
        raise AnsibleFilterError(
            f"expert {expert.get('name')}: model_url {expert['model_url']} has no file name; "
            "set model_file."
        )
    return name


def node_address(hostvars: Mapping[str, Any], node: str) -> str:
    """The address other ranks reach a node on.

    prima_cpp_address when set, else the default IPv4 address from facts, else
    ansible_host, else the inventory name itself.
    """
    host = hostvars[node]
    if host.get("prima_cpp_address"):
        return str(host["prima_cpp_address"])
    default_ipv4 = host.get("ansible_default_ipv4") or {}
    if isinstance(default_ipv4, Mapping) and default_ipv4.get("address"):
        return str(default_ipv4["address"])
    if host.get("ansible_host"):
        return str(host["ansible_host"])
    return node


def has_nvidia_gpu(hostvars: Mapping[str, Any], node: str) -> bool:
    """A host's vars say it has an NVIDIA GPU: prima_cpp_cuda, else nomad_nvidia_enable."""
    host = hostvars[node]
    flag = host.get("prima_cpp_cuda")
    if flag is None:
        flag = host.get("nomad_nvidia_enable", False)
    if isinstance(flag, str):
        return flag.strip().lower() in ("1", "true", "yes", "on")
    return bool(flag)


def prima_cpp_without_gpu(nodes: list[str], hostvars: Mapping[str, Any]) -> list[str]:
    """The nodes (each once, in order) whose host vars do not declare an NVIDIA GPU."""
    return [n for n in dict.fromkeys(str(n) for n in nodes) if not has_nvidia_gpu(hostvars, n)]


def _per_rank(expert: Mapping[str, Any], key: str, world: int) -> list[Any]:
    values = expert.get(key)
    if values is None:
        return [None] * world
    if not isinstance(values, list) or len(values) != world:
        raise AnsibleFilterError(
            f"expert {expert['name']}: {key} must list one value per rank ({world})."
        )
    return list(values)


def normalize_expert(
    expert: Mapping[str, Any], hostvars: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """One user expert definition -> the ``expert`` dict of the job contract."""
    unknown = sorted(set(expert) - EXPERT_FIELDS)
    if unknown:
        raise AnsibleFilterError(f"expert {expert.get('name')}: unknown fields {unknown}.")
    name = str(expert["name"])
    domain = str(expert["domain"])
    nodes = [str(n) for n in expert["nodes"]]
    world = int(expert.get("world") or len(nodes))
    if world != len(nodes):
        raise AnsibleFilterError(f"expert {name}: world {world} but {len(nodes)} nodes listed.")
    data_base = int(expert.get("data_port_base") or defaults["data_port_base"])
    signal_base = int(expert.get("signal_port_base") or defaults["signal_port_base"])
    layer_window = _per_rank(expert, "layer_window", world)
    gpu_mem = _per_rank(expert, "gpu_mem", world)
    ranks = [
        {
            "rank": rank,
            "node": node,
            "address": node_address(hostvars, node),
            "data_port": data_base + rank,
            "signal_port": signal_base + rank,
            "layer_window": None if layer_window[rank] is None else int(layer_window[rank]),
            "gpu_mem": gpu_mem[rank],
        }
        for rank, node in enumerate(nodes)
    ]
    file_name = model_file_name(expert)
    model_name = expert.get("model_name") or file_name.removesuffix(".gguf")
    tags = ["expert", domain]
    tags += [str(t) for t in expert.get("tags") or [] if str(t) not in tags]
    resources = {**defaults["resources"], **(expert.get("resources") or {})}
    prefetch = expert.get("prefetch")
    optional = {k: str(expert[k]) for k in PASS_THROUGH_FIELDS if expert.get(k)}
    return {
        **optional,
        "name": name,
        "domain": domain,
        "description": str(expert.get("description") or f"{domain} expert"),
        "tool_calls": bool(expert.get("tool_calls", False)),
        "namespace": str(expert.get("namespace") or defaults["namespace"]),
        "datacenters": [str(d) for d in expert.get("datacenters") or defaults["datacenters"]],
        "region": str(expert.get("region") or defaults["region"]),
        "model_url": str(expert["model_url"]),
        "model_sha256": str(expert["model_sha256"]).lower(),
        "model_file": file_name,
        "model_path": posixpath.join(str(defaults["models_dir"]), file_name),
        "model_name": str(model_name),
        "context": int(expert.get("context") or defaults["context"]),
        "gpu_layers": int(expert.get("gpu_layers", defaults["gpu_layers"])),
        "gpu": bool(expert.get("gpu", False)),
        "gpu_count": int(expert.get("gpu_count") or 1),
        "world": world,
        "ranks": ranks,
        "http_port": None if expert.get("http_port") is None else int(expert["http_port"]),
        "threads": None if expert.get("threads") is None else int(expert["threads"]),
        "prefetch": bool(defaults["prefetch"] if prefetch is None else prefetch),
        "extra_args": [str(a) for a in expert.get("extra_args") or []],
        "resources": {"cpu": int(resources["cpu"]), "memory": int(resources["memory"])},
        "api_key_variable": expert.get("api_key_variable") or None,
        "service_name": str(expert.get("service_name") or defaults["service_name"]),
        "tags": tags,
    }


def prima_cpp_experts(
    experts: list[Mapping[str, Any]] | None,
    hostvars: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """All user expert definitions -> normalized expert dicts, in the same order."""
    return [normalize_expert(e, hostvars, defaults) for e in experts or []]


def needs_highs(expert: Mapping[str, Any]) -> bool:
    """Rank 0 of a ring needs HiGHS unless every rank's layer window is given."""
    if expert["world"] < 2:
        return False
    return any(r["layer_window"] is None for r in expert["ranks"])


def prima_cpp_node_needs(experts: list[Mapping[str, Any]], node: str) -> dict[str, Any]:
    """What one host needs: build or not, HiGHS or not, and which models."""
    models: dict[str, dict[str, Any]] = {}
    build = False
    highs = False
    for expert in experts:
        mine = [r for r in expert["ranks"] if r["node"] == node]
        if not mine:
            continue
        build = True
        if any(r["rank"] == 0 for r in mine) and needs_highs(expert):
            highs = True
        path = expert["model_path"]
        if path in models and models[path]["sha256"] != expert["model_sha256"]:
            raise AnsibleFilterError(
                f"experts {models[path]['expert']} and {expert['name']} both use {path} "
                "with different checksums; give one of them another model_file."
            )
        models.setdefault(
            path,
            {
                "expert": expert["name"],
                "url": expert["model_url"],
                "sha256": expert["model_sha256"],
                "path": path,
            },
        )
    return {"build": build, "highs": highs, "models": list(models.values())}


class FilterModule:
    """prima_cpp role filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "prima_cpp_experts": prima_cpp_experts,
            "prima_cpp_node_needs": prima_cpp_node_needs,
            "prima_cpp_without_gpu": prima_cpp_without_gpu,
        }
