"""Experts as the prima_cpp filter normalizes them, the variables their job renders with, args.

:func:`make_expert` builds a normalized expert directly (ranks on made-up
nodes and addresses that a test may change); :func:`job_vars` hands it to the
filter's :func:`with_job_values` with the prima_cpp role's own job settings,
so the template is rendered with what the role would compute for that expert.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from helpers.jobs import REPO, evaluate, role_vars

sys.path.insert(0, str(REPO / ".cache" / "collections"))
from ansible_collections.twin.cluster.plugins.filter.prima_cpp import (
    EXPERT_OPTIONS,
    with_job_values,
)

SERVER_BIN = "/opt/prima.cpp/current/bin/llama-server"
WORKER_BIN = "/opt/prima.cpp/current/bin/llama-cli"
LLAMA_SERVER_BIN = "/opt/llama.cpp/current/bin/llama-server"


def make_expert(
    *,
    name: str = "general",
    world: int = 1,
    gpu: bool = False,
    namespace: str = "llm",
    http_port: int | None = None,
    data_port_base: int = 9000,
    signal_port_base: int = 10000,
    api_key_variable: str | None = None,
    layer_window: list[int | None] | None = None,
    gpu_mem: list[int | None] | None = None,
    model_path: str = "/opt/nomad/volumes/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    engine: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """One normalized expert; ranks on nodes node1..nodeN at 10.10.0.1..N.

    ``engine`` defaults as the filter's does: prima.cpp for a ring, llama.cpp
    on one node; ``tool_calls`` follows it (native with llama.cpp).
    """
    layer_window = layer_window or [None] * world
    gpu_mem = gpu_mem or [None] * world
    engine = engine or ("prima.cpp" if world > 1 else "llama.cpp")
    expert: dict[str, Any] = {
        "name": name,
        "domain": "general",
        "description": "Small talk and everyday questions",
        "examples": ["How are you today?", "Tell me a fun fact about octopuses."],
        "engine": engine,
        "tool_calls": engine == "llama.cpp",
        "namespace": namespace,
        "datacenters": ["dc1"],
        "region": "global",
        "model_path": model_path,
        "model_file": model_path.rsplit("/", 1)[-1],
        "model_name": "SmolLM2-135M-Instruct",
        "mmproj_url": None,
        "mmproj_sha256": None,
        "mmproj_file": None,
        "mmproj_path": None,
        "context": 2048,
        "gpu_layers": 99 if gpu else 0,
        "gpu": gpu,
        "gpu_count": 1,
        "world": world,
        "ranks": [
            {
                "rank": rank,
                "node": f"node{rank + 1}",
                "address": f"10.10.0.{rank + 1}",
                "data_port": data_port_base + rank,
                "signal_port": signal_port_base + rank,
                "layer_window": layer_window[rank],
                "gpu_mem": gpu_mem[rank],
            }
            for rank in range(world)
        ],
        "http_port": http_port,
        "threads": None,
        "prefetch": world > 1,
        "extra_args": [],
        "resources": {"cpu": 2000, "memory": 1024},
        "api_key_variable": api_key_variable,
        "service_name": "llm-expert",
        "tags": ["expert", "general"],
        # The filter's defaults (10m, 15m, 300s).
        **{
            field: EXPERT_OPTIONS[field].default
            for field in ("healthy_deadline", "progress_deadline", "health_grace")
        },
    }
    expert.update(overrides)
    return expert


@functools.cache
def _role_settings() -> dict[str, Any]:
    """The prima_cpp role's job settings, from its defaults (``_prima_cpp_job_settings``)."""
    return dict(evaluate("{{ _prima_cpp_job_settings }}", role_vars("prima_cpp")))


def job_vars(expert: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """The variables the role hands the template for one expert.

    ``settings`` override the role's, by role variable name
    (``prima_cpp_server_bin=...``, ``prima_cpp_task_driver="raw_exec"``).
    """
    chosen = {**_role_settings()}
    for name, value in settings.items():
        key = name.removeprefix("prima_cpp_")
        if key not in chosen:
            raise KeyError(f"{name} is not a job setting of the prima_cpp role")
        chosen[key] = value
    return {"expert": with_job_values(expert, chosen)}


def flag(args: list[str], *names: str) -> str | None:
    """Value after the first of ``names`` in an argv list (None if absent)."""
    for i, arg in enumerate(args):
        if arg in names:
            if i + 1 >= len(args):
                raise ValueError(f"{arg} has no value in {args}")
            return args[i + 1]
    return None


def has_flag(args: list[str], *names: str) -> bool:
    return any(a in names for a in args)
