"""Running TwinService turns in tests: a configured service, one user turn, a replaying
expert, and a proxy that keeps what a real expert was asked."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from pipecat.frames.frames import (
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.tests.utils import run_test

from pipecat_app.twin.config import DiscoveryConfig, ToolsConfig, TwinConfig
from pipecat_app.twin.llm import ExpertClient
from pipecat_app.twin.memory import MemoryStore
from pipecat_app.twin.service import TwinService
from pipecat_app.twin.toolbox import ToolBox
from pipecat_app.twin.tools import builtin_tools


@contextmanager
def loopback(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """``handler`` served on 127.0.0.1 from a thread until the block ends; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def send(
    handler: BaseHTTPRequestHandler, content_type: str, body: bytes, status: int = 200
) -> None:
    """Answer the handler's request with ``body``."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def expert(name: str, base_url: str, *, tool_calls: bool = False) -> dict[str, Any]:
    """A ``[[twin.experts]]`` entry for a general expert at ``base_url``."""
    return {
        "name": name,
        "domain": "general",
        "description": "Everyday conversation and general knowledge",
        "base_url": base_url,
        "model": "smollm2-135m",
        "tool_calls": tool_calls,
    }


def make_twin(
    tmp_path: Path,
    experts: list[dict[str, Any]],
    timeout_s: float = 30,
    *,
    toolbox: ToolBox | None = None,
    client: ExpertClient | None = None,
) -> TwinService:
    """TwinService for user ``ana`` with a memory under ``tmp_path`` and static experts.

    ``toolbox`` and ``client`` replace the built-in tools and the default client.
    """
    config = TwinConfig.model_validate(
        {
            "user_id": "ana",
            "memory": {"path": str(tmp_path / "memory.sqlite3")},
            "experts": experts,
            "routing": {"expert_timeout_s": timeout_s},
        }
    )
    return TwinService(config, toolbox=toolbox, client=client)


async def ask(twin: TwinService, text: str, *, extra: list[FrameProcessor] = ()) -> str:
    """One user turn through the pipeline; returns the answer (and keeps it in the context)."""
    twin.context.add_message({"role": "user", "content": text})
    stage = Pipeline([*twin.processors(), *extra]) if extra else twin.processors()[0]
    down, _ = await run_test(stage, frames_to_send=[LLMContextFrame(context=twin.context)])
    kinds = [type(f) for f in down]
    assert kinds[0] is LLMFullResponseStartFrame
    assert kinds[-1] is LLMFullResponseEndFrame
    answer = "".join(f.text for f in down if isinstance(f, LLMTextFrame))
    twin.context.add_message({"role": "assistant", "content": answer})
    return answer


@dataclass(frozen=True)
class Reply:
    """One canned reply of :func:`replay_server`: its body and how it is sent.

    Args:
        body: The bytes sent (an SSE stream, or anything else).
        content_type: Its ``Content-Type``.
        drop: Send the body as the first part of a chunked response, then
            drop the connection (an expert that dies mid-answer).
    """

    body: bytes
    content_type: str = "text/event-stream"
    drop: bool = False


@dataclass
class Replay:
    """Answers each ``POST /v1/chat/completions`` with the next reply, and keeps the request."""

    streams: list[bytes | Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@contextmanager
def replay_server(streams: list[bytes | Reply]) -> Iterator[Replay]:
    """An expert on 127.0.0.1 replaying ``streams`` in order (404 once they run out).

    A ``bytes`` item is an SSE stream sent whole; a :class:`Reply` says how.
    """
    state = Replay(list(streams))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive as llama-server, and chunked replies

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            item = state.streams.pop(0) if state.streams else None
            reply = Reply(item) if isinstance(item, bytes) else item
            if reply is None or self.path != "/v1/chat/completions":
                send(self, "text/plain", b"", status=404)
                return
            if not reply.drop:
                send(self, reply.content_type, reply.body)
                return
            self.send_response(200)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(reply.body), reply.body))
            self.wfile.flush()
            # No last chunk: the connection drops mid-reply.
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    with loopback(Handler) as port:
        state.url = f"http://127.0.0.1:{port}/v1"
        yield state


def sse(*texts: str, finish: bool = True) -> bytes:
    """An OpenAI chat-completion event stream saying ``texts``, one chunk each.

    ``finish``: end it as llama-server does (a ``finish_reason`` chunk and
    ``[DONE]``); False leaves it open, for a reply that drops after it.
    """
    chunks = [{"choices": [{"index": 0, "delta": {"content": t}}]} for t in texts]
    if chunks:
        chunks[0]["choices"][0]["delta"]["role"] = "assistant"
    if finish:
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
    return events + (b"data: [DONE]\n\n" if finish else b"")


def turn_context(request: dict[str, Any]) -> str:
    """A request's turn context (recalled memory, the camera's observation).

    It is the one system message after the first (the system prompt), placed
    after the history, just before the user's message.
    """
    later = [m for m in request["messages"][1:] if m.get("role") == "system"]
    assert len(later) == 1, request["messages"]
    return str(later[0]["content"])


def builtin_toolbox(
    memory: MemoryStore,
    *,
    vision_url: Callable[[], str | None] = lambda: None,
    consul_up: Callable[[], bool] = lambda: False,
) -> ToolBox:
    """The built-in tools for user ``ana`` over ``memory``, as a turn offers them."""
    return ToolBox(
        builtin_tools(
            memory,
            lambda: "ana",
            ToolsConfig(),
            DiscoveryConfig(),
            vision_url=vision_url,
            consul_up=consul_up,
        )
    )


@dataclass
class RecordingProxy:
    """Forwards each request to a real llama-server; keeps the bodies and statuses."""

    upstream: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    port: int = 0


@contextmanager
def recording_proxy(upstream: str) -> Iterator[RecordingProxy]:
    """A proxy on 127.0.0.1 to a real expert at ``upstream`` (its root URL)."""
    state = RecordingProxy(upstream)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(json.loads(raw))
            answer = httpx.post(
                state.upstream + self.path,
                content=raw,
                headers={"Content-Type": "application/json"},
                timeout=120,
            )
            state.statuses.append(answer.status_code)
            content_type = answer.headers.get("Content-Type", "text/plain")
            send(self, content_type, answer.content, status=answer.status_code)

    with loopback(Handler) as port:
        state.port = port
        yield state
