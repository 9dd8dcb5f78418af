"""Expert definitions in the job contract's shape (jobs/README.md), and a few readers of args.

The prima_cpp role normalizes user input into exactly this ``expert`` dict;
the tests build it directly so the template is checked on its own.
"""

from __future__ import annotations

from typing import Any

SERVER_BIN = "/opt/prima.cpp/current/bin/llama-server"
WORKER_BIN = "/opt/prima.cpp/current/bin/llama-cli"


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
    **overrides: Any,
) -> dict[str, Any]:
    """One normalized expert; ranks on nodes node1..nodeN at 10.10.0.1..N."""
    layer_window = layer_window or [None] * world
    gpu_mem = gpu_mem or [None] * world
    expert: dict[str, Any] = {
        "name": name,
        "domain": "general",
        "description": "Small talk and everyday questions",
        "tool_calls": False,
        "namespace": namespace,
        "datacenters": ["dc1"],
        "region": "global",
        "model_path": model_path,
        "model_file": model_path.rsplit("/", 1)[-1],
        "model_name": "SmolLM2-135M-Instruct",
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
    }
    expert.update(overrides)
    return expert


def job_vars(expert: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The variables the role hands the template for one expert."""
    return {
        "expert": expert,
        "prima_cpp_server_bin": SERVER_BIN,
        "prima_cpp_worker_bin": WORKER_BIN,
        "prima_cpp_models_volume": "models",
        **extra,
    }


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
