"""A rendered two-rank expert job runs as a real prima.cpp ring and answers through rank 0.

Each rank runs what its group in the rendered file runs (llama-server on rank
0, the worker on rank 1), in its own network namespace; the namespaces are
joined by a veth pair, so the ranks reach each other only at the addresses
the job names. Needs a built prima.cpp: ``PRIMA_CPP_DIR`` (with
``llama-server`` and ``llama-cli`` in it or in its ``bin/``).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpers import netns
from helpers.experts import job_vars, make_expert
from helpers.jobs import parse_job, render_job
from helpers.llm_assets import prima_cpp_bins, smollm2_gguf
from helpers.nomad_task import LocalTask, TaskSpec, in_netns

pytestmark = pytest.mark.prima

RANK0_IP, RANK1_IP = "10.77.0.1", "10.77.0.2"


@pytest.fixture(scope="module")
def prima() -> tuple[Path, Path]:
    bins = prima_cpp_bins()
    if bins is None:
        pytest.skip("PRIMA_CPP_DIR does not name a built prima.cpp (llama-server, llama-cli)")
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    return bins


def ring_job(server: Path, worker: Path, model: Path) -> str:
    expert = make_expert(
        world=2,
        layer_window=[15, 15],  # SmolLM2-135M has 30 layers
        context=1024,
        threads=1,
        model_path=f"/srv/nomad/models/{model.name}",
    )
    expert["ranks"][0].update(node="ring0", address=RANK0_IP)
    expert["ranks"][1].update(node="ring1", address=RANK1_IP)
    return render_job(
        "expert.nomad.hcl.j2",
        job_vars(expert, prima_cpp_server_bin=str(server), prima_cpp_worker_bin=str(worker)),
    )


def test_two_rank_ring_in_namespaces_answers_through_rank0(prima):
    server, worker = prima
    model = smollm2_gguf()
    job = parse_job(ring_job(server, worker, model))
    rank0 = TaskSpec.from_job(job, "rank-0", "server")
    rank1 = TaskSpec.from_job(job, "rank-1", "worker")
    volumes = {"models": model.parent}
    with netns.Link.pair(RANK0_IP, RANK1_IP) as (ns0, ns1):
        head = LocalTask(rank0, host_volumes=volumes, netns=ns0.name, ip=ns0.address)
        tail = LocalTask(rank1, host_volumes=volumes, netns=ns1.name, ip=ns1.address)
        with tail, head:
            assert head.argv[head.argv.index("--next") + 1] == RANK1_IP
            assert tail.argv[tail.argv.index("--next") + 1] == RANK0_IP
            try:
                head.wait_healthy(timeout=300)
            except (RuntimeError, TimeoutError) as exc:
                raise AssertionError(f"{exc}\n--- rank 1 log:\n{tail.log()[-3000:]}") from exc
            assert tail.running(), tail.log()[-3000:]

            def ask() -> httpx.Response:
                return httpx.post(
                    f"{head.url('http')}/v1/chat/completions",
                    json={
                        "messages": [{"role": "user", "content": "Name one colour."}],
                        "max_tokens": 16,
                        "temperature": 0,
                    },
                    timeout=120,
                )

            reply = in_netns(ns0.name, ask)
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"].strip()
            # The worker is still in the ring after answering its part.
            assert tail.running(), tail.log()[-3000:]
