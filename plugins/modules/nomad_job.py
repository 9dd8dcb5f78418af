#!/usr/bin/python
# Copyright: twin.cluster developers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module twin.cluster.nomad_job: submit or remove one Nomad job."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nomad_job
short_description: Register or remove a Nomad job from HCL, only when Nomad plans a change
description:
  - Parses an HCL2 job specification through Nomad's C(/v1/jobs/parse) endpoint,
    asks Nomad for a plan (C(/v1/job/:id/plan) with a diff) and registers the job
    only when the plan shows a change, so running a playbook twice reports no change
    the second time.
  - With O(state=absent) stops (and with O(purge=true) purges) the job.
  - Registration is check-and-set on the job modify index the plan returned, as
    C(nomad job run -check-index) does.
  - The module talks to Nomad over HTTP from wherever it runs. O(src) is read on
    that host; from elsewhere pass the file's content as O(job_hcl).
  - The collection keeps this module rather than M(community.general.nomad_job);
    the notes say what that module lacks for the roles.
version_added: "0.1.0"
author:
  - twin.cluster developers
options:
  nomad_addr:
    description:
      - Address of a Nomad agent's HTTP API.
      - Falls back to the E(NOMAD_ADDR) environment variable.
    type: str
    default: http://127.0.0.1:4646
  token:
    description:
      - ACL token sent as C(X-Nomad-Token). Falls back to E(NOMAD_TOKEN).
      - Needs C(namespace:parse-job), C(namespace:submit-job) and C(namespace:read-job)
        in the job's namespace.
    type: str
  namespace:
    description:
      - Namespace for a job whose specification does not set one.
      - When the specification sets a namespace and this is set to a different one,
        the module fails rather than guessing.
      - Falls back to E(NOMAD_NAMESPACE); Nomad's C(default) namespace when unset.
    type: str
  region:
    description: Region to send requests to; Nomad's default when unset.
    type: str
  src:
    description:
      - Path of an HCL2 job file on the host the module runs on.
      - Mutually exclusive with O(job_hcl).
    type: path
  job_hcl:
    description: HCL2 job specification as a string. Mutually exclusive with O(src).
    type: str
  name:
    description:
      - Job ID to remove with O(state=absent) when neither O(src) nor O(job_hcl) is given.
    type: str
  state:
    description:
      - V(present) registers the job when the plan shows a change.
      - V(absent) stops the job if it is running (deregisters it).
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - With O(state=absent), also purge the job from Nomad's state so its ID is free
        and it no longer shows in C(nomad job status).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for each HTTP request.
    type: int
    default: 30
  validate_certs:
    description: Verify the TLS certificate of an https O(nomad_addr).
    type: bool
    default: true
  ca_path:
    description: CA bundle for an https O(nomad_addr).
    type: path
  client_cert:
    description: Client certificate for mutual TLS.
    type: path
  client_key:
    description: Private key of O(client_cert).
    type: path
attributes:
  check_mode:
    support: full
    details: Parses and plans; never registers or deregisters.
  diff_mode:
    support: none
notes:
  - Uses only the Nomad HTTP API; no Nomad binary or Python client library is needed.
  - Why not M(community.general.nomad_job) (community.general 11.4.2, the release
    ansible 12.3.0 installs). Like this module it parses HCL through Nomad, plans
    with a diff, registers only when the plan shows a change and supports check
    mode, but the roles need what follows, which it lacks.
  - It needs the C(python-nomad) library (and C(requests)) on the host it runs on.
    The roles run this module on the first Nomad server by default
    (C(prima_cpp_nomad_host), C(pipecat_app_nomad_host)), so they would have to
    install a Python library there. This module uses only Ansible's own C(open_url).
  - It registers without check-and-set (no C(EnforceIndex) and C(JobModifyIndex)),
    so a change made in Nomad between its plan and its registration is overwritten
    without notice. This module registers on the plan's job modify index, as
    C(nomad job run -check-index) does.
  - It does not send the job's HCL source (C(Submission)), so C(nomad job inspect)
    and the web UI show no job definition as written. This module sends it (C(hcl2)).
  - It has no CA bundle option (its C(validate_certs) goes to C(requests) as a plain
    true/false), so a private CA such as the cluster's own can only be trusted
    system-wide or through E(REQUESTS_CA_BUNDLE); this module has O(ca_path). It takes
    C(host), C(port) and C(use_ssl) (on by default) instead of an address, without the
    E(NOMAD_ADDR) and E(NOMAD_TOKEN) fallbacks, and has no region option.
  - With C(state=absent) it fails on a job Nomad does not know (the job read's 404
    is an error), decides by the job's C(Status) instead of its C(Stop) flag (a stopped
    job whose allocations are still stopping is deregistered again on the next run,
    a finished batch job stays registered) and cannot purge, which C(prima_cpp) does
    for the jobs of removed experts. This module reports no change for a missing or
    stopped job and has O(purge).
  - It does not check the job's own namespace against its C(namespace) option, puts
    the job ID into the plan URL unescaped, and fails with the Python client's exception
    text, without a hint of what to fix.
  - It has two things the roles do not use, JSON job specifications
    (C(content_format=json)) and C(force_start) of a stopped job by name.
"""

EXAMPLES = r"""
- name: Submit the coding expert job when it changed.
  twin.cluster.nomad_job:
    nomad_addr: http://10.0.0.10:4646
    token: "{{ nomad_token }}"
    src: "{{ playbook_dir }}/rendered-jobs/expert-coder.nomad.hcl"
  delegate_to: localhost
  run_once: true

- name: Run a job written inline in the llm namespace.
  twin.cluster.nomad_job:
    namespace: llm
    job_hcl: |
      job "hello" {
        datacenters = ["dc1"]
        group "hello" {
          task "hello" {
            driver = "raw_exec"
            config {
              command = "/bin/sleep"
              args    = ["3600"]
            }
          }
        }
      }
  delegate_to: localhost

- name: Stop and purge a job that is no longer wanted.
  twin.cluster.nomad_job:
    name: expert-old
    namespace: llm
    state: absent
    purge: true
  delegate_to: localhost
"""

RETURN = r"""
job_id:
  description: ID of the job.
  returned: always
  type: str
  sample: expert-coder
namespace:
  description: Namespace the job was planned, registered or removed in.
  returned: always
  type: str
  sample: llm
diff_type:
  description:
    - Type of the plan's job diff (C(None), C(Added), C(Edited), C(Deleted)).
    - C(None) means the job in Nomad already matches the specification.
  returned: when state is present
  type: str
  sample: Edited
diff:
  description: The plan's structured job diff, as Nomad returned it.
  returned: when state is present
  type: dict
annotations:
  description: The plan's scheduler annotations (desired task group updates).
  returned: when state is present
  type: dict
failed_tg_allocs:
  description:
    - Task groups the scheduler could not place in the plan, with the reasons.
    - The job is still registered; Nomad keeps the evaluation blocked until it can place.
  returned: when state is present
  type: dict
warnings:
  description: Warnings Nomad returned for the plan or the registration.
  returned: when state is present
  type: str
eval_id:
  description: ID of the evaluation created by registering or deregistering.
  returned: when changed and not in check mode
  type: str
job_modify_index:
  description: Job modify index after registration (from the plan in check mode or without change).
  returned: when state is present
  type: int
"""

# Ansible modules document themselves before their imports.
import os  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, env_fallback  # noqa: E402
from ansible_collections.twin.cluster.plugins.module_utils.nomad_api import (  # noqa: E402
    NomadAPI,
    NomadAPIError,
)


def read_job_hcl(module: AnsibleModule) -> str | None:
    """Return the HCL text from job_hcl or src, or None when neither is given."""
    if module.params["job_hcl"] is not None:
        return module.params["job_hcl"]
    src = module.params["src"]
    if src is None:
        return None
    if not os.path.isfile(src):
        module.fail_json(
            msg=f"src {src} is not a file on this host. Give the path of an HCL job file."
        )
    with open(src, encoding="utf-8") as handle:
        return handle.read()


def parse_job(module: AnsibleModule, api: NomadAPI, hcl: str) -> dict[str, Any]:
    """Turn HCL into Nomad's JSON job through /v1/jobs/parse."""
    where = module.params["src"] or "job_hcl"
    try:
        job = api.request(
            "POST",
            "/v1/jobs/parse",
            params={"namespace": module.params["namespace"]},
            body={"JobHCL": hcl, "Canonicalize": False},
        )
    except NomadAPIError as err:
        if err.status in (400, 500) and err.body:
            module.fail_json(
                msg=f"Nomad could not parse the job in {where}: {err.body}. "
                "Fix the HCL and run again.",
                status=err.status,
            )
        fail_api(module, err)
    if not isinstance(job, dict) or not job.get("ID"):
        module.fail_json(
            msg=f"Nomad parsed {where} but returned no job ID; is it a job specification?"
        )
    return job


def effective_namespace(module: AnsibleModule, job: dict[str, Any] | None) -> str:
    """The job's own namespace, else the namespace option, else 'default'."""
    wanted = module.params["namespace"]
    own = (job or {}).get("Namespace") or None
    if own and wanted and own != wanted:
        module.fail_json(
            msg=(
                f"Job {job['ID']} sets namespace {own!r} but namespace={wanted!r} was given. "
                "Remove one of the two or make them equal."
            )
        )
    return own or wanted or "default"


def fail_api(module: AnsibleModule, err: NomadAPIError, **extra: Any) -> None:
    """Fail with a message that says what to fix for the common statuses."""
    hint = ""
    if err.status == 403:
        hint = (
            " The token was refused: check token and that its policy allows "
            "parse-job, submit-job and read-job in this namespace."
        )
    elif err.status == 404:
        hint = " Check nomad_addr and that the namespace exists."
    module.fail_json(msg=str(err) + hint, status=err.status, **extra)


def ensure_present(module: AnsibleModule, api: NomadAPI, hcl: str) -> None:
    job = parse_job(module, api, hcl)
    namespace = effective_namespace(module, job)
    job["Namespace"] = namespace
    job_id = job["ID"]
    result: dict[str, Any] = {"changed": False, "job_id": job_id, "namespace": namespace}
    try:
        plan = api.request(
            "POST",
            api.job_path(job_id, "/plan"),
            params={"namespace": namespace},
            body={"Job": job, "Diff": True, "PolicyOverride": False},
        )
    except NomadAPIError as err:
        fail_api(module, err, **result)
    plan = plan or {}
    diff = plan.get("Diff") or {}
    diff_type = diff.get("Type") or "None"
    result.update(
        diff_type=diff_type,
        diff=diff,
        annotations=plan.get("Annotations") or {},
        failed_tg_allocs=plan.get("FailedTGAllocs") or {},
        warnings=plan.get("Warnings") or "",
        job_modify_index=plan.get("JobModifyIndex", 0),
    )
    if diff_type == "None":
        module.exit_json(**result)
    result["changed"] = True
    if module.check_mode:
        module.exit_json(**result)
    submission = {"Source": hcl, "Format": "hcl2"}
    try:
        registered = api.request(
            "POST",
            "/v1/jobs",
            params={"namespace": namespace},
            body={
                "Job": job,
                "EnforceIndex": True,
                "JobModifyIndex": plan.get("JobModifyIndex", 0),
                "Submission": submission,
            },
        )
    except NomadAPIError as err:
        if err.status == 400 and "modify index" in err.body.lower():
            module.fail_json(
                msg=f"Job {job_id} changed in Nomad between plan and register ({err.body}). "
                "Run again.",
                **result,
            )
        fail_api(module, err, **result)
    registered = registered or {}
    result.update(
        eval_id=registered.get("EvalID", ""),
        job_modify_index=registered.get("JobModifyIndex", result["job_modify_index"]),
    )
    if registered.get("Warnings"):
        result["warnings"] = registered["Warnings"]
    module.exit_json(**result)


def ensure_absent(module: AnsibleModule, api: NomadAPI, hcl: str | None) -> None:
    if hcl is not None:
        job = parse_job(module, api, hcl)
        job_id = job["ID"]
        namespace = effective_namespace(module, job)
    else:
        job_id = module.params["name"]
        namespace = effective_namespace(module, None)
    purge = module.params["purge"]
    result: dict[str, Any] = {"changed": False, "job_id": job_id, "namespace": namespace}
    try:
        current = api.request("GET", api.job_path(job_id), params={"namespace": namespace})
    except NomadAPIError as err:
        if err.status == 404:
            module.exit_json(**result)
        fail_api(module, err, **result)
    if current and current.get("Stop") and not purge:
        module.exit_json(**result)
    result["changed"] = True
    if module.check_mode:
        module.exit_json(**result)
    try:
        removed = api.request(
            "DELETE",
            api.job_path(job_id),
            params={"namespace": namespace, "purge": "true" if purge else None},
        )
    except NomadAPIError as err:
        fail_api(module, err, **result)
    result["eval_id"] = (removed or {}).get("EvalID", "")
    module.exit_json(**result)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "nomad_addr": {
                "type": "str",
                "default": "http://127.0.0.1:4646",
                "fallback": (env_fallback, ["NOMAD_ADDR"]),
            },
            "token": {"type": "str", "no_log": True, "fallback": (env_fallback, ["NOMAD_TOKEN"])},
            "namespace": {"type": "str", "fallback": (env_fallback, ["NOMAD_NAMESPACE"])},
            "region": {"type": "str"},
            "src": {"type": "path"},
            "job_hcl": {"type": "str"},
            "name": {"type": "str"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "purge": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 30},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "client_cert": {"type": "path"},
            "client_key": {"type": "path"},
        },
        mutually_exclusive=[("src", "job_hcl"), ("src", "name"), ("job_hcl", "name")],
        required_if=[
            ("state", "present", ("src", "job_hcl"), True),
            ("state", "absent", ("src", "job_hcl", "name"), True),
        ],
        supports_check_mode=True,
    )
    api = NomadAPI(
        module.params["nomad_addr"],
        token=module.params["token"],
        region=module.params["region"],
        timeout=module.params["timeout"],
        validate_certs=module.params["validate_certs"],
        ca_path=module.params["ca_path"],
        client_cert=module.params["client_cert"],
        client_key=module.params["client_key"],
    )
    hcl = read_job_hcl(module)
    if module.params["state"] == "present":
        ensure_present(module, api, hcl)
    else:
        ensure_absent(module, api, hcl)


if __name__ == "__main__":
    main()
