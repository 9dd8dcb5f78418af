#!/usr/bin/python
# Copyright: twin.cluster developers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module twin.cluster.expert_benchmark: time every expert of a cluster."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: expert_benchmark
short_description: Time to first token and tokens per second of LLM experts
description:
  - Sends each expert a bounded number of streamed chat completions (a long shared
    system prompt, then short questions, greedy) and reports the p50 and p90 of the
    time to first token and of the tokens per second after it.
  - The measuring code is the expert benchmark's (C(benchmarks/bench_experts.py)),
    shared through the collection's module_utils C(expert_bench).
  - Experts are given as a list (O(experts)) or as Consul's answer to
    C(/v1/health/service/<name>) (O(consul_health)), whose passing instances are
    found as the assistant finds them (service address and port, meta C(scheme),
    C(base_path), C(model), C(domain)), each named by its meta C(expert).
  - Experts are measured one after the other, so they do not compete for a shared node.
  - Reports no change; it changes nothing.
version_added: "0.1.0"
author:
  - twin.cluster developers
options:
  experts:
    description:
      - The experts to measure. Mutually exclusive with O(consul_health).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name shown in the results.
        type: str
        required: true
      url:
        description: OpenAI-compatible base URL, e.g. C(http://10.0.0.5:8080/v1).
        type: str
        required: true
      model:
        description: Model name sent with each request and shown in the results.
        type: str
      node:
        description: Where it runs; the URL's host when unset.
        type: str
      domain:
        description: The expert's domain, shown in the results.
        type: str
      api_key:
        description: Bearer token for an expert that wants one.
        type: str
  consul_health:
    description:
      - The JSON list Consul returns for C(/v1/health/service/<name>?passing=true)
        (for example from M(ansible.builtin.uri)). Instances with a failing check
        are left out too. Mutually exclusive with O(experts).
    type: list
    elements: dict
  requests:
    description: Timed requests per expert (1 to 100).
    type: int
    default: 10
  max_tokens:
    description: Tokens generated per request at most (1 to 512).
    type: int
    default: 32
  warmup:
    description: Send one untimed request to each expert first (loads the prompt cache).
    type: bool
    default: true
  cache_prompt:
    description: Ask llama-server to reuse the shared prompt prefix (C(cache_prompt)).
    type: bool
    default: true
  timeout:
    description: Seconds each request may take, answer included (1 to 600).
    type: int
    default: 60
  validate_certs:
    description: Verify the certificate of an https expert.
    type: bool
    default: true
  ca_path:
    description: CA bundle for https experts (the cluster's CA).
    type: path
  fail_on_error:
    description:
      - Fail when an expert cannot be measured. V(false) returns its row with an
        C(error) instead, so the others' figures are kept.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Asks each expert only for its model list (C(GET <url>/models)); generates nothing.
  diff_mode:
    support: none
notes:
  - Run it on the controller (C(delegate_to=localhost) or a play on localhost); the experts
    must be reachable from there.
  - With no expert given or found it fails, naming where it looked.
"""

EXAMPLES = r"""
- name: Benchmark two experts.
  twin.cluster.expert_benchmark:
    experts:
      - {name: general, url: "http://10.0.0.5:8080/v1", model: smollm2-135m}
      - {name: code, url: "http://10.0.0.6:8080/v1", model: qwen2.5-coder-1.5b}
    requests: 10
    max_tokens: 32
  register: bench

- name: Benchmark the experts Consul lists.
  twin.cluster.expert_benchmark:
    consul_health: "{{ health.json }}"
  register: bench
"""

RETURN = r"""
experts:
  description:
    - One row per expert, sorted by name (from Consul, meta C(expert), and C(service_id)).
    - C(ttft_ms) and C(tokens_per_s) hold C(p50) and C(p90); C(tokens_per_s) is null
      when every answer had one token.
    - C(error) is set on an expert that could not be measured (O(fail_on_error=false)),
      C(checked_only) in check mode.
  returned: always
  type: list
  elements: dict
  sample:
    - name: general
      service_id: _nomad-task-5b3f0c1e-7d2a-4c1b-9e0f-3a1b2c3d4e5f-group-rank-0-llm-expert-http
      node: node1
      url: http://192.168.1.21:28080/v1
      model: smollm2-135m
      domain: general
      requests: 10
      ttft_ms: {p50: 41.2, p90: 55.0}
      tokens_per_s: {p50: 95.1, p90: 101.3}
table:
  description: The rows as one aligned text table, then one line per failed expert.
  returned: always
  type: str
failed_experts:
  description: Names of the experts that could not be measured.
  returned: always
  type: list
  elements: str
"""

# Ansible modules document themselves before their imports.
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.twin.cluster.plugins.module_utils.expert_bench import (  # noqa: E402
    Endpoint,
    ExpertError,
    check_reachable,
    experts_from_health,
    measure,
    node_of,
    table,
)

BOUNDS = {"requests": (1, 100), "max_tokens": (1, 512), "timeout": (1, 600)}


def wanted_experts(module: AnsibleModule) -> list[dict[str, Any]]:
    """The experts to measure, from O(experts) or O(consul_health)."""
    if module.params["consul_health"] is not None:
        found = experts_from_health(module.params["consul_health"])
        if not found:
            module.fail_json(
                msg="Consul lists no passing expert instance (consul_health has "
                f"{len(module.params['consul_health'])} entries): are the expert jobs running "
                "and healthy, and is it the experts' service?",
                experts=[],
            )
        return [dict(expert) for expert in found]
    experts = []
    for given in module.params["experts"]:
        expert = {k: v for k, v in given.items() if v is not None}
        expert.setdefault("node", node_of(expert["url"]))
        experts.append(expert)
    if not experts:
        module.fail_json(msg="experts is empty: give at least one {name, url}.", experts=[])
    return sorted(experts, key=lambda expert: expert["name"])


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "experts": {
                "type": "list",
                "elements": "dict",
                "options": {
                    "name": {"type": "str", "required": True},
                    "url": {"type": "str", "required": True},
                    "model": {"type": "str"},
                    "node": {"type": "str"},
                    "domain": {"type": "str"},
                    "api_key": {"type": "str", "no_log": True},
                },
            },
            "consul_health": {"type": "list", "elements": "dict"},
            "requests": {"type": "int", "default": 10},
            "max_tokens": {"type": "int", "default": 32},
            "warmup": {"type": "bool", "default": True},
            "cache_prompt": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 60},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "fail_on_error": {"type": "bool", "default": True},
        },
        mutually_exclusive=[("experts", "consul_health")],
        required_one_of=[("experts", "consul_health")],
        supports_check_mode=True,
    )
    params = module.params
    for option, (low, high) in BOUNDS.items():
        if not low <= params[option] <= high:
            module.fail_json(msg=f"{option} must be from {low} to {high}, not {params[option]}.")

    rows: list[dict[str, Any]] = []
    for expert in wanted_experts(module):
        api_key = expert.pop("api_key", None)
        endpoint = Endpoint(
            base_url=expert["url"],
            model=expert.get("model"),
            api_key=api_key,
            timeout=params["timeout"],
            validate_certs=params["validate_certs"],
            ca_path=params["ca_path"],
        )
        row = dict(expert)
        try:
            if module.check_mode:
                check_reachable(endpoint)
                row["checked_only"] = True
            else:
                figures = measure(
                    endpoint,
                    params["requests"],
                    cache_prompt=params["cache_prompt"],
                    max_tokens=params["max_tokens"],
                    warmup=params["warmup"],
                )
                row.update(figures)
        except ExpertError as err:
            row["error"] = f"expert {expert['name']}: {err}"
        rows.append(row)

    failed = [row["name"] for row in rows if row.get("error")]
    result = {"changed": False, "experts": rows, "table": table(rows), "failed_experts": failed}
    if failed and params["fail_on_error"]:
        module.fail_json(
            msg="; ".join(row["error"] for row in rows if row.get("error")),
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
