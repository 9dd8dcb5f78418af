"""The hand-written Consul and Nomad API fixtures answer as the real servers would.

Consul and Nomad cannot run here, so the roles' API steps and TwinService are
tested against responses written by hand from HashiCorp's documentation and
source (tests/api_fixtures/ and apps/pipecat_app/tests/api_fixtures/); none was
recorded from an agent. These tests hold every one of them to what a real
server answers:

- an ``X-Consul-Index`` / ``X-Nomad-Index`` header is never lower than the raft
  index of anything the answer serves: both servers answer with the index of
  the last write to what was read (agent/structs, nomad/state);
- a refused ACL bootstrap names, as its reset index, the index the first
  bootstrap created its token at (Consul's and Nomad's ACLBootstrap);
- every ``Hash`` is base64 of a 32-byte blake2b-256 digest, and the digest of
  the fields Consul's and Nomad's ``SetHash`` write (ACL tokens and policies in
  Consul's agent/structs/acl.go; tokens in nomad/structs/acl.go, namespaces in
  nomad/structs/structs.go);
- the expert health entries and the Nomad job list are generated from the jobs
  the roles render (helpers.job_fixtures) and equal that; their service name,
  tags, meta, check, group and node are the rendered job's, and the names the
  pipecat_app role configures (expert and vision services, the prompt key)
  are the ones the fixtures serve.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import job_fixtures
from helpers.fixture_api import FIXTURES_ROOT
from helpers.jobs import REPO, evaluate, role_vars

APP_FIXTURES = job_fixtures.APP_FIXTURES
INDEX_HEADERS = ("X-Consul-Index", "X-Nomad-Index")
# Raft indexes in bodies: of objects (Create/Modify), of the job spec, of the
# evaluation a write made, and a write's own index (Nomad's "Index").
RAFT_INDEX_KEYS = ("CreateIndex", "ModifyIndex", "JobModifyIndex", "EvalCreateIndex", "Index")
HASH_LENGTH = 32  # blake2b-256


@dataclass(frozen=True)
class Answer:
    """One response of one fixture file."""

    origin: str
    product: str
    status: int
    headers: dict[str, str]
    body: Any


def answers() -> Iterator[Answer]:
    """Every response of every Consul and Nomad fixture, in file order."""
    for path in sorted(FIXTURES_ROOT.glob("*/*.yaml")):
        product = "consul" if path.parent.name == "consul" else "nomad"
        raw = yaml.safe_load(path.read_text())
        for n, response in enumerate(raw["responses"]):
            yield Answer(
                origin=f"{path.relative_to(REPO)}#{n}",
                product=product,
                status=int(response["status"]),
                headers={str(k): str(v) for k, v in (response.get("headers") or {}).items()},
                body=response.get("json", response.get("text")),
            )
    for path in sorted(APP_FIXTURES.glob("*.json")):
        raw = json.loads(path.read_text())
        yield Answer(
            origin=str(path.relative_to(REPO)),
            product=path.name.split("_", 1)[0],
            status=int(raw["status"]),
            headers=raw["headers"],
            body=raw["body"],
        )


def objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``value``, nested ones included."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from objects(item)


def raft_indexes(body: Any) -> list[int]:
    return [o[k] for o in objects(body) for k in RAFT_INDEX_KEYS if isinstance(o.get(k), int)]


def test_fixtures_are_found():
    found = list(answers())
    assert {a.product for a in found} == {"consul", "nomad"}
    assert sum(1 for a in found if set(a.headers) & set(INDEX_HEADERS)) >= 20


def test_no_answer_carries_an_index_below_the_data_it_serves():
    wrong = []
    for answer in answers():
        for header in INDEX_HEADERS:
            if header in answer.headers:
                index = int(answer.headers[header])
                served = max(raft_indexes(answer.body), default=0)
                if served > index:
                    wrong.append(f"{answer.origin}: {header} {index} serves raft index {served}")
    assert not wrong, "\n".join(wrong)


def test_a_refused_bootstrap_names_the_index_the_first_one_was_made_at():
    checked = 0
    for path in sorted(FIXTURES_ROOT.glob("*/acl_bootstrap.yaml")):
        first, *refusals = yaml.safe_load(path.read_text())["responses"]
        for refusal in refusals:
            reset = re.search(r"reset index: (\d+)", refusal["text"])
            assert reset, f"{path}: {refusal['text']!r}"
            assert int(reset.group(1)) == first["json"]["CreateIndex"], path
            checked += 1
    assert checked == 2  # Consul's and Nomad's


def hashes() -> Iterator[tuple[Answer, dict[str, Any]]]:
    for answer in answers():
        for obj in objects(answer.body):
            if "Hash" in obj:
                yield answer, obj


def test_every_hash_is_base64_of_a_32_byte_blake2b_digest():
    wrong = []
    for answer, obj in hashes():
        value = obj["Hash"]
        try:
            digest = base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError) as exc:
            wrong.append(f"{answer.origin}: Hash {value!r} is not base64 ({exc})")
            continue
        if base64.b64encode(digest).decode() != value:
            wrong.append(f"{answer.origin}: Hash {value!r} is not base64 as Go writes it")
        elif len(digest) != HASH_LENGTH:
            wrong.append(f"{answer.origin}: Hash {value!r} holds {len(digest)} bytes, not 32")
    assert not wrong, "\n".join(wrong)


def _blake2b(*parts: str) -> str:
    digest = hashlib.blake2b(digest_size=HASH_LENGTH)
    for part in parts:
        digest.update(part.encode())
    return base64.b64encode(digest.digest()).decode()


def expected_hash(product: str, obj: dict[str, Any]) -> str:
    """The Hash Consul (CE) or Nomad computes for an ACL token, policy or namespace."""
    scope = "global" if obj.get("Global", not obj.get("Local", False)) else "local"
    roles = [r["ID"] for r in obj.get("Roles") or []]
    if product == "consul" and "AccessorID" in obj:  # ACLToken.SetHash
        return _blake2b(obj["Description"], scope, *[p["ID"] for p in obj["Policies"]], *roles)
    if product == "consul" and "Rules" in obj:  # ACLPolicy.SetHash
        return _blake2b(obj["Name"], obj["Description"], obj["Rules"], *obj.get("Datacenters", []))
    if product == "nomad" and "AccessorID" in obj:  # ACLToken.SetHash
        return _blake2b(obj["Name"], obj["Type"], *(obj["Policies"] or []), scope, *roles)
    if product == "nomad" and "Quota" in obj:  # Namespace.SetHash
        parts = [obj["Name"], obj["Description"], obj["Quota"]]
        configs = (
            "Capabilities",
            "NodePoolConfiguration",
            "VaultConfiguration",
            "ConsulConfiguration",
        )
        for key in configs:
            if obj[key] is not None:
                raise AssertionError(f"{key} is set: extend expected_hash for it")
        for key in sorted(obj["Meta"] or {}):
            parts += [key, obj["Meta"][key]]
        return _blake2b(*parts)
    raise AssertionError(f"a {product} object with a Hash this test does not know: {obj}")


def test_every_hash_is_the_digest_consul_or_nomad_computes_from_the_fields():
    wrong = []
    for answer, obj in hashes():
        expected = expected_hash(answer.product, obj)
        if obj["Hash"] != expected:
            wrong.append(f"{answer.origin}: Hash {obj['Hash']}, but SetHash gives {expected}")
    assert len(list(hashes())) >= 10
    assert not wrong, "\n".join(wrong)


# -- the fixtures that come from the rendered jobs ----------------------------------


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, Any]]:
    return job_fixtures.build()


@pytest.fixture(scope="module")
def expert_jobs() -> dict[str, Any]:
    return job_fixtures.expert_jobs()


@pytest.fixture(scope="module")
def app_role() -> dict[str, Any]:
    return role_vars("pipecat_app")


def fixture(name: str) -> dict[str, Any]:
    return json.loads((APP_FIXTURES / name).read_text())


def test_generated_fixtures_match_what_the_rendered_jobs_give(generated):
    stale = [
        name
        for name, response in generated.items()
        if (APP_FIXTURES / name).read_text() != job_fixtures.dumps(response)
    ]
    assert not stale, (
        f"{stale} differ from the rendered jobs; run "
        "PYTHONPATH=tests .venv/bin/python -m helpers.job_fixtures and review the diff"
    )


def health_fixtures() -> list[Path]:
    return sorted(APP_FIXTURES.glob("consul_health_llm-expert_*.json"))


def test_health_entries_register_what_the_expert_job_declares(expert_jobs, app_role):
    prima_service = evaluate("{{ prima_cpp_service_name }}", role_vars("prima_cpp"))
    app_service = evaluate("{{ pipecat_app_expert_service }}", app_role)
    assert app_service == prima_service
    assert len(health_fixtures()) == 3
    for path in health_fixtures():
        for entry in json.loads(path.read_text())["body"]:
            service, (_, check) = entry["Service"], entry["Checks"]
            job = expert_jobs[f"expert-{service['Meta']['expert']}"]
            group_name, group = next((n, g) for n, g in job.groups().items() if g.get("service"))
            declared = group.block("service")
            where = f"{path.name}: {service['ID']}"
            assert service["Service"] == declared["name"] == prima_service, where
            assert service["Tags"] == declared["tags"] == check["ServiceTags"], where
            meta = {k: v for k, v in service["Meta"].items() if k != "external-source"}
            assert meta == declared.block("meta").body, where
            assert service["Meta"]["external-source"] == "nomad", where
            port = f"-group-{group_name}-{declared['name']}-{declared['port']}"
            assert service["ID"].startswith("_nomad-task-"), where
            assert service["ID"].endswith(port), where
            assert check["Name"] == declared.block("check")["name"], where
            assert check["Type"] == declared.block("check")["type"], where
            assert check["ServiceID"] == service["ID"], where
            assert entry["Node"]["Node"] == group.block("constraint")["value"], where


def test_job_list_has_the_ids_namespaces_and_groups_the_roles_render(expert_jobs):
    rendered = {**expert_jobs, "pipecat-app": job_fixtures.pipecat_app_job()}
    stubs = fixture("nomad_jobs.json")["body"]
    assert {s["ID"] for s in stubs} >= {"pipecat-app"}
    for stub in stubs:
        job = rendered[stub["ID"]]
        assert stub["Name"] == job.id
        assert stub["Namespace"] == stub["JobSummary"]["Namespace"] == job["namespace"]
        assert stub["Datacenters"] == job["datacenters"]
        assert list(stub["JobSummary"]["Summary"]) == list(job.groups())


def test_expert_job_parse_answer_is_the_rendered_expert_job(expert_jobs):
    """tests/api_fixtures/nomad_jobs/expert_general_parse.yaml: what Nomad parses from it."""
    path = FIXTURES_ROOT / "nomad_jobs" / "expert_general_parse.yaml"
    answer = yaml.safe_load(path.read_text())["responses"][0]["json"]
    job = expert_jobs["expert-general"]
    assert answer["ID"] == answer["Name"] == job.id
    assert answer["Namespace"] == job["namespace"]
    assert answer["Region"] == job["region"]
    assert answer["Datacenters"] == job["datacenters"]
    assert answer["Meta"] == job.block("meta").body
    groups = job.groups()
    assert [g["Name"] for g in answer["TaskGroups"]] == list(groups)
    for group in answer["TaskGroups"]:
        tasks = groups[group["Name"]].labelled("task")
        assert [t["Name"] for t in group["Tasks"]] == list(tasks)
        for task in group["Tasks"]:
            assert task["Driver"] == tasks[task["Name"]]["driver"]
            assert task["Config"]["command"] == tasks[task["Name"]].block("config")["command"]


def test_app_fixtures_serve_the_names_the_pipecat_app_role_configures(app_role):
    [kv] = fixture("consul_kv_twin_prompts_system_210.json")["body"]
    assert kv["Key"] == evaluate("{{ pipecat_app_prompt_key }}", app_role)
    [vision] = fixture("consul_health_vision_140.json")["body"]
    assert vision["Service"]["Service"] == evaluate("{{ pipecat_app_vision_service }}", app_role)


def test_the_vision_fixture_has_the_tags_and_meta_the_vision_job_registers():
    """Written by hand (the vision job is a system job per camera node, not generated here)."""
    vision_role = role_vars("vision")
    [entry] = fixture("consul_health_vision_140.json")["body"]
    service = entry["Service"]
    assert service["Service"] == evaluate("{{ vision_service_name }}", vision_role)
    assert service["Tags"] == evaluate("{{ vision_service_tags }}", vision_role)
    # The job's service meta block: the node's camera and the scheme it serves.
    job = (REPO / "jobs" / "vision.nomad.hcl.j2").read_text()
    lines = job[job.index("service {") :].split("meta {", 1)[1].splitlines()
    service_meta = lines[: [line.strip() for line in lines].index("}")]
    keys = {line.split("=")[0].strip() for line in service_meta if "=" in line}
    assert set(service["Meta"]) == keys
