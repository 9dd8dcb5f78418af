"""Consul health entries and Nomad job stubs built from the jobs the roles render.

TwinService's tests answer ``GET /v1/health/service/llm-expert`` and ``GET
/v1/jobs`` with fixtures under ``apps/pipecat_app/tests/api_fixtures/``: Consul
and Nomad cannot run here, so the responses are written, not recorded. This
module writes the ones whose content comes from the cluster's own jobs, so they
cannot drift from them:

- the expert jobs are what the prima_cpp role renders for :data:`EXPERTS`:
  its ``_prima_cpp_jobs`` (the collection's ``prima_cpp_experts`` filter with
  the role's ``_prima_cpp_expert_defaults`` and ``_prima_cpp_job_settings``)
  through ``jobs/expert.nomad.hcl.j2``;
- each health entry's service (name, tags, meta, port label), its check (name,
  type, path, interval, timeout) and its node (the rank-0 constraint) are read
  from the rendered job, and its service and check IDs are made the way Nomad
  makes them (``MakeAllocServiceID``: ``_nomad-task-<alloc>-group-<group>-
  <service>-<port label>``; ``MakeCheckID``: ``_nomad-check-`` and the sha256 of
  the check's fields, ``ServiceCheck.Hash`` in nomad/structs/services.go); Nomad
  adds ``external-source: nomad`` to the service meta;
- the Nomad job stubs take their id, namespace, datacenters, type and task
  groups from the rendered expert jobs and ``jobs/pipecat-app.nomad.hcl.j2``
  rendered with the pipecat_app role's defaults.

What a real cluster would add is chosen here by hand, as a scenario: node ids
and addresses, dynamic ports, allocation ids, raft indexes and times (see
:data:`HEALTH`). Field sets follow HashiCorp's API documentation.

After changing a job template, a role default or the scenario, run::

    PYTHONPATH=tests .venv/bin/python -m helpers.job_fixtures

``tests/test_api_fixtures.py`` fails until the files match what this writes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from dataclasses import dataclass
from typing import Any

from helpers.jobs import REPO, Block, Job, evaluate, parse_job, render_job, role_vars

sys.path.insert(0, str(REPO / ".cache" / "collections"))
from ansible_collections.twin.cluster.plugins.filter.prima_cpp import (
    prima_cpp_experts,
)

APP_FIXTURES = REPO / "apps" / "pipecat_app" / "tests" / "api_fixtures"

# The scenario's machines, as the inventory names them, with their Consul node
# ids. Consul's node name is the inventory name (consul_node_name).
NODES = {
    "node1": {"address": "192.168.1.21", "id": "2f1c7a0e-6f5e-4f7e-9b9b-0d6f4c0a1a11"},
    "node2": {"address": "192.168.1.22", "id": "8a3e2d1c-5b4a-4c3d-8e2f-1a0b9c8d7e22"},
}
# Raft indexes at which the Consul agents registered their nodes.
NODE_CREATE_INDEX = 13
NODE_MODIFY_INDEX = 16

# The experts, as a user lists them in prima_cpp_experts. Each runs prima.cpp
# on one node (engine prima.cpp; the default there is llama.cpp), so their meta
# says tool_calls "false": the app's tests of its JSON-schema fallback read them.
EXPERTS: list[dict[str, Any]] = [
    {
        "name": "general",
        "domain": "general",
        "description": "Everyday conversation and general knowledge",
        "model_url": "http://mirror.lan/models/SmolLM2-135M-Instruct-Q4_1.gguf",
        "model_sha256": "0" * 64,
        "model_name": "smollm2-135m",
        "context": 2048,
        "nodes": ["node1"],
        "engine": "prima.cpp",
    },
    {
        "name": "code",
        "domain": "code",
        "description": "Programming, Python code, debugging software bugs",
        "model_url": "http://mirror.lan/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "model_sha256": "1" * 64,
        "model_name": "qwen2.5-coder-1.5b",
        "context": 4096,
        "nodes": ["node2"],
        "engine": "prima.cpp",
    },
    {
        "name": "general-2",
        "domain": "general",
        "description": "Everyday conversation and general knowledge",
        "model_url": "http://mirror.lan/models/SmolLM2-135M-Instruct-Q4_1.gguf",
        "model_sha256": "0" * 64,
        "model_name": "smollm2-135m",
        "context": 2048,
        "nodes": ["node2"],
        "engine": "prima.cpp",
    },
]


@dataclass(frozen=True)
class Instance:
    """One running allocation of an expert job, as Consul sees its service."""

    expert: str
    alloc_id: str
    port: int
    # Raft indexes: service registered; check registered, and last changed
    # (its status went from critical to passing).
    service_index: int
    check_index: int
    check_modify_index: int


GENERAL = Instance("general", "5b3f0c1e-7d2a-4c1b-9e0f-3a1b2c3d4e5f", 28080, 88, 88, 94)
CODE = Instance("code", "8e2d1a0b-1c3d-4e5f-a6b7-c8d9e0f1a2b3", 21934, 91, 91, 100)
GENERAL_2 = Instance("general-2", "0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d", 25011, 127, 127, 129)

# Each health response: its X-Consul-Index and the passing instances, in the
# order Consul sorts them (by node). Consul answers with the index of the last
# change to the service, which can be above every index it serves: at 131 the
# code expert was deregistered, and its entry is simply gone.
HEALTH: dict[str, tuple[int, list[Instance]]] = {
    # Both experts up; the code expert's check turned passing last, at 100.
    "consul_health_llm-expert_100.json": (100, [GENERAL, CODE]),
    # The code expert replaced by a second general one on node2.
    "consul_health_llm-expert_131.json": (131, [GENERAL, GENERAL_2]),
    # After a snapshot restore: the state (and the index) of an earlier time.
    "consul_health_llm-expert_reset_42.json": (
        42,
        [
            Instance(GENERAL.expert, GENERAL.alloc_id, GENERAL.port, 18, 18, 24),
            Instance(CODE.expert, CODE.alloc_id, CODE.port, 19, 19, 42),
        ],
    ),
}

# The job list: the jobs of the first health response and the assistant, with
# the raft indexes Nomad gave them, and the time each was submitted (ns).
JOBS: list[dict[str, Any]] = [
    {"job": "expert-general", "create": 52, "modify": 61, "submit": 1764075600000000000},
    {"job": "expert-code", "create": 55, "modify": 64, "submit": 1764075660000000000},
    {"job": "pipecat-app", "create": 70, "modify": 75, "submit": 1764075900000000000},
]


def _consul_version() -> str:
    return str(evaluate("{{ consul_version }}", role_vars("consul")))


def _datacenter() -> str:
    return str(evaluate("{{ consul_datacenter }}", role_vars("consul")))


def expert_jobs() -> dict[str, Job]:
    """The prima_cpp role's expert jobs for :data:`EXPERTS`, rendered and parsed, by job id."""
    variables = role_vars(
        "prima_cpp",
        prima_cpp_experts=EXPERTS,
        hostvars={name: {"ansible_host": node["address"]} for name, node in NODES.items()},
        groups={"nomad_servers": ["node1"]},
        playbook_dir="/srv/playbooks",
        inventory_dir="/srv/inventory",
    )
    # vars/main.yml: _prima_cpp_jobs = prima_cpp_experts | twin.cluster.prima_cpp_experts(
    #   hostvars, _prima_cpp_expert_defaults, _prima_cpp_job_settings)
    defaults = evaluate("{{ _prima_cpp_expert_defaults }}", variables)
    settings = evaluate("{{ _prima_cpp_job_settings }}", variables)
    jobs: dict[str, Job] = {}
    for expert in prima_cpp_experts(EXPERTS, variables["hostvars"], defaults, settings):
        job = parse_job(render_job("expert.nomad.hcl.j2", {**variables, "expert": expert}))
        jobs[job.id] = job
    return jobs


def pipecat_app_job() -> Job:
    """jobs/pipecat-app.nomad.hcl.j2 rendered from the pipecat_app role's defaults.

    Its input ``assistant`` is the role's ``_pipecat_app_job`` (vars/main.yml).
    """
    app = tomllib.loads((REPO / "apps" / "pipecat_app" / "pyproject.toml").read_text())
    variables = role_vars(
        "pipecat_app",
        hostvars={name: {} for name in NODES},
        groups={"pipecat_app_hosts": list(NODES)},
        playbook_dir="/srv/playbooks",
        inventory_dir="/srv/inventory",
        _pipecat_app_version=app["project"]["version"],
        _pipecat_app_source_hash="0" * 64,
    )
    assistant = evaluate("{{ _pipecat_app_job }}", variables)
    return parse_job(render_job("pipecat-app.nomad.hcl.j2", {"assistant": assistant}))


@dataclass(frozen=True)
class Registration:
    """What one expert job registers in Consul, read from its rendered job."""

    group: str
    node: str
    service: Block
    check: Block

    @classmethod
    def of(cls, job: Job) -> Registration:
        """The one group with a service (rank 0) and its service and check."""
        groups = [(name, g) for name, g in job.groups().items() if g.get("service")]
        if len(groups) != 1:
            raise ValueError(f"{job.id}: expected one group with a service, found {len(groups)}")
        name, group = groups[0]
        service = group.block("service")
        node = str(group.block("constraint")["value"])
        return cls(group=name, node=node, service=service, check=service.block("check"))

    def service_id(self, alloc_id: str) -> str:
        """Nomad's MakeAllocServiceID for a group service."""
        name, port = self.service["name"], self.service["port"]
        return f"_nomad-task-{alloc_id}-group-{self.group}-{name}-{port}"

    def check_id(self, service_id: str) -> str:
        """Nomad's MakeCheckID: the sha256 of the fields ServiceCheck.Hash writes.

        The job's check sets name, type, path, interval and timeout; every other
        field Hash writes is empty, except on_update, which Nomad defaults to
        require_healthy.
        """
        c = self.check
        written = [  # in the order ServiceCheck.Hash writes them
            service_id,
            c["name"],
            c["type"],
            "",  # command
            "",  # args
            c["path"],
            "",  # protocol
            "",  # port label (filled in from the service after hashing)
            _go_duration(c["interval"]),
            _go_duration(c["timeout"]),
            "",  # method
            "",  # body
            "require_healthy",  # on_update's default
            "",  # notes
        ]
        return "_nomad-check-" + hashlib.sha256("".join(written).encode()).hexdigest()


def _go_duration(value: str) -> str:
    """A Nomad duration as Go's time.Duration.String() prints it ("10s", "1m0s")."""
    units = {"s": 1, "m": 60, "h": 3600}
    seconds = int(value[:-1]) * units[value[-1]]
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def health_entry(
    job: Job, instance: Instance, consul_version: str, datacenter: str
) -> dict[str, Any]:
    """One element of ``/v1/health/service/<name>``: node, service, checks."""
    reg = Registration.of(job)
    node = NODES[reg.node]
    address = node["address"]
    service_id = reg.service_id(instance.alloc_id)
    tags = [str(t) for t in reg.service["tags"]]
    name = str(reg.service["name"])
    meta = {str(k): str(v) for k, v in reg.service.block("meta").body.items()}
    meta["external-source"] = "nomad"
    check = reg.check
    return {
        "Node": {
            "ID": node["id"],
            "Node": reg.node,
            "Address": address,
            "Datacenter": datacenter,
            "TaggedAddresses": {
                "lan": address,
                "lan_ipv4": address,
                "wan": address,
                "wan_ipv4": address,
            },
            "Meta": {"consul-network-segment": "", "consul-version": consul_version},
            "CreateIndex": NODE_CREATE_INDEX,
            "ModifyIndex": NODE_MODIFY_INDEX,
        },
        "Service": {
            "ID": service_id,
            "Service": name,
            "Tags": tags,
            "Address": address,
            "TaggedAddresses": {
                "lan_ipv4": {"Address": address, "Port": instance.port},
                "wan_ipv4": {"Address": address, "Port": instance.port},
            },
            "Meta": meta,
            "Port": instance.port,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "PeerName": "",
            "CreateIndex": instance.service_index,
            "ModifyIndex": instance.service_index,
        },
        "Checks": [
            {
                "Node": reg.node,
                "CheckID": "serfHealth",
                "Name": "Serf Health Status",
                "Status": "passing",
                "Notes": "",
                "Output": "Agent alive and reachable",
                "ServiceID": "",
                "ServiceName": "",
                "ServiceTags": [],
                "Type": "",
                "Interval": "",
                "Timeout": "",
                "ExposedPort": 0,
                "Definition": {},
                "CreateIndex": NODE_CREATE_INDEX,
                "ModifyIndex": NODE_CREATE_INDEX,
            },
            {
                "Node": reg.node,
                "CheckID": reg.check_id(service_id),
                "Name": str(check["name"]),
                "Status": "passing",
                "Notes": "",
                "Output": (
                    f"HTTP GET http://{address}:{instance.port}{check['path']}: 200 OK"
                    ' Output: {"status":"ok"}'
                ),
                "ServiceID": service_id,
                "ServiceName": name,
                "ServiceTags": tags,
                "Type": str(check["type"]),
                "Interval": _go_duration(str(check["interval"])),
                "Timeout": _go_duration(str(check["timeout"])),
                "ExposedPort": 0,
                "Definition": {},
                "CreateIndex": instance.check_index,
                "ModifyIndex": instance.check_modify_index,
            },
        ],
    }


def health_response(index: int, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "status": 200,
        "headers": {
            "Content-Type": "application/json",
            "Vary": "Accept-Encoding",
            "X-Consul-Default-Acl-Policy": "allow",
            "X-Consul-Effective-Consistency": "leader",
            "X-Consul-Index": str(index),
            "X-Consul-Knownleader": "true",
            "X-Consul-Lastcontact": "0",
            "X-Consul-Query-Backend": "blocking-query",
        },
        "body": entries,
    }


def job_stub(job: Job, create: int, modify: int, submit: int) -> dict[str, Any]:
    """One element of Nomad's ``/v1/jobs``: a running service job's stub."""
    summary = {
        "Queued": 0,
        "Complete": 0,
        "Failed": 0,
        "Running": 1,
        "Starting": 0,
        "Lost": 0,
        "Unknown": 0,
    }
    namespace = str(job["namespace"])
    return {
        "ID": job.id,
        "ParentID": "",
        "Name": job.id,
        "Namespace": namespace,
        "Datacenters": [str(d) for d in job["datacenters"]],
        "NodePool": "default",
        "Multiregion": None,
        "Type": str(job["type"]),
        "Priority": 50,
        "Periodic": False,
        "ParameterizedJob": False,
        "Stop": False,
        "Status": "running",
        "StatusDescription": "",
        "JobSummary": {
            "JobID": job.id,
            "Namespace": namespace,
            "Summary": {group: dict(summary) for group in job.groups()},
            "Children": {"Pending": 0, "Running": 0, "Dead": 0},
            "CreateIndex": create,
            "ModifyIndex": modify,
        },
        "CreateIndex": create,
        "ModifyIndex": modify,
        "JobModifyIndex": create,
        "SubmitTime": submit,
        "Meta": None,
    }


def jobs_response(stubs: list[dict[str, Any]]) -> dict[str, Any]:
    index = max(s["ModifyIndex"] for s in stubs)
    return {
        "status": 200,
        "headers": {
            "Content-Type": "application/json",
            "X-Nomad-Index": str(index),
            "X-Nomad-Knownleader": "true",
            "X-Nomad-Lastcontact": "0",
        },
        "body": stubs,
    }


def build() -> dict[str, dict[str, Any]]:
    """Every generated fixture, by file name under :data:`APP_FIXTURES`."""
    experts = expert_jobs()
    by_expert = {str(job.block("meta")["expert"]): job for job in experts.values()}
    consul_version, datacenter = _consul_version(), _datacenter()
    out: dict[str, dict[str, Any]] = {}
    for name, (index, instances) in HEALTH.items():
        entries = [
            health_entry(by_expert[i.expert], i, consul_version, datacenter) for i in instances
        ]
        out[name] = health_response(index, entries)
    jobs = {**experts, "pipecat-app": pipecat_app_job()}
    out["nomad_jobs.json"] = jobs_response(
        [job_stub(jobs[j["job"]], j["create"], j["modify"], j["submit"]) for j in JOBS]
    )
    return out


def dumps(response: dict[str, Any]) -> str:
    """The file text of one fixture (the layout the fixture files use)."""
    return json.dumps(response, indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    for name, response in build().items():
        (APP_FIXTURES / name).write_text(dumps(response))
        print(APP_FIXTURES / name)


if __name__ == "__main__":
    main()
