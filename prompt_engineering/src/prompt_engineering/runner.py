"""Run one case through the app's own TwinService, in a text session, against a real endpoint.

Each case gets a fresh :class:`~pipecat_app.session.TextSession` (the typed
pipeline the app serves) whose TwinService has the candidate prompt as
``twin.prompt.text``, one expert (the assistant's OpenAI-compatible
endpoint), a memory store of its own seeded with the case's facts, and, when
the case has a ``scene``, a vision service on 127.0.0.1 that describes it.
An observer records every tool call and its result from pipecat's
function-call frames, as the app's assistant aggregator sees them.

A dead endpoint is :class:`EndpointDown`, raised before the first case
(:func:`check_endpoint`) or when a turn got TwinService's apology and the
endpoint no longer answers: never a failed case.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from pipecat.frames.frames import FunctionCallInProgressFrame, FunctionCallResultFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat_app.config import DEMO_CONFIG, AppConfig, load_config
from pipecat_app.session import TextSession
from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.memory import MemoryStore
from pipecat_app.twin.service import NO_EXPERT_REPLY

from prompt_engineering.checks import ToolCall, Transcript
from prompt_engineering.suite import Case

USER_ID = "evaluator"


class EndpointDown(RuntimeError):
    """The assistant's endpoint does not answer: the run stops; nothing is scored."""


class NoAnswer(RuntimeError):
    """The endpoint is up but gave no answer (TwinService apologised): the case fails."""


@dataclass(frozen=True)
class Endpoint:
    """The assistant's OpenAI-compatible endpoint and how each case uses it.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080/v1`` (a local llama-server, or an expert).
        model: The model name sent in requests.
        max_tokens: Longest answer (``twin.routing.max_answer_tokens``).
        timeout_s: Longest wait for the endpoint per request.
        tool_calls: The endpoint takes native tool calls (else the JSON-schema fallback).
    """

    base_url: str
    model: str = "smollm2-135m"
    max_tokens: int = 96
    timeout_s: float = 60.0
    tool_calls: bool = False


def check_endpoint(base_url: str, timeout_s: float = 10.0) -> None:
    """Raise :class:`EndpointDown` unless ``GET <base_url>/models`` answers 200."""
    url = base_url.rstrip("/") + "/models"
    try:
        response = httpx.get(url, timeout=timeout_s, headers={"Authorization": "Bearer local"})
    except httpx.HTTPError as exc:
        raise EndpointDown(
            f"the model endpoint {base_url} does not answer ({type(exc).__name__}: {exc}); "
            "start llama-server there or pass another --assistant-url/--mutator-url"
        ) from exc
    if response.status_code != 200:
        raise EndpointDown(
            f"the model endpoint {base_url} answered {url} with HTTP {response.status_code}"
        )


@cache
def _app_config() -> AppConfig:
    """The app's embedded config: only its ``twin`` section is replaced per case."""
    return load_config(DEMO_CONFIG)


def twin_config(
    prompt: str, case: Case, endpoint: Endpoint, workdir: Path, vision: str
) -> TwinConfig:
    """The ``[twin]`` section one case runs with."""
    return TwinConfig.model_validate(
        {
            "user_id": USER_ID,
            "prompt": {"file": "", "text": prompt, "consul_key": ""},
            "memory": {"path": str(workdir / "memory.sqlite3")},
            "experts": [
                {
                    "name": "assistant",
                    "domain": "general",
                    "description": "The assistant under evaluation",
                    "base_url": endpoint.base_url,
                    "model": endpoint.model,
                    "tool_calls": endpoint.tool_calls,
                }
            ],
            "routing": {
                "expert_timeout_s": endpoint.timeout_s,
                "max_answer_tokens": endpoint.max_tokens,
            },
            "tools": {"enabled": case.tools, "vision_url": vision},
        }
    )


class ToolCallRecorder(BaseObserver):
    """Collects each tool call with its result from the function-call frames."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, ToolCall] = {}

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, FunctionCallInProgressFrame):
            args = frame.arguments if isinstance(frame.arguments, dict) else {}
            self.calls.setdefault(frame.tool_call_id, ToolCall(frame.function_name, dict(args)))
        elif isinstance(frame, FunctionCallResultFrame):
            call = self.calls.setdefault(
                frame.tool_call_id, ToolCall(frame.function_name, dict(frame.arguments or {}))
            )
            call.result = frame.result


@contextmanager
def scene_server(description: str | None) -> Iterator[str]:
    """A vision service on 127.0.0.1 whose camera sees ``description`` ("" when None)."""
    if description is None:
        yield ""
        return
    body = json.dumps({"description": description}).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def run_case(prompt: str, case: Case, endpoint: Endpoint) -> Transcript:
    """The case's conversation through a TextSession with ``prompt`` as the system prompt."""
    with (
        tempfile.TemporaryDirectory(prefix=f"case-{case.id}-") as tmp,
        scene_server(case.scene) as vision,
    ):
        workdir = Path(tmp)
        twin = twin_config(prompt, case, endpoint, workdir, vision)
        if case.memory:
            store = MemoryStore(twin.memory.path)
            store.open()
            for fact in case.memory:
                store.remember(USER_ID, fact, kind="fact")
            store.close()
        recorder = ToolCallRecorder()
        app = _app_config().model_copy(update={"twin": twin})
        session = TextSession(app, observers=[recorder])
        await session.start()
        answers: list[str] = []
        try:
            for turn in case.turns:
                answer = await session.answer(turn)
                if NO_EXPERT_REPLY in answer:
                    await asyncio.to_thread(check_endpoint, endpoint.base_url)
                    raise NoAnswer(
                        f"no answer to {turn!r}: the endpoint refused or garbled every "
                        "attempt (TwinService's apology); a prompt too long for the "
                        "model's context does this"
                    )
                answers.append(answer)
        finally:
            await session.close()
        return Transcript(answers, list(recorder.calls.values()))
